"""Corpus readers: one text collection per language (splits: :mod:`xelm.data.split`).

Every reader returns ``{language: [document, ...]}``: language codes are normalised by
:func:`normalize_language` (so ``eng.txt`` and ``corpus.languages: [en]`` meet), and a
document is one line of text (line breaks inside a record become spaces), because later
stages write documents one per line. Files are read line by line (Parquet in batches,
Hugging Face datasets row by row) and reading stops at ``corpus.max_bytes_per_language``,
so a cap keeps a huge file from being loaded whole.

:func:`read_keyed_corpus` also returns each document's key, for ``corpus.split: by_key``
(:mod:`xelm.data.split`): line N of a ``<code>.keys`` sidecar beside ``<code>.txt`` is the
key of line N (e.g. the Bible chapter ``GEN.1``); ``.jsonl``/``.parquet`` records and
Hugging Face rows give it in a ``key`` (else ``id``) field.

Every problem the user can fix raises :class:`CorpusError` naming the file or language
and what to do. ``datasets`` and ``pyarrow`` are imported only when used.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import langcodes

if TYPE_CHECKING:
    from xelm.config import CorpusConfig, HFDatasetConfig

log = logging.getLogger(__name__)

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")
KEYS_SUFFIX = ".keys"  # sidecar of a .txt file: one key per line
KEY_FIELDS = ("key", "id")  # record fields that hold a document's key, in preference order
Record = tuple[str | None, str]  # (key or None, document)
# `datasets` builders that read local files: they cannot guess which file is which language.
LOCAL_BUILDERS = frozenset({"json", "text", "parquet", "csv", "arrow", "pandas", "xml",
                            "webdataset"})
# 'und' (undetermined) and 'zxx' (no linguistic content) are valid tags but not languages.
_NOT_LANGUAGES = frozenset({"und", "zxx"})
# Every character str.splitlines() breaks on, so a document never spans two lines.
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+\s*")
_CODE_HINT = ("use an ISO 639 code such as 'en', 'de' or 'ceb', or a private-use code "
              "'qaa'..'qtz'")


class CorpusError(ValueError):
    """A corpus problem the user must fix; the message names the file or language and how."""


# --------------------------------------------------------------------------- languages

def normalize_language(code: str) -> str:
    """The shortest standard tag for ``code``: 'eng'/'EN' -> 'en', 'deu' -> 'de', 'ceb' -> 'ceb'.

    Accepts ISO 639-1/-3 codes (with optional script/region subtags, 'en_US' -> 'en-US')
    and the private-use range 'qaa'..'qtz'. Raises :class:`CorpusError` for anything
    else, suggesting codes when ``code`` looks like a language name ('english' -> 'en').
    """
    text = str(code).strip()
    try:
        tag = langcodes.Language.get(text)
    except ValueError:  # LanguageTagError: not even the shape of a tag
        tag = None
    primary = tag.language if tag is not None else None
    if (tag is None or not tag.is_valid() or not primary or not primary.isalpha()
            or len(primary) not in (2, 3) or primary in _NOT_LANGUAGES):
        raise CorpusError(_unknown_language(text))
    return tag.to_tag()


def _unknown_language(text: str) -> str:
    suggestions = _suggest_languages(text)
    hint = f" (did you mean {' or '.join(map(repr, suggestions))}?)" if suggestions else ""
    return f"unknown language code {text!r}{hint}: {_CODE_HINT}"


def _suggest_languages(text: str) -> list[str]:
    """Codes of languages whose name is ``text`` or close to it; [] when none is."""
    if len(text) < 3:
        return []
    if importlib.util.find_spec("language_data") is not None:
        with contextlib.suppress(LookupError, ValueError):
            return [langcodes.find(text).to_tag()]
    names = _language_names()
    if text.lower() in names:
        return [names[text.lower()]]
    close = difflib.get_close_matches(text.lower(), list(names), n=3, cutoff=0.8)
    return list(dict.fromkeys(names[name] for name in close))


@functools.lru_cache(maxsize=1)
def _language_names() -> dict[str, str]:
    """Lower-case English name -> code, from the IANA registry that ships with langcodes.

    Used when the optional ``language_data`` package (langcodes' name lookup) is absent.
    """
    from langcodes.registry_parser import parse_registry

    names: dict[str, str] = {}
    for entry in parse_registry():
        subtag = entry.get("Subtag", "")
        if entry.get("Type") != "language" or "Deprecated" in entry or ".." in subtag:
            continue
        for name in entry.get("Description", []):
            names.setdefault(name.lower(), langcodes.Language.get(subtag).to_tag())
    return names


def _normalize_in(code: str, where: str) -> str:
    """:func:`normalize_language`, with ``where`` the code came from in the message."""
    try:
        return normalize_language(code)
    except CorpusError as exc:
        raise CorpusError(f"{where}: {exc}") from None


def _normalize_list(codes: Iterable[str], where: str) -> list[str]:
    """Normalised codes in the given order; a language listed twice is an error."""
    seen: dict[str, str] = {}
    for code in codes:
        lang = _normalize_in(code, where)
        if lang in seen:
            raise CorpusError(f"{where} lists language {lang!r} twice ({seen[lang]!r} and "
                              f"{code!r}); keep one")
        seen[lang] = code
    return list(seen)


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
        read = _read_hf(cfg, keyed)
    elif cfg.source == "unlabelled":
        from xelm.data.langid import read_unlabelled

        languages = _normalize_list(cfg.languages or [], "corpus.languages")
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


def _clean(text: str) -> str:
    """One line: line breaks (with the blanks around them) become one space; trimmed."""
    return _LINE_BREAKS.sub(" ", text).strip()


def _take(records: Iterable[Record], max_bytes: int | None,
          max_docs: int | None = None) -> tuple[list[Record], bool]:
    """Leading records within both caps, and whether the byte cap cut the stream short.

    Pulls at most one record past the caps (none when the bytes fill the cap exactly),
    so a lazy reader stops reading there.
    """
    kept: list[Record] = []
    total = 0
    for record in records:
        size = len(record[1].encode("utf-8"))
        if max_bytes is not None and total + size > max_bytes:
            return kept, True
        kept.append(record)
        total += size
        if total == max_bytes or (max_docs is not None and len(kept) >= max_docs):
            break
    return kept, False


def _split_records(kept: list[Record], where: str, keyed: bool,
                   no_keys: str) -> tuple[list[str], list[str] | None]:
    """(documents, keys or None); all or none of the documents must have a key."""
    docs = [doc for _, doc in kept]
    if not keyed:
        return docs, None
    missing = [i for i, (key, _) in enumerate(kept) if key is None]
    if len(missing) == len(kept):
        log.warning("%s has no document keys (%s): corpus.split by_key splits this language "
                    "by a hash of each document's text, so its held-out documents are not "
                    "the keys held out in the other languages", where, no_keys)
        return docs, None
    if missing:
        raise CorpusError(f"{where}: {len(missing)} of {len(kept)} documents have no key "
                          f"(the first is document {missing[0] + 1}); give every document a "
                          f"{' or '.join(map(repr, KEY_FIELDS))} field, or none")
    return docs, [key for key, _ in kept]


def _check_nonempty(docs: list[str], capped: bool, what: str, max_bytes: int | None) -> None:
    if docs:
        return
    if capped:
        raise CorpusError(f"{what}: its first document is larger than "
                          f"corpus.max_bytes_per_language ({max_bytes} bytes); raise the cap")
    raise CorpusError(f"{what} is empty (no documents, or only blank lines): add text or "
                      "remove it from the corpus")


# --------------------------------------------------------------------------- directories

def _read_dir(directory: Path, languages: list[str] | None, max_bytes: int | None,
              keyed: bool = False) -> dict[str, tuple[list[str], list[str] | None]]:
    """(documents, keys) of the selected languages of a directory of per-language files."""
    return {lang: _read_file(path, max_bytes, keyed)
            for lang, path in _select_files(directory, languages).items()}


def _select_files(directory: Path, languages: list[str] | None) -> dict[str, Path]:
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
        selected = _normalize_list(languages, "corpus.languages")
        missing = [lang for lang in selected if lang not in found]
        if missing:
            hint = (f"; files not named by a language code: "
                    f"{', '.join(f'{p.name}{why}' for p, why in strays)}" if strays else "")
            raise CorpusError(f"corpus.languages asks for {', '.join(missing)} but {directory} "
                              f"has no file for {'it' if len(missing) == 1 else 'them'}; "
                              f"available: {', '.join(found) or 'none'}{hint}")
    return {lang: _one_file(directory, lang, found[lang]) for lang in selected}


def _language_files(directory: Path) -> dict[str, Path]:
    """Normalised language -> its corpus file, sorted by language.

    Files whose name is not a language code are left out (reading a directory without
    named languages refuses them: see :func:`_select_files`); two files for one language
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
            suggestions = _suggest_languages(path.stem.strip())
            strays.append((path, f" (did you mean {' or '.join(map(repr, suggestions))}?)"
                           if suggestions else ""))
    return dict(sorted(files.items())), strays


def _strays_message(directory: Path, strays: list[tuple[Path, str]]) -> str:
    listed = "; ".join(f"{path}: unknown language code {path.stem!r}{why}"
                       for path, why in strays)
    count = "1 file is" if len(strays) == 1 else f"{len(strays)} files are"
    return (f"corpus directory {directory}: {count} not named by a language code: {listed}; "
            "name each file <code>.txt, <code>.jsonl or <code>.parquet "
            f"({_CODE_HINT}), move the other files out of the directory, or set "
            "corpus.languages (xelm adapt: --languages) to read only the languages you name")


def _read_docs(path: Path) -> Iterator[str]:
    """The documents of one .txt/.jsonl/.parquet file, streamed."""
    with contextlib.closing(_read_records(path, keyed=False)) as records:
        for _, doc in records:
            yield doc


def _read_records(path: Path, keyed: bool) -> Iterator[Record]:
    """(key, document) of one corpus file, streamed; keys are None unless ``keyed``."""
    if path.suffix.lower() == ".txt":
        return _txt_docs(path, _keys_file(path) if keyed else None)
    reader = {".jsonl": _jsonl_docs, ".parquet": _parquet_docs}[path.suffix.lower()]
    return reader(path, keyed)


def _keys_file(path: Path) -> Path | None:
    """The ``<stem>.keys`` sidecar of a .txt file, checked to have as many lines; or None."""
    keys = path.with_suffix(KEYS_SUFFIX)
    if not keys.is_file():
        return None
    n_text, n_keys = _count_lines(path), _count_lines(keys)
    if n_text != n_keys:
        raise CorpusError(f"{path} has {n_text} lines but its keys file {keys} has {n_keys}: "
                          f"line N of {keys.name} must be the key of line N of {path.name}; "
                          f"fix {keys.name}, or remove it to split {path.name} without keys")
    return keys


def _count_lines(path: Path) -> int:
    """Lines as :func:`_utf8_lines` counts them (a last line without newline counts)."""
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _read_file(path: Path, max_bytes: int | None,
               keyed: bool = False) -> tuple[list[str], list[str] | None]:
    """(documents, keys) of one corpus file, up to ``max_bytes`` UTF-8 bytes of documents."""
    with contextlib.closing(_read_records(path, keyed)) as records:
        kept, capped = _take(records, max_bytes)
    _check_nonempty(kept, capped, str(path), max_bytes)
    no_keys = (f"no {path.with_suffix(KEYS_SUFFIX).name} beside it"
               if path.suffix.lower() == ".txt"
               else f"no {' or '.join(map(repr, KEY_FIELDS))} field")
    return _split_records(kept, str(path), keyed, no_keys)


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, streamed; a BOM is dropped.

    NUL bytes (binary or UTF-16 files) and invalid UTF-8 are errors that give the byte
    offset and line, so the user can find and fix the spot.
    """
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if b"\x00" in raw:
                raise CorpusError(f"{path}: NUL byte at byte {offset + raw.index(0)} (line "
                                  f"{number}): a binary or UTF-16 file, not UTF-8 text; "
                                  "convert it to UTF-8 or remove it")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{path}: not valid UTF-8 at byte {offset + exc.start} "
                                  f"(line {number}): {exc.reason}; re-encode the file as "
                                  "UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)") from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text
            offset += len(raw)


def _txt_docs(path: Path, keys: Path | None = None) -> Iterator[Record]:
    """One document per non-blank line; its key is the same line of ``keys`` (if given)."""
    key_lines = _utf8_lines(keys) if keys is not None else None
    for number, line in _utf8_lines(path):
        key = next(key_lines)[1].strip() if key_lines is not None else None
        doc = _clean(line)
        if not doc:
            continue
        if key == "":
            raise CorpusError(f"{keys}: line {number} is blank but line {number} of "
                              f"{path.name} has text; give every line of {path.name} a key")
        yield key, doc


def _record_key(record: dict) -> str | None:
    """The first of ``KEY_FIELDS`` that holds a value, as a string; None if none does."""
    for field in KEY_FIELDS:
        value = record.get(field)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _jsonl_docs(path: Path, keyed: bool = False) -> Iterator[Record]:
    """The ``text`` field of each JSON object line; blank lines and null texts skipped."""
    for number, line in _utf8_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}: line {number} is not valid JSON ({exc.msg}); each "
                              'line must be an object like {"text": "..."}') from None
        if not isinstance(record, dict) or "text" not in record:
            raise CorpusError(f"{path}: line {number} has no 'text' field; each line must "
                              'be an object like {"text": "..."}')
        text = record["text"]
        if text is not None and not isinstance(text, str):
            raise CorpusError(f"{path}: line {number}: 'text' is a "
                              f"{type(text).__name__}, not a string")
        doc = _clean(text or "")
        if doc:
            yield (_record_key(record) if keyed else None), doc


def _parquet_docs(path: Path, keyed: bool = False) -> Iterator[Record]:
    """The string column ``text`` (and the key column), read in batches; nulls and blank
    texts skipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({exc}); rewrite it with "
                          "pyarrow or pandas, or remove it") from None
    schema = parquet.schema_arrow
    if "text" not in schema.names:
        raise CorpusError(f"{path}: no 'text' column (columns: {', '.join(schema.names)}); "
                          "rename the column holding the documents to 'text'")
    kind = schema.field("text").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise CorpusError(f"{path}: column 'text' holds {kind}, not strings")
    key_columns = [f for f in KEY_FIELDS if f in schema.names] if keyed else []
    with contextlib.closing(parquet):
        for batch in parquet.iter_batches(batch_size=1024, columns=["text", *key_columns]):
            for row in batch.to_pylist():
                doc = _clean(row["text"] or "")
                if doc:
                    yield _record_key(row) if key_columns else None, doc


