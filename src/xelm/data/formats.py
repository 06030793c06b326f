"""Corpus file formats: one language's documents streamed from a .txt, .jsonl or .parquet.

A document is one line of text: line breaks inside a record, with the blanks around them,
become one space (:func:`clean`), and blank documents are skipped, because later stages
write documents one per line. Files are read line by line (Parquet in batches), never
whole; :class:`CappedRecords` stops a stream at a byte or document cap. Each record is
``(key, document)``: the key (for ``corpus.split: by_key``) is line N of a ``<code>.keys``
sidecar for line N of a ``.txt``, or a record's ``key`` (else ``id``) field.

Invalid input (not UTF-8, NUL bytes, bad JSON, a missing ``text`` field or column) is a
:class:`CorpusError` naming the file, the line or byte, and the fix.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from xelm.data.errors import CorpusError

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")
KEYS_SUFFIX = ".keys"  # sidecar of a .txt file: one key per line
KEY_FIELDS = ("key", "id")  # record fields that hold a document's key, in preference order
NO_KEY_FIELD = f"no {' or '.join(map(repr, KEY_FIELDS))} field"
Record = tuple[str | None, str]  # (key or None, document)
# Every character str.splitlines() breaks on, so a document never spans two lines.
_BREAK = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+\s*")


def clean(text: str) -> str:
    """One line: line breaks (with the blanks around them) become one space; trimmed.

    Trimming first changes nothing (blanks at either end go in any case) and leaves most
    lines without a break, which skips the slower substitution.
    """
    text = text.strip()
    return _LINE_BREAKS.sub(" ", text) if _BREAK.search(text) else text


class CappedRecords:
    """The leading records of a stream within ``max_bytes`` UTF-8 bytes of documents and
    ``max_docs`` documents (either may be None: no cap).

    Pulls at most one record past the caps (none when the bytes fill the cap exactly), so
    a lazy reader stops reading there. Afterwards ``cut`` says whether the byte cap cut
    the stream short, ``docs`` and ``bytes`` count what was passed on.
    """

    def __init__(self, records: Iterable[Record], max_bytes: int | None = None,
                 max_docs: int | None = None):
        self._records = iter(records)
        self.max_bytes, self.max_docs = max_bytes, max_docs
        self.cut, self.docs, self.bytes, self._done = False, 0, 0, False

    def __iter__(self) -> CappedRecords:
        return self

    def __next__(self) -> Record:
        if self._done:
            raise StopIteration
        record = next(self._records)
        size = len(record[1].encode("utf-8"))
        if self.max_bytes is not None and self.bytes + size > self.max_bytes:
            self.cut = self._done = True
            raise StopIteration
        self.bytes += size
        self.docs += 1
        if self.bytes == self.max_bytes or (self.max_docs is not None
                                            and self.docs >= self.max_docs):
            self._done = True
        return record

    def close(self) -> None:
        """Close the underlying reader (its file) early."""
        close = getattr(self._records, "close", None)
        if close is not None:
            close()


def read_docs(path: Path) -> Iterator[str]:
    """The documents of one .txt/.jsonl/.parquet file, streamed."""
    with contextlib.closing(read_records(path, keyed=False)) as records:
        for _, doc in records:
            yield doc


def read_records(path: Path, keyed: bool) -> Iterator[Record]:
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


def no_keys_reason(path: Path) -> str:
    """How a corpus file without keys lacks them (for the by_key warning)."""
    if path.suffix.lower() == ".txt":
        return f"no {path.with_suffix(KEYS_SUFFIX).name} beside it"
    return NO_KEY_FIELD


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
        doc = clean(line)
        if not doc:
            continue
        if key == "":
            raise CorpusError(f"{keys}: line {number} is blank but line {number} of "
                              f"{path.name} has text; give every line of {path.name} a key")
        yield key, doc


def record_key(record: dict) -> str | None:
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
        doc = clean(text or "")
        if doc:
            yield (record_key(record) if keyed else None), doc


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
                doc = clean(row["text"] or "")
                if doc:
                    yield record_key(row) if key_columns else None, doc
