"""A corpus directory's files (one ``<code>.txt|.jsonl|.parquet`` per language) and the
checks every reader applies to a language's records (non-empty; keys for all or none).

Below :mod:`xelm.data.readers` and :mod:`xelm.data.sources`, which both use them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xelm.data.errors import CorpusError
from xelm.data.formats import CORPUS_SUFFIXES, KEY_FIELDS, Record
from xelm.data.languages import (CODE_HINT, normalize_language, normalize_list,
                                 suggest_languages)

log = logging.getLogger("xelm.data.readers")  # where these warnings were always logged


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


# --------------------------------------------------------------------------- records

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