# --------------------------------------------------------------------------- Hugging Face

def _read_hf(cfg: CorpusConfig,
             keyed: bool = False) -> dict[str, tuple[list[str], list[str] | None]]:
    """One ``datasets.load_dataset`` per language of ``cfg.languages``."""
    if not cfg.languages:
        raise CorpusError("corpus.source is 'hf' but corpus.languages is not set: list the "
                          "languages to load, e.g. corpus.languages=[en, de]")
    hf = cfg.hf
    langs = _normalize_list(cfg.languages, "corpus.languages")
    files = None
    if hf.data_files is not None:
        keys = _normalize_list(hf.data_files, "corpus.hf.data_files")
        files = dict(zip(keys, hf.data_files.values()))
    elif hf.name in LOCAL_BUILDERS:
        raise CorpusError(f"corpus.hf.name is the local builder {hf.name!r}, which needs "
                          "corpus.hf.data_files: one file (or glob) per language, e.g. "
                          "{en: data/en.jsonl}")
    written = dict(zip(langs, cfg.languages))
    return {lang: _read_hf_language(hf, written[lang], lang, files,
                                    cfg.max_bytes_per_language, keyed) for lang in langs}


def _read_hf_language(hf: HFDatasetConfig, code: str, lang: str,
                      files: dict[str, str] | None, max_bytes: int | None,
                      keyed: bool = False) -> tuple[list[str], list[str] | None]:
    """(documents, keys) of one language; ``{lang}`` in name/config is the code as written."""
    import datasets

    if files is not None and lang not in files:
        raise CorpusError(f"corpus.hf.data_files has no entry for language {lang!r} "
                          f"(it has {', '.join(files)}); add one")
    name = hf.name.format(lang=code)
    config = hf.config.format(lang=code) if hf.config else None
    where = f"HF dataset {name!r} (config {config!r}, split {hf.split!r}) for {lang!r}"
    try:
        dataset = datasets.load_dataset(name, config, split=hf.split, streaming=hf.streaming,
                                        data_files=files[lang] if files else None)
    except Exception as exc:  # datasets raises many types: hub, network, files, schema
        hint = ("check corpus.hf.data_files" if hf.name in LOCAL_BUILDERS else "without hub "
                "access use corpus.hf.name=json|text|parquet with corpus.hf.data_files")
        raise CorpusError(f"could not load {where}: {type(exc).__name__}: {exc}; "
                          f"{hint}") from exc
    records = ((_record_key(row) if keyed else None, _hf_text(row, hf.text_field, where))
               for row in dataset)
    kept, capped = _take((r for r in records if r[1]), max_bytes, hf.max_documents)
    _check_nonempty(kept, capped, where, max_bytes)
    return _split_records(kept, where, keyed, "rows have no "
                          f"{' or '.join(map(repr, KEY_FIELDS))} field")


def _hf_text(row: dict, field: str, where: str) -> str:
    if field not in row:
        raise CorpusError(f"{where}: rows have no field {field!r} (fields: "
                          f"{', '.join(row)}); set corpus.hf.text_field")
    text = row[field]
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"{where}: field {field!r} is a {type(text).__name__}, not text")
    return _clean(text or "")


# --------------------------------------------------------------------------- splits

def split_documents(docs: list[str], valid_fraction: float, test_fraction: float, seed: int,
                    method: str = "random", *, language: str = "?",
                    keys: list[str] | None = None) -> dict[str, list[int]]:
    """:func:`xelm.data.split.split_documents` (kept here for callers of the reader)."""
    from xelm.data.split import split_documents as split

    return split(docs, valid_fraction, test_fraction, seed, method, language=language,
                 keys=keys)
