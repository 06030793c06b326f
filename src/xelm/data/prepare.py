"""``prepare`` for corpora of any size: read -> split -> tokenise -> pack, streamed.

Three passes over the corpus, each resumable, none holding a language in memory:

1. **scan**: every language is read once (a Hugging Face dataset or an unlabelled pile is
   spooled to a file first, :mod:`xelm.data.sources`): its documents are counted (and, for
   ``split: by_key``, their keys collected), then every document's split is decided at
   once (:mod:`xelm.data.split`) and kept as one byte per document
   (``data/.prepare/<lang>.labels.npy``).
2. **tokenizer**: the base model's, or a byte-level BPE trained on each language's first
   ``tokenizer.sample_bytes_per_language`` bytes of training documents, streamed.
3. **pack** (:mod:`xelm.data.pack`): every language is read again; chunks of documents
   are tokenised on ``workers`` processes (:mod:`xelm.data.encode`) and appended, in
   document order, to each split's text and shard files (``.part``). Every
   ``checkpoint_bytes`` of text a checkpoint (``data/.prepare/<lang>.pack.json``) records
   their sizes once they are on disk; a killed run cuts the parts back to it and goes on
   from the next document, so the finished files are those of an uninterrupted run.

Outputs are the in-memory pipeline's, byte for byte: ``data/text/<lang>.<split>.txt``,
``data/tokens/<lang>.<split>.bin`` + ``.docs.npy``, ``data/held_out_keys.json``
(by_key), the tokenizer, and ``data/prepare.json`` (written last: what it lists is whole).

Memory is bounded by design, not by the corpus: one byte per document for its split
(plus 8 per document and the distinct keys for ``by_key``), the BPE trainer's working set
(it grows with its sample, ``sample_bytes_per_language`` per language; handed back to
the system once trained), and at most ``2 * workers + 2`` chunks of ``chunk_bytes`` in
flight (a worker holds one chunk and the tokenizer). Workers are started with ``spawn``:
a script that calls this with more than one worker must guard its entry point
(``if __name__ == "__main__":``), as every ``multiprocessing`` program must.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xelm.data.encode import TokenizerSpec
from xelm.data.errors import CorpusError
from xelm.data.pack import pack_all
from xelm.data.packing import PART, token_dtype
from xelm.data.sources import Source, open_sources
from xelm.data.split import LABEL, KeyedSplit, split_labels, text_rank
from xelm.io import read_json, write_json

if TYPE_CHECKING:
    from xelm.config import CorpusConfig

log = logging.getLogger(__name__)

SCRATCH = ".prepare"  # data/.prepare: spools, labels, checkpoints; removed when done
MORE_SCRATCH = ".prepare-more"  # the same for languages added later (prepare_languages)
FORMAT = 1  # of the scratch files; a different one is not resumed
CHUNK_BYTES = 1 << 18  # characters of documents per chunk sent to a worker
CHECKPOINT_BYTES = 64 << 20  # text written between checkpoints
AUTO_BYTES_PER_WORKER = 8 << 20  # workers=None: one worker per this much text (up to the cores)


@dataclass(frozen=True)
class TokenizerPlan:
    """The tokenizer to use: ``base``'s, or a BPE trained here."""

    base: str | None = None
    trust_remote_code: bool = False
    vocab_size: int = 4096
    sample_bytes_per_language: int = 2_000_000


def prepare_corpus(corpus: CorpusConfig, data_dir: str | Path, *, seed: int,
                   tokenizer: TokenizerPlan, synthetic_dir: Path | None = None,
                   workers: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                   checkpoint_bytes: int = CHECKPOINT_BYTES) -> dict:
    """Prepare ``corpus`` into ``data_dir``; returns (and writes) ``prepare.json``.

    ``seed`` is the split's; ``workers`` the tokenising processes (None: one per
    ``AUTO_BYTES_PER_WORKER`` of text, at most the usable cores). Resumes whatever a
    killed call with the same settings left in ``data_dir/.prepare``.
    """
    data_dir = Path(data_dir)
    key = {"format": FORMAT, "corpus": corpus.model_dump(mode="json", exclude={"num_proc"}),
           "seed": seed, "tokenizer": asdict(tokenizer),
           "synthetic_dir": str(synthetic_dir) if synthetic_dir else None}
    scratch = _scratch(data_dir, key)
    clock = [_clock()]
    keyed = corpus.split == "by_key"
    sources = open_sources(corpus, synthetic_dir, scratch / "spool", keyed)
    scan = _scan(sources, corpus, seed, scratch, data_dir, data_dir / "held_out_keys.json")
    clock.append(_clock())
    spec, vocab_size = _tokenizer(sources, tokenizer, data_dir, scratch)
    clock.append(_clock())
    total = sum(s["bytes"] for s in scan.values())
    workers = workers or auto_workers(total)
    stats = pack_all(sources, scan, spec, workers, data_dir, scratch, chunk_bytes,
                     checkpoint_bytes)
    clock.append(_clock())
    wall, cpu = np.diff(clock, axis=0).T
    log.info("prepare took %.1f s to read and split, %.1f s for the tokenizer, %.1f s to "
             "tokenise and pack %d bytes on %d processes (CPU time, workers included: "
             "%.1f s, %.1f s, %.1f s)", *wall, total, workers, *cpu)
    info = {"languages": list(sources), "vocab_size": vocab_size, "dtype": spec.dtype,
            "stats": stats}
    shutil.rmtree(scratch / "spool", ignore_errors=True)  # the big parts first: if killed
    write_json(data_dir / "prepare.json", info)          # after this, little is left over
    shutil.rmtree(scratch)
    log.info("prepared %d languages: %s", len(sources), ", ".join(sources))
    return info


