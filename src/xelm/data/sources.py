"""Each language's documents as a stream that reads the same every time it is opened.

``prepare`` reads every language twice (count and collect keys, then split and tokenise)
and never holds one in memory, so each language must be a file it can read again: the
corpus file itself for ``dir`` and ``synthetic`` sources. A Hugging Face dataset (a
download when streamed) or an unlabelled pile (sorted by language identification, which
is slow) is read once and *spooled* to ``<spool>/<lang>.jsonl`` (one cleaned, capped
document per line, with its key), which is then read like a corpus file. Spools are
written under a temporary name and renamed, so a killed run keeps the finished ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xelm.data.errors import CorpusError
from xelm.data.formats import CORPUS_SUFFIXES, CappedRecords, read_docs, read_records
from xelm.data.languages import normalize_list

if TYPE_CHECKING:
    from xelm.config import CorpusConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One language's documents: a corpus file (or spool) and how messages name it."""

    lang: str
    path: Path
    where: str  # what messages call it (the file, or the HF dataset)
    no_keys: str  # how it lacks keys, for the by_key warning
    max_bytes: int | None = None  # cap applied while reading (spools are capped already)
    keyless: bool = False  # unlabelled documents: never keyed, no per-language warning

    def records(self, keyed: bool) -> CappedRecords:
        """``(key, document)`` from the start; keys are None unless ``keyed``."""
        return CappedRecords(read_records(self.path, keyed and not self.keyless),
                             self.max_bytes)

    def stamp(self) -> list[int]:
        """Size and modification time of the file(s) read: a resumed run checks that the
        corpus did not change under it."""
        files = [self.path, self.path.with_suffix(".keys")]
        return [n for p in files if p.is_file() for n in (p.stat().st_size,
                                                           p.stat().st_mtime_ns)]


def open_sources(cfg: CorpusConfig, synthetic_dir: Path | None, spool_dir: Path,
                 keyed: bool = False) -> dict[str, Source]:
    """The languages of ``cfg`` in corpus order, spooling HF and unlabelled ones first."""
    from xelm.data.formats import no_keys_reason
    from xelm.data.files import select_files

    if cfg.source == "hf":
        return _hf_sources(cfg, spool_dir, keyed)
    if cfg.source == "unlabelled":
        return _unlabelled_sources(cfg, spool_dir, keyed)
    if cfg.source == "synthetic" and synthetic_dir is None:
        raise CorpusError("corpus.source is 'synthetic' but no synthetic_dir was given: "
                          "generate the synthetic corpus first and pass its directory")
    directory = Path(synthetic_dir if cfg.source == "synthetic" else cfg.path)
    return {lang: Source(lang, path, str(path), no_keys_reason(path), cfg.max_bytes_per_language)
            for lang, path in select_files(directory, cfg.languages).items()}


# --------------------------------------------------------------------------- spools

