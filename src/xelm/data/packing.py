"""Token shards: each language's split, tokenized once into a flat memmap.

Layout under ``data/tokens``: ``<lang>.<split>.bin`` (the documents' tokens, each
followed by EOS, as uint16 or uint32) and ``<lang>.<split>.docs.npy`` (for every
document: its end offset in the token stream and its UTF-8 byte count, so evaluation can
stop at whole documents and report bits per byte exactly). Training samples fixed-length
blocks from the stream at random offsets; evaluation walks it in consecutive blocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xelm.io import atomic_write_bytes


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def encode_documents(tokenizer, docs: list[str], batch: int = 1000) -> list[list[int]]:
    eos = tokenizer.eos_token_id
    out: list[list[int]] = []
    for start in range(0, len(docs), batch):
        enc = tokenizer(docs[start:start + batch], add_special_tokens=False)["input_ids"]
        out.extend(ids + [eos] for ids in enc)
    return out


def write_shard(path: Path, tokenizer, docs: list[str]) -> dict:
    """Tokenize ``docs`` into ``path`` (.bin) and its document index (.docs.npy)."""
    encoded = [np.asarray(ids) for ids in encode_documents(tokenizer, docs)]
    nbytes = [len(d.encode("utf-8")) + 1 for d in docs]
    return write_tokens(path, encoded, nbytes, token_dtype(len(tokenizer)))


def write_tokens(path: Path, documents: list[np.ndarray], nbytes: list[int],
                 dtype: np.dtype | str) -> dict:
    """Write already tokenized documents (each ending in EOS) as a shard and its index."""
    dtype = np.dtype(dtype)
    flat = np.concatenate(documents).astype(dtype) if documents else np.zeros(0, dtype)
    ends = np.cumsum([len(ids) for ids in documents], dtype=np.int64)
    sizes = np.asarray(nbytes, dtype=np.int64)
    index = np.stack([ends, sizes], axis=1) if documents else np.zeros((0, 2), np.int64)
    atomic_write_bytes(path.with_suffix(".docs.npy"), _npy_bytes(index))
    atomic_write_bytes(path, flat.tobytes())
    return {"tokens": int(flat.size), "bytes": int(sizes.sum()), "docs": len(documents),
            "dtype": dtype.name}


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@dataclass
class Shard:
    """A read-only view of one packed token stream."""

    path: Path
    dtype: str

    @property
    def tokens(self) -> np.ndarray:
        if self.path.stat().st_size == 0:  # a split with no documents; numpy cannot map it
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r")

    @property
    def documents(self) -> np.ndarray:
        """[n_docs, 2]: end offset (exclusive) of each document, its UTF-8 bytes (+1 newline)."""
        return np.load(self.path.with_suffix(".docs.npy"), allow_pickle=False)

    def split_documents(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Each document's tokens (EOS included) and its UTF-8 bytes."""
        docs, tokens = self.documents, self.tokens
        starts = np.concatenate([[0], docs[:-1, 0]]) if len(docs) else []
        return [np.asarray(tokens[a:b]) for a, b in zip(starts, docs[:, 0])], docs[:, 1]

    def head(self, max_tokens: int | None) -> tuple[np.ndarray, int]:
        """The longest prefix of whole documents within ``max_tokens``; (tokens, bytes)."""
        docs = self.documents
        if max_tokens is None or not len(docs) or docs[-1, 0] <= max_tokens:
            return np.asarray(self.tokens), int(docs[:, 1].sum())
        n = max(1, int(np.searchsorted(docs[:, 0], max_tokens, side="right")))
        return np.asarray(self.tokens[: docs[n - 1, 0]]), int(docs[:n, 1].sum())


def shard_path(data_dir: Path, lang: str, split: str) -> Path:
    return data_dir / "tokens" / f"{lang}.{split}.bin"


# --------------------------------------------------------------------------- appending
# ``prepare`` writes shards a chunk of documents at a time, to ``<name>.part`` files that
# only grow. A checkpoint records their sizes after they reached the disk; a run killed at
# any moment resumes by cutting every part back to its checkpoint, so the finished files
# are byte for byte those of an uninterrupted run.

PART = ".part"