def prepare_languages(corpus: CorpusConfig, data_dir: str | Path, *, seed: int,
                      tokenizer_dir: str | Path, trained_here: bool,
                      held_out: dict | None = None, workers: int | None = None) -> dict[str, dict]:
    """More languages into a prepared ``data_dir``, with its tokenizer (``xelm adapt``):
    their text and token shards as ``prepare`` writes them; returns their stats.

    Each language is split alone, except with ``split: by_key``: a language with keys then
    holds out exactly the keys ``held_out`` (the run's ``held_out_keys.json``) lists, so
    none of its valid or test documents translates one the run trained on (keys the run
    never saw go to train), and a language without keys is split by its documents' text,
    as ``prepare`` splits one. ``held_out_keys.json`` is left alone. Streamed and
    resumable like :func:`prepare_corpus`, in its own scratch folder (``data/.prepare-more``).
    """
    from xelm.data.tokenizer import load_tokenizer

    keyed = corpus.split == "by_key"
    if keyed and held_out is None:
        raise CorpusError("corpus.split by_key: languages added to a run must hold out the "
                          "run's held-out keys; give its held_out_keys.json (held_out=)")
    data_dir = Path(data_dir)
    key = {"format": FORMAT, "corpus": corpus.model_dump(mode="json", exclude={"num_proc"}),
           "seed": seed, "tokenizer": str(tokenizer_dir)}
    scratch = _scratch(data_dir, key, MORE_SCRATCH)
    sources = open_sources(corpus, None, scratch / "spool", keyed)
    scan = _scan(sources, corpus, seed, scratch, data_dir, None, held_out)
    tok = load_tokenizer(tokenizer_dir)
    spec = TokenizerSpec(str(tokenizer_dir), token_dtype(len(tok)).name, int(tok.eos_token_id),
                         trained_here=trained_here)
    total = sum(s["bytes"] for s in scan.values())
    stats = pack_all(sources, scan, spec, workers or auto_workers(total), data_dir, scratch,
                      CHUNK_BYTES, CHECKPOINT_BYTES)
    discard(data_dir, MORE_SCRATCH)
    return stats


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime


def auto_workers(total_bytes: int) -> int:
    """One tokenising process per ``AUTO_BYTES_PER_WORKER`` of text, at most the cores
    this process may use (a small corpus is not worth starting processes for)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, total_bytes // AUTO_BYTES_PER_WORKER))


def _scratch(data_dir: Path, key: dict, name: str = SCRATCH) -> Path:
    """``data/.prepare``, emptied (with any ``.part`` file) if made for other settings."""
    scratch = data_dir / name
    state = scratch / "state.json"
    if scratch.exists() and (not state.is_file() or read_json(state) != key):
        log.info("%s was made with other settings: starting prepare again", scratch)
        discard(data_dir, name)
    scratch.mkdir(parents=True, exist_ok=True)
    if not state.is_file():
        write_json(state, key)
    return scratch


def discard(data_dir: Path, scratch_name: str = SCRATCH, keep: str | None = None) -> None:
    """Remove an unfinished prepare's scratch (all but ``keep``) and ``.part`` files."""
    scratch = data_dir / scratch_name
    for entry in scratch.iterdir() if scratch.is_dir() else ():
        if entry.name != keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if keep is None and scratch.is_dir():
        scratch.rmdir()
    for sub in ("text", "tokens"):
        for part in (data_dir / sub).glob(f"*{PART}"):
            part.unlink()


# --------------------------------------------------------------------------- pass 1: scan

