"""``prepare`` for corpora of any size: read -> split -> tokenise -> pack, streamed.

Three passes over the corpus, each resumable, none holding a language in memory:

1. **scan**: every language is read once (a Hugging Face dataset or an unlabelled pile is
   spooled to a file first, :mod:`xelm.data.sources`): its documents are counted (and, for
   ``split: by_key``, their keys collected), then every document's split is decided at
   once (:mod:`xelm.data.split`) and kept as one byte per document
   (``data/.prepare/<lang>.labels.npy``).
2. **tokenizer**: the base model's, or a byte-level BPE trained on each language's first
   ``tokenizer.sample_bytes_per_language`` bytes of training documents, streamed.
3. **pack**: every language is read again; chunks of documents are tokenised on
   ``workers`` processes (:mod:`xelm.data.encode`) and appended, in document order, to
   each split's text and shard files (``.part``). Every ``checkpoint_bytes`` of text a
   checkpoint (``data/.prepare/<lang>.pack.json``) records their sizes once they are on
   disk; a killed run cuts the parts back to it and goes on from the next document, so
   the finished files are byte for byte those of an uninterrupted run.

Outputs are the in-memory pipeline's, byte for byte: ``data/text/<lang>.<split>.txt``,
``data/tokens/<lang>.<split>.bin`` + ``.docs.npy``, ``data/held_out_keys.json``
(by_key), the tokenizer, and ``data/prepare.json`` (written last: what it lists is whole).

Memory is bounded by design, not by the corpus: one byte per document for its split
(plus 8 per document and the distinct keys for ``by_key``), the tokenizer sample's word
counts, and at most ``2 * workers + 2`` chunks of ``chunk_bytes`` in flight.
"""

from __future__ import annotations

import contextlib
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

from xelm.data.encode import ChunkEncoder, TokenizerSpec
from xelm.data.errors import CorpusError
from xelm.data.packing import PART, AppendFile, ShardWriter, shard_path, token_dtype
from xelm.data.sources import Source, open_sources
from xelm.data.split import LABEL, SPLITS, KeyedSplit, split_labels, text_rank
from xelm.io import read_json, write_json

if TYPE_CHECKING:
    from xelm.config import CorpusConfig

log = logging.getLogger(__name__)

SCRATCH = ".prepare"  # data/.prepare: spools, labels, checkpoints; removed when done
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
    scan = _scan(sources, corpus, seed, scratch, data_dir)
    clock.append(_clock())
    spec, vocab_size = _tokenizer(sources, tokenizer, data_dir, scratch)
    clock.append(_clock())
    total = sum(s["bytes"] for s in scan.values())
    workers = workers or auto_workers(total)
    stats = {}
    with ChunkEncoder(spec, workers) as encoder, _progress(total) as bar:
        for lang, source in sources.items():
            stats[lang] = _pack_language(source, scan[lang]["docs"], encoder, data_dir,
                                         scratch, chunk_bytes, checkpoint_bytes, bar)
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


