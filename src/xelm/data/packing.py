"""Token shards: each language's split, tokenized once into a flat memmap.

Layout under ``data/tokens``: ``<lang>.<split>.bin`` (the documents' tokens, each
followed by EOS, as uint16 or uint32) and ``<lang>.<split>.docs.npy`` (for every
document: its end offset in the token stream and its UTF-8 byte count, so evaluation can
stop at whole documents and report bits per byte exactly). Training samples fixed-length
blocks from the stream at random offsets; evaluation walks it in consecutive blocks.
"""

from __future__ import annotations

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