class SpoolWriter:
    """Appends ``(key, document)`` records to ``path`` (JSON lines) under a temporary
    name; :meth:`finish` renames it into place."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, key: str | None, doc: str) -> None:
        record = {"text": doc} if key is None else {"text": doc, "key": key}
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def finish(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.tmp, self.path)


def _hf_sources(cfg: CorpusConfig, spool_dir: Path, keyed: bool) -> dict[str, Source]:
    from xelm.data.hf import NO_KEYS, hf_languages, hf_records
    from xelm.data.files import check_nonempty

    out = {}
    for item in hf_languages(cfg):
        where, path = item.where(cfg.hf), spool_dir / f"{item.lang}.jsonl"
        if not path.is_file():
            spool = SpoolWriter(path)
            records = hf_records(cfg.hf, item, cfg.max_bytes_per_language, keyed)
            with contextlib.closing(records):
                for key, doc in records:
                    spool.write(key, doc)
            check_nonempty(records.docs, records.cut, where, cfg.max_bytes_per_language)
            spool.finish()
        out[item.lang] = Source(item.lang, path, where, NO_KEYS)
    return out


def _unlabelled_sources(cfg: CorpusConfig, spool_dir: Path, keyed: bool) -> dict[str, Source]:
    languages = normalize_list(cfg.languages or [], "corpus.languages")
    done = spool_dir / "unlabelled.json"
    if not done.is_file():
        sorter = UnlabelledSorter(cfg.path, languages, cfg.max_bytes_per_language)
        spools = {lang: SpoolWriter(spool_dir / f"{lang}.jsonl") for lang in languages}
        for lang, doc in sorter:
            spools[lang].write(None, doc)
        sorter.check()
        for spool in spools.values():
            spool.finish()
        log.info("language identification of %s: %s", cfg.path,
                 ", ".join(f"{k} {v}" for k, v in sorter.counts.items()))
        done.write_text(json.dumps(sorter.counts), encoding="utf-8")
    if keyed:
        log.warning("%s: unlabelled documents have no keys; corpus.split by_key splits "
                    "each language by a hash of its documents' text", cfg.path)
    return {lang: Source(lang, spool_dir / f"{lang}.jsonl", f"{cfg.path} ({lang})",
                         "unlabelled", keyless=True) for lang in languages}


class UnlabelledSorter:
    """``(language, document)`` for the documents of ``path`` (a .txt/.jsonl/.parquet
    file, or a directory of them, names carrying no meaning) identified as one of
    ``languages``, streamed in file order.

    ``counts`` holds every language's documents kept plus ``"other"`` (a language not
    listed) and ``"undetected"``, which are dropped. A language stops taking documents at
    ``max_bytes`` UTF-8 bytes; reading stops once every language is full. :meth:`check`
    (after the stream) refuses a listed language that got no document.
    """

    BATCH = 1000

    def __init__(self, path: str | Path, languages: list[str], max_bytes: int | None = None):
        from xelm.data.langid import OTHER, UNDETECTED, LanguageDetector

        self.root, self.languages, self.max_bytes = Path(path), list(languages), max_bytes
        self.files = _pile_files(self.root)
        self.detector = LanguageDetector(languages, closed=False)
        self.dropped = (OTHER, UNDETECTED)
        self.size = dict.fromkeys(languages, 0)
        self.counts = {**dict.fromkeys(languages, 0), OTHER: 0, UNDETECTED: 0}

    def _full(self) -> bool:
        return self.max_bytes is not None and all(s >= self.max_bytes
                                                  for s in self.size.values())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        from xelm.io import progress

        with progress(desc="language identification", unit="doc") as bar:
            for file in self.files:
                batch: list[str] = []
                for doc in read_docs(file):
                    batch.append(doc)
                    if len(batch) == self.BATCH:
                        yield from self._sort(batch)
                        bar.update(len(batch))
                        batch = []
                        if self._full():
                            break
                yield from self._sort(batch)
                bar.update(len(batch))
                if self._full():
                    break

    def _sort(self, batch: list[str]) -> Iterator[tuple[str, str]]:
        for doc, lang in zip(batch, self.detector.classify(batch)):
            if lang in self.dropped:
                self.counts[lang] += 1
                continue
            nbytes = len(doc.encode("utf-8"))
            if self.max_bytes is not None and self.size[lang] + nbytes > self.max_bytes:
                continue
            self.size[lang] += nbytes
            self.counts[lang] += 1
            yield lang, doc

    def check(self) -> None:
        empty = [lang for lang in self.languages if not self.counts[lang]]
        if empty:
            found = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v) or "nothing"
            raise CorpusError(f"no document of {self.root} was identified as "
                              f"{', '.join(empty)} (identified: {found}); check "
                              "corpus.languages, or add text in those languages")


def _pile_files(root: Path) -> list[Path]:
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in CORPUS_SUFFIXES)
    elif root.is_file():
        files = [root]
    else:
        raise CorpusError(f"corpus.path {root} does not exist: give a .txt/.jsonl/.parquet "
                          "file of unlabelled documents, or a directory of them")
    if not files:
        raise CorpusError(f"{root} holds no .txt, .jsonl or .parquet file of documents")
    return files


# ------------------------------------------------------------------ unlabelled corpora

def read_unlabelled(path: str | Path, languages: Sequence[str],
                    max_bytes: int | None = None) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Sort the documents of ``path`` (a .txt/.jsonl/.parquet file, or a directory of them,
    file names carrying no meaning) into ``languages`` by detected language.

    Returns ``({language: documents}, counts)``: counts has every language's documents kept
    plus ``"other"`` (identified as a language not listed) and ``"undetected"`` (no
    letters, or too ambiguous to call), which are dropped. A language stops taking documents at ``max_bytes``
    UTF-8 bytes; reading stops once every language is full. A listed language that gets
    no document is an error naming what was detected instead.
    """
    sorter = UnlabelledSorter(path, list(languages), max_bytes)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    for lang, doc in sorter:
        out[lang].append(doc)
    sorter.check()
    return out, sorter.counts