def _scratch(data_dir: Path, key: dict) -> Path:
    """``data/.prepare``, emptied (with any ``.part`` file) if made for other settings."""
    scratch = data_dir / SCRATCH
    state = scratch / "state.json"
    if scratch.exists() and (not state.is_file() or read_json(state) != key):
        log.info("%s was made with other settings: starting prepare again", scratch)
        discard(data_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    if not state.is_file():
        write_json(state, key)
    return scratch


def discard(data_dir: Path) -> None:
    """Remove an unfinished prepare's scratch and ``.part`` files."""
    shutil.rmtree(data_dir / SCRATCH, ignore_errors=True)
    for sub in ("text", "tokens"):
        for part in (data_dir / sub).glob(f"*{PART}"):
            part.unlink()


# --------------------------------------------------------------------------- pass 1: scan

def _scan(sources: dict[str, Source], corpus: CorpusConfig, seed: int, scratch: Path,
          data_dir: Path) -> dict[str, dict]:
    """``{lang: {"docs", "bytes", "stamp"}}``; writes each language's labels."""
    path = scratch / "scan.json"
    if path.is_file():
        scan = read_json(path)
        changed = [lang for lang, s in sources.items() if s.stamp() != scan[lang]["stamp"]]
        if not changed:
            return scan
        log.warning("the corpus of %s changed since prepare started: starting again",
                    ", ".join(changed))
        discard(data_dir)
        scratch.mkdir(parents=True)
    keyed = corpus.split == "by_key"
    vf, tf = corpus.valid_fraction, corpus.test_fraction
    splitter = KeyedSplit(vf, tf, seed) if keyed else None
    scan = {}
    for lang, source in sources.items():
        docs, nbytes = _scan_language(source, splitter, seed)
        log.info("corpus %s: %d documents, %d bytes", lang, docs, nbytes)
        scan[lang] = {"docs": docs, "bytes": nbytes, "stamp": source.stamp()}
    if splitter is not None:
        labels, record = splitter.labels()
        write_json(data_dir / "held_out_keys.json", record)
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
    from xelm.data.readers import check_nonempty, some_keys_missing, warn_no_keys

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
            splitter.add_text_ranks(source.lang, ranks)
        elif missing:
            raise CorpusError(some_keys_missing(source.where, missing, records.docs, first))
        else:
            splitter.add_keys(source.lang, ids)
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
    """The BPE trainer's working set (about 20 times its sample: 0.75 GB for 17 languages
    x 2 MB) is freed when it returns, but glibc keeps the pages; hand them back to the
    system so packing does not sit on them. Best effort: nothing happens off glibc."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _train_docs(source: Source, scratch: Path) -> Iterator[str]:
    """A language's training documents, streamed (read only as far as the sample goes)."""
    labels = np.load(scratch / f"{source.lang}.labels.npy")
    records = source.records(keyed=False)
    with contextlib.closing(records):
        for label, (_, doc) in zip(labels.tolist(), records):
            if label == LABEL["train"]:
                yield doc


# --------------------------------------------------------------------------- pass 3: pack

def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tokenising", unit="B", unit_scale=True)


def _pack_language(source: Source, count: int, encoder: ChunkEncoder, data_dir: Path,
                   scratch: Path, chunk_bytes: int, checkpoint_bytes: int, bar) -> dict:
    """Split, tokenise and append one language's documents; its stats per split."""
    lang = source.lang
    done, checkpoint = scratch / f"{lang}.done.json", scratch / f"{lang}.pack.json"
    if done.is_file():
        stats = read_json(done)
        bar.update(sum(s["bytes"] - s["docs"] for s in stats.values()))
        return stats
    state = read_json(checkpoint) if checkpoint.is_file() else None
    try:
        texts, shards = _writers(lang, data_dir, encoder.spec.dtype, state)
    except FileNotFoundError:  # killed while renaming the finished files: do it again
        state = None
        texts, shards = _writers(lang, data_dir, encoder.spec.dtype, None)
    if state:
        log.info("packing %s: resuming after %d of %d documents", lang, state["docs"], count)
        bar.update(sum(w.size for w in texts.values()) - state["docs"])
    labels = np.load(scratch / f"{lang}.labels.npy")
    records = source.records(keyed=False)
    since = 0
    with contextlib.closing(records):
        chunks = _chunks(records, labels, state["docs"] if state else 0, chunk_bytes, source)
        for end, parts in encoder.map(chunks):
            for split, part in zip(SPLITS, parts):
                if part is not None:
                    texts[split].write(part.text)
                    shards[split].append(part.tokens, part.lengths, part.sizes)
                    since += len(part.text)
                    bar.update(len(part.text) - len(part.lengths))
            if since >= checkpoint_bytes:
                _checkpoint(checkpoint, end, texts, shards)
                since = 0
    if records.docs != count:
        raise _changed(source, count, records.docs)
    for text in texts.values():
        text.finish()
    stats = {split: shards[split].finish() for split in SPLITS}
    write_json(done, stats)
    checkpoint.unlink(missing_ok=True)
    return stats


def _writers(lang: str, data_dir: Path, dtype: str, state: dict | None):
    texts = {split: AppendFile(data_dir / "text" / f"{lang}.{split}.txt",
                               state["text"][split] if state else None) for split in SPLITS}
    shards = {split: ShardWriter(shard_path(data_dir, lang, split), dtype,
                                 state["shards"][split] if state else None) for split in SPLITS}
    return texts, shards


def _chunks(records, labels: np.ndarray, start: int, chunk_bytes: int,
            source: Source) -> Iterator[tuple[int, list[str], list[int]]]:
    """``(index after the chunk's last document, documents, labels)`` from ``start``."""
    docs: list[str] = []
    size, first = 0, start
    for i, (_, doc) in enumerate(records):
        if i < start:
            continue
        if i >= len(labels):
            raise _changed(source, len(labels), i + 1)
        docs.append(doc)
        size += len(doc)
        if size >= chunk_bytes:
            yield i + 1, docs, labels[first:i + 1].tolist()
            docs, size, first = [], 0, i + 1
    if docs:
        yield first + len(docs), docs, labels[first:first + len(docs)].tolist()


def _checkpoint(path: Path, end: int, texts: dict, shards: dict) -> None:
    """Record the parts' sizes after ``end`` documents, once they are on disk."""
    for writer in (*texts.values(), *shards.values()):
        writer.sync()
    write_json(path, {"docs": end, "text": {s: texts[s].size for s in SPLITS},
                      "shards": {s: shards[s].state() for s in SPLITS}})


def _changed(source: Source, expected: int, found: int) -> CorpusError:
    return CorpusError(f"{source.where} changed while prepare ran: {expected} documents "
                       f"when counted, {found} now; run prepare again (it starts over)")