def _scan(sources: dict[str, Source], corpus: CorpusConfig, seed: int, scratch: Path,
          data_dir: Path, record: Path | None, drawn: dict | None = None) -> dict[str, dict]:
    """``{lang: {"docs", "bytes", "stamp"}}``; writes each language's labels, and for
    by_key the held-out keys to ``record`` (``drawn``: keys drawn before, held out as
    :class:`KeyedSplit` says)."""
    path = scratch / "scan.json"
    if path.is_file():
        scan = read_json(path)
        changed = [lang for lang, s in sources.items() if s.stamp() != scan[lang]["stamp"]]
        if not changed:
            return scan
        log.warning("the corpus of %s changed since prepare started: starting again",
                    ", ".join(changed))
        discard(data_dir, scratch.name, keep="state.json")
    keyed = corpus.split == "by_key"
    vf, tf = corpus.valid_fraction, corpus.test_fraction
    splitter = KeyedSplit(vf, tf, seed, drawn) if keyed else None
    scan = {}
    for lang, source in sources.items():
        docs, nbytes = _scan_language(source, splitter, seed)
        log.info("corpus %s: %d documents, %d bytes", lang, docs, nbytes)
        scan[lang] = {"docs": docs, "bytes": nbytes, "stamp": source.stamp()}
    if splitter is not None:
        labels, held = splitter.labels()
        if record is not None:
            write_json(record, held)
    else:
        labels = {lang: split_labels(s["docs"], vf, tf, seed, corpus.split, language=lang)
                  for lang, s in scan.items()}
    for lang, lab in labels.items():
        np.save(scratch / f"{lang}.labels.npy", lab, allow_pickle=False)
    write_json(path, scan)
    return scan


def _scan_language(source: Source, splitter: KeyedSplit | None,
                   seed: int) -> tuple[int, int]:
    """Count one language's documents; with ``splitter`` (by_key) collect its keys, or
    its documents' text ranks when it has none."""
    from xelm.data.files import check_nonempty, some_keys_missing, warn_no_keys

    keyed = splitter is not None
    ids, ranks, missing, first = array("q"), array("Q"), 0, -1
    records = source.records(keyed)
    with contextlib.closing(records):
        for i, (key, doc) in enumerate(records):
            if not keyed:
                continue
            if key is not None:
                ids.append(splitter.key_id(key))
                continue
            if not missing:
                first = i
            missing += 1
            ranks.append(text_rank(seed, doc))
    check_nonempty(records.docs, records.cut, source.where, source.max_bytes)
    if keyed:
        if missing == records.docs:
            if not source.keyless:
                warn_no_keys(source.where, source.no_keys)
            splitter.add_text_ranks(source.lang, np.frombuffer(ranks, dtype=np.uint64))
        elif missing:
            raise CorpusError(some_keys_missing(source.where, missing, records.docs, first))
        else:
            splitter.add_keys(source.lang, np.frombuffer(ids, dtype=np.int64))
    return records.docs, records.bytes


# --------------------------------------------------------------------------- pass 2: tokenizer

def _tokenizer(sources: dict[str, Source], plan: TokenizerPlan, data_dir: Path,
               scratch: Path) -> tuple[TokenizerSpec, int]:
    """The run's tokenizer in ``data/tokenizer`` (made once; renamed into place whole)."""
    from xelm.data import tokenizer as t

    out, done = data_dir / "tokenizer", scratch / "tokenizer.done"
    if done.is_file():
        tok = t.load_tokenizer(out)
    else:
        tmp = data_dir / "tokenizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if plan.base:
            tok = t.import_tokenizer(plan.base, tmp, plan.trust_remote_code)
        else:
            train = {lang: _train_docs(s, scratch) for lang, s in sources.items()}
            tok = t.train_bpe(train, plan.vocab_size, plan.sample_bytes_per_language, tmp)
            _give_back_freed_memory()
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        done.touch()
    vocab_size = len(tok)
    spec = TokenizerSpec(str(out), token_dtype(vocab_size).name, int(tok.eos_token_id),
                         trained_here=not plan.base)
    return spec, vocab_size


def _give_back_freed_memory() -> None:
    """The BPE trainer's working set (it grows with the sample: the whole prepare peaks
    at 0.77 GB with 17 languages x 2 MB, bench/prepare.py) is freed when it returns, but
    glibc keeps the pages; hand them back to the system so packing does not sit on them.
    Best effort: nothing happens off glibc."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _train_docs(source: Source, scratch: Path) -> Iterator[str]:
    """A language's training documents, streamed (read only as far as the sample goes)."""
    labels = np.load(scratch / f"{source.lang}.labels.npy")
    records = source.records(keyed=False)
    with contextlib.closing(records):
        blocks = (labels[i:i + 65536].tolist() for i in range(0, len(labels), 65536))
        for label, (_, doc) in zip(itertools.chain.from_iterable(blocks), records):
            if label == LABEL["train"]:
                yield doc
