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
from xelm.data.languages import (CODE_HINT, normalize_language, normalize_list,
                                 suggest_languages)

if TYPE_CHECKING:
    from xelm.config import CorpusConfig

__all__ = ["CorpusError", "normalize_language", "read_corpus", "read_keyed_corpus",
           "read_records", "read_docs", "CappedRecords", "corpus_stats", "split_documents"]

log = logging.getLogger(__name__)
_read_docs = read_docs  # the name xelm.data.langid uses


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
        from xelm.data.langid import read_unlabelled

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


def split_records(kept: list[Record], where: str, keyed: bool,
                  no_keys: str) -> tuple[list[str], list[str] | None]:
    """(documents, keys or None); all or none of the documents must have a key."""
    docs = [doc for _, doc in kept]
    if not keyed:
        return docs, None
    missing = [i for i, (key, _) in enumerate(kept) if key is None]
    if len(missing) == len(kept):
        warn_no_keys(where, no_keys)
        return docs, None
    if missing:
        raise CorpusError(some_keys_missing(where, len(missing), len(kept), missing[0]))
    return docs, [key for key, _ in kept]


def warn_no_keys(where: str, no_keys: str) -> None:
    """The warning for a language without document keys under ``split: by_key``."""
    log.warning("%s has no document keys (%s): corpus.split by_key splits this language "
                "by a hash of each document's text, so its held-out documents are not "
                "the keys held out in the other languages", where, no_keys)


def some_keys_missing(where: str, missing: int, total: int, first: int) -> str:
    """The message for a language where some documents have a key and some (the first at
    0-based index ``first``) have none."""
    return (f"{where}: {missing} of {total} documents have no key (the first is document "
            f"{first + 1}); give every document a {' or '.join(map(repr, KEY_FIELDS))} "
            "field, or none")


def check_nonempty(count: int, cut: bool, what: str, max_bytes: int | None) -> None:
    """A language must keep at least one document; say why it kept none."""
    if count:
        return
    if cut:
        raise CorpusError(f"{what}: its first document is larger than "
                          f"corpus.max_bytes_per_language ({max_bytes} bytes); raise the cap")
    raise CorpusError(f"{what} is empty (no documents, or only blank lines): add text or "
                      "remove it from the corpus")


# --------------------------------------------------------------------------- directories

def _read_dir(directory: Path, languages: list[str] | None, max_bytes: int | None,
              keyed: bool = False) -> dict[str, tuple[list[str], list[str] | None]]:
    """(documents, keys) of the selected languages of a directory of per-language files."""
    return {lang: _read_file(path, max_bytes, keyed)
            for lang, path in select_files(directory, languages).items()}


def select_files(directory: Path, languages: list[str] | None) -> dict[str, Path]:
    """Language -> file of the languages to read, in ``languages``' order (else sorted).

    With ``languages`` named, only their files matter: other files (notes such as
    ``SOURCES.txt``, ``.keys`` sidecars, ``README.md``) are left alone. Without, every
    corpus file must be named by a language code, and all that are not are refused in one
    message (never skipped silently: a misnamed language file would vanish from the run).
    """
    found, strays = _scan_dir(directory)
    if languages is None:
        if strays:
            raise CorpusError(_strays_message(directory, strays))
        selected = list(found)
    else:
        selected = normalize_list(languages, "corpus.languages")
        missing = [lang for lang in selected if lang not in found]
        if missing:
            hint = (f"; files not named by a language code: "
                    f"{', '.join(f'{p.name}{why}' for p, why in strays)}" if strays else "")
            raise CorpusError(f"corpus.languages asks for {', '.join(missing)} but {directory} "
                              f"has no file for {'it' if len(missing) == 1 else 'them'}; "
                              f"available: {', '.join(found) or 'none'}{hint}")
    return {lang: _one_file(directory, lang, found[lang]) for lang in selected}


def language_files(directory: Path) -> dict[str, Path]:
    """Normalised language -> its corpus file, sorted by language.

    Files whose name is not a language code are left out (reading a directory without
    named languages refuses them: see :func:`select_files`); two files for one language
    are an error.
    """
    found, _ = _scan_dir(directory)
    return {lang: _one_file(directory, lang, paths) for lang, paths in found.items()}


def _one_file(directory: Path, lang: str, paths: list[Path]) -> Path:
    if len(paths) > 1:
        raise CorpusError(f"two files for language {lang!r} in {directory}: "
                          f"{' and '.join(p.name for p in paths)}; keep one")
    return paths[0]


def _scan_dir(directory: Path) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Corpus files by normalised language (sorted), and the files named by no language
    code, each with a ' (did you mean ...?)' hint or ''."""
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        raise CorpusError(f"corpus directory {directory} {state}: point corpus.path at a "
                          "directory with one <code>.txt, <code>.jsonl or <code>.parquet "
                          "file per language")
    entries = sorted(directory.iterdir())
    paths = [p for p in entries if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in CORPUS_SUFFIXES]
    if not paths:
        found = ", ".join(p.name for p in entries[:10]) or "nothing"
        raise CorpusError(f"corpus directory {directory} holds no corpus files (<code>.txt, "
                          f"<code>.jsonl or <code>.parquet, e.g. en.txt); found: {found}")
    files: dict[str, list[Path]] = {}
    strays: list[tuple[Path, str]] = []
    for path in paths:
        try:
            files.setdefault(normalize_language(path.stem), []).append(path)
        except CorpusError:
            suggestions = suggest_languages(path.stem.strip())
            strays.append((path, f" (did you mean {' or '.join(map(repr, suggestions))}?)"
                           if suggestions else ""))
    return dict(sorted(files.items())), strays


def _strays_message(directory: Path, strays: list[tuple[Path, str]]) -> str:
    listed = "; ".join(f"{path}: unknown language code {path.stem!r}{why}"
                       for path, why in strays)
    count = "1 file is" if len(strays) == 1 else f"{len(strays)} files are"
    return (f"corpus directory {directory}: {count} not named by a language code: {listed}; "
            "name each file <code>.txt, <code>.jsonl or <code>.parquet "
            f"({CODE_HINT}), move the other files out of the directory, or set "
            "corpus.languages (xelm adapt: --languages) to read only the languages you name")


_language_files = language_files  # the name xelm.adapt uses


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
