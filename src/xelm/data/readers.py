"""Corpus readers: one text collection per language (splits: :mod:`xelm.data.split`).

Every reader yields or returns documents per language: language codes are normalised by
:func:`xelm.data.languages.normalize_language` (so ``eng.txt`` and ``corpus.languages:
[en]`` meet), and a document is one line of text (line breaks inside a record become
spaces), because later stages write documents one per line. Files are read line by line
(Parquet in batches, Hugging Face datasets row by row: :mod:`xelm.data.hf`) and reading
stops at ``corpus.max_bytes_per_language`` (:class:`CappedRecords`), so a cap keeps a huge
file from being loaded whole. :func:`read_records` streams one file; ``prepare`` reads
every language that way, twice, and never holds one in memory (:mod:`xelm.data.prepare`).
:func:`read_corpus` returns the documents as lists, for small corpora and tests.

:func:`read_keyed_corpus` also returns each document's key, for ``corpus.split: by_key``
(:mod:`xelm.data.split`): line N of a ``<code>.keys`` sidecar beside ``<code>.txt`` is the
key of line N (e.g. the Bible chapter ``GEN.1``); ``.jsonl``/``.parquet`` records and
Hugging Face rows give it in a ``key`` (else ``id``) field.

Every problem the user can fix raises :class:`CorpusError` naming the file or language
and what to do. ``datasets`` and ``pyarrow`` are imported only when used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from xelm.data.errors import CorpusError
from xelm.data.formats import (CORPUS_SUFFIXES, KEY_FIELDS, KEYS_SUFFIX, NO_KEY_FIELD,  # noqa: F401
                               CappedRecords, Record, clean, no_keys_reason, read_docs,
                               read_records, record_key)
from xelm.data.files import check_nonempty, select_files, split_records
from xelm.data.languages import normalize_language, normalize_list

if TYPE_CHECKING:
    from xelm.config import CorpusConfig

__all__ = ["CorpusError", "normalize_language", "read_corpus", "read_keyed_corpus",
           "read_records", "read_docs", "CappedRecords", "corpus_stats", "split_documents"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- entry point

def read_corpus(cfg: CorpusConfig,
                synthetic_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Read the corpus ``cfg`` describes: language -> documents (single lines of text).

    ``cfg.source``: 'dir' reads ``cfg.path`` (one ``<code>.txt|.jsonl|.parquet`` per
    language); 'synthetic' reads ``synthetic_dir`` the same way (the caller generates
    it); 'hf' loads one Hugging Face dataset per language in ``cfg.languages``;
    'unlabelled' sorts the documents of ``cfg.path`` (a file or a directory of files in
    no particular language) into ``cfg.languages`` by language identification.
    ``cfg.languages`` selects and orders languages (all of them must exist; other files
    of the directory are not read); without it a directory's languages come in sorted
    order, and every corpus file must be named by a language code.
    ``cfg.max_bytes_per_language`` caps the UTF-8 bytes kept per language, at whole
    documents.
    """
    return _read(cfg, synthetic_dir, keyed=False)[0]


def read_keyed_corpus(cfg: CorpusConfig, synthetic_dir: str | Path | None = None
                      ) -> tuple[dict[str, list[str]], dict[str, list[str] | None]]:
    """:func:`read_corpus` and each document's key: ``(corpus, {language: keys or None})``.

    ``keys[lang][i]`` is the key of ``corpus[lang][i]``: line i of ``<code>.keys`` beside
    ``<code>.txt`` (the two files must have the same number of lines; blank text lines
    are dropped with their keys), or the ``key`` (else ``id``) field of a ``.jsonl`` /
    ``.parquet`` record or a Hugging Face row, as a string. ``None`` when a language has
    no keys at all (logged as a warning: ``corpus.split: by_key`` then splits it by the
    hash of each document's text); some records with keys and some without is an error.
    Unlabelled corpora have no keys.
    """
    return _read(cfg, synthetic_dir, keyed=True)


def _read(cfg: CorpusConfig, synthetic_dir: str | Path | None,
          keyed: bool) -> tuple[dict[str, list[str]], dict[str, list[str] | None]]:
    if cfg.source == "hf":
        from xelm.data.hf import read_hf

        read = read_hf(cfg, keyed)
    elif cfg.source == "unlabelled":
        from xelm.data.sources import read_unlabelled

        languages = normalize_list(cfg.languages or [], "corpus.languages")
        corpus, counts = read_unlabelled(cfg.path, languages, cfg.max_bytes_per_language)
        log.info("language identification of %s: %s", cfg.path,
                 ", ".join(f"{k} {v}" for k, v in counts.items()))
        if keyed:
            log.warning("%s: unlabelled documents have no keys; corpus.split by_key splits "
                        "each language by a hash of its documents' text", cfg.path)
        read = {lang: (docs, None) for lang, docs in corpus.items()}
    else:
        if cfg.source == "synthetic" and synthetic_dir is None:
            raise CorpusError("corpus.source is 'synthetic' but no synthetic_dir was given: "
                              "generate the synthetic corpus first and pass its directory")
        directory = Path(synthetic_dir if cfg.source == "synthetic" else cfg.path)
        read = _read_dir(directory, cfg.languages, cfg.max_bytes_per_language, keyed)
    corpus = {lang: docs for lang, (docs, _) in read.items()}
    for lang, stats in corpus_stats(corpus).items():
        log.info("corpus %s: %d documents, %d bytes", lang, stats["docs"], stats["bytes"])
    return corpus, {lang: keys for lang, (_, keys) in read.items()}


def corpus_stats(corpus: dict[str, list[str]]) -> dict[str, dict]:
    """``{language: {"docs": count, "bytes": UTF-8 bytes}}``, in the corpus' order."""
    return {lang: {"docs": len(docs), "bytes": sum(len(d.encode("utf-8")) for d in docs)}
            for lang, docs in corpus.items()}


def _take(records: Iterable[Record], max_bytes: int | None,
          max_docs: int | None = None) -> tuple[list[Record], bool]:
    """Leading records within both caps (:class:`CappedRecords`), and whether the byte cap
    cut the stream short."""
    capped = CappedRecords(records, max_bytes, max_docs)
    with contextlib.closing(capped):
        return list(capped), capped.cut


# --------------------------------------------------------------------------- directories

def _read_dir(directory: Path, languages: list[str] | None, max_bytes: int | None,
              keyed: bool = False) -> dict[str, tuple[list[str], list[str] | None]]:
    """(documents, keys) of the selected languages of a directory of per-language files."""
    return {lang: _read_file(path, max_bytes, keyed)
            for lang, path in select_files(directory, languages).items()}


# --------------------------------------------------------------------------- files

def _read_file(path: Path, max_bytes: int | None,
               keyed: bool = False) -> tuple[list[str], list[str] | None]:
    """(documents, keys) of one corpus file, up to ``max_bytes`` UTF-8 bytes of documents."""
    kept, cut = _take(read_records(path, keyed), max_bytes)
    check_nonempty(len(kept), cut, str(path), max_bytes)
    return split_records(kept, str(path), keyed, no_keys_reason(path))


# --------------------------------------------------------------------------- splits

def split_documents(docs: list[str], valid_fraction: float, test_fraction: float, seed: int,
                    method: str = "random", *, language: str = "?",
                    keys: list[str] | None = None) -> dict[str, list[int]]:
    """:func:`xelm.data.split.split_documents` (kept here for callers of the reader)."""
    from xelm.data.split import split_documents as split

    return split(docs, valid_fraction, test_fraction, seed, method, language=language,
                 keys=keys)