class AppendFile:
    """A file that only grows, under ``<path>.part`` until :meth:`finish` renames it.

    ``size`` (from a checkpoint) cuts an existing part back to that many bytes; None
    starts it empty.
    """

    def __init__(self, path: Path, size: int | None = None):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + PART)
        self.part.parent.mkdir(parents=True, exist_ok=True)
        if size is not None and (not self.part.is_file() or self.part.stat().st_size < size):
            raise FileNotFoundError(f"{self.part} is missing or shorter than its checkpoint "
                                    f"({size} bytes)")
        self._handle = open(self.part, "r+b" if size is not None else "wb")  # noqa: SIM115
        self._handle.truncate(size or 0)
        self._handle.seek(0, 2)

    @property
    def size(self) -> int:
        return self._handle.tell()

    def write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)

    def sync(self) -> None:
        """Everything written so far is on disk (before a checkpoint names the size)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def finish(self) -> None:
        self.sync()
        self.close()
        os.replace(self.part, self.path)


class ShardWriter:
    """Appends tokenized documents to a shard: ``.bin`` and ``.docs.npy`` as
    :func:`write_tokens` writes them, built from ``.part`` files.

    ``state`` (from :meth:`state`) resumes at a checkpoint.
    """

    def __init__(self, path: Path, dtype: np.dtype | str, state: dict | None = None):
        self.path, self.dtype = Path(path), np.dtype(dtype)
        state = state or {}
        self.tokens, self.docs, self.bytes = (state.get(k, 0) for k in ("tokens", "docs",
                                                                        "bytes"))
        self._bin = AppendFile(self.path, self.tokens * self.dtype.itemsize if state else None)
        self._index = AppendFile(self._index_path, self.docs * 16 if state else None)

    @property
    def _index_path(self) -> Path:
        return self.path.with_suffix(".docs")  # raw int64 (end, bytes) rows until finish

    def append(self, tokens: np.ndarray, lengths: np.ndarray, sizes: np.ndarray) -> None:
        """Documents' ``tokens`` (EOS included, back to back), their token counts and
        UTF-8 byte counts (newline included)."""
        ends = self.tokens + np.cumsum(lengths, dtype=np.int64)
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).data)
        self._index.write(np.stack([ends, np.asarray(sizes, np.int64)], axis=1).data)
        self.tokens += int(tokens.size)
        self.docs += len(lengths)
        self.bytes += int(np.sum(sizes))

    def sync(self) -> None:
        self._bin.sync()
        self._index.sync()

    def state(self) -> dict:
        return {"tokens": self.tokens, "docs": self.docs, "bytes": self.bytes}

    def close(self) -> None:
        self._bin.close()
        self._index.close()

    def finish(self) -> dict:
        """Rename the shard into place; its stats as :func:`write_tokens` returns them."""
        self._index.finish()
        raw = self._index.path
        if self.docs:
            rows = np.memmap(raw, dtype=np.int64, mode="r", shape=(self.docs, 2))
            out = raw.with_name(raw.name + ".npy" + PART)
            index = np.lib.format.open_memmap(out, mode="w+", dtype=np.int64,
                                              shape=(self.docs, 2))
            for start in range(0, self.docs, 1 << 20):
                index[start:start + (1 << 20)] = rows[start:start + (1 << 20)]
            index.flush()
            del index, rows
            os.replace(out, self.path.with_suffix(".docs.npy"))
        else:
            atomic_write_bytes(self.path.with_suffix(".docs.npy"),
                               _npy_bytes(np.zeros((0, 2), np.int64)))
        raw.unlink()
        self._bin.finish()
        return {"tokens": self.tokens, "bytes": self.bytes, "docs": self.docs,
                "dtype": self.dtype.name}


def text_batches(paths: list[Path], batch_docs: int = 4096) -> Iterator[list[str]]:
    """The documents of ``prepare``'s text files (one per line), in order, in batches: the
    same documents as ``read_text().splitlines()``, without reading a file whole."""
    batch: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as handle:
            for line in handle:
                batch.append(line[:-1] if line.endswith("\n") else line)
                if len(batch) == batch_docs:
                    yield batch
                    batch = []
    if batch:
        yield batch


def regroup(shards: list[Shard], groups: np.ndarray, outputs: list[Path],
            block_docs: int = 1 << 16) -> list[dict]:
    """Write the documents of ``shards`` (in order) whose group is ``g`` to
    ``outputs[g]``, as :func:`write_tokens` would from the documents in memory; reads
    ``block_docs`` documents at a time. Returns each output's stats."""
    dtype = np.dtype(shards[0].dtype) if shards else np.dtype(np.uint16)
    writers = [ShardWriter(path, dtype) for path in outputs]
    first = 0
    for shard in shards:
        index, tokens = shard.documents, shard.tokens
        ends = index[:, 0]
        for a in range(0, len(index), block_docs):
            b = min(a + block_docs, len(index))
            start = int(ends[a - 1]) if a else 0
            lengths = np.diff(ends[a:b], prepend=start)
            mine = groups[first + a:first + b]
            per_token = np.repeat(mine, lengths)
            block = np.asarray(tokens[start:int(ends[b - 1])])
            for g, writer in enumerate(writers):
                pick = mine == g
                if pick.any():
                    writer.append(block[per_token == g], lengths[pick], index[a:b, 1][pick])
        first += len(index)
    return [writer.finish() for writer in writers]
