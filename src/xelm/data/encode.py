"""Tokenising a stream of document chunks on several cores.

A chunk is a list of documents with their splits (``LABEL``); :func:`pack_chunk` turns it
into what the shard writers append per split: the text (one document per line), the
tokens (each document followed by EOS), and each document's token and UTF-8 byte counts.
:class:`ChunkEncoder` runs ``pack_chunk`` in ``workers`` processes (``spawn``: no state is
inherited, and each worker runs the tokenizer single-threaded) and hands results back in
submission order, with at most ``2 * workers + 2`` chunks in flight: the bound on what is
in memory, whatever the corpus size. With one worker it runs here, without a pool (the
tokenizer may then use several threads of its own).

A tokenizer trained here is loaded with ``tokenizers`` alone (fast to start, the same ids
as its ``transformers`` wrapper); a base model's is loaded with ``transformers``, and
called exactly as :func:`xelm.data.packing.encode_documents` calls it.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xelm.data.split import SPLITS

_ENCODER: Callable[[list[str]], list[list[int]]] | None = None
_SPEC: TokenizerSpec | None = None


@dataclass(frozen=True)
class TokenizerSpec:
    """How a worker loads the run's tokenizer (a folder) and what it writes."""

    directory: str
    dtype: str
    eos: int
    trained_here: bool  # a byte-level BPE of ours: plain `tokenizers` is enough


@dataclass
class SplitPart:
    """One chunk's documents of one split, ready to append."""

    text: bytes  # the documents, each followed by a newline
    tokens: np.ndarray  # each document's ids followed by EOS, back to back
    lengths: np.ndarray  # tokens per document (EOS included)
    sizes: np.ndarray  # UTF-8 bytes per document (newline included)


def load_encoder(spec: TokenizerSpec) -> Callable[[list[str]], list[list[int]]]:
    """A function from documents to their token ids (no special tokens)."""
    if spec.trained_here:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(Path(spec.directory) / "tokenizer.json"))
        batch = getattr(tok, "encode_batch_fast", tok.encode_batch)
        return lambda docs: [e.ids for e in batch(docs, add_special_tokens=False)]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.directory)
    return lambda docs: tok(docs, add_special_tokens=False)["input_ids"]


def pack_chunk(spec: TokenizerSpec, docs: Sequence[str], labels: Sequence[int],
               encode: Callable[[list[str]], list[list[int]]]) -> list[SplitPart | None]:
    """Per split (``SPLITS`` order): its documents of the chunk, or None if it has none."""
    groups: list[list[str]] = [[] for _ in SPLITS]
    for doc, label in zip(docs, labels):
        groups[label].append(doc)
    return [_pack(spec, group, encode) if group else None for group in groups]


def _pack(spec: TokenizerSpec, docs: list[str], encode) -> SplitPart:
    raw = [doc.encode("utf-8") for doc in docs]
    ids = encode(docs)
    for row in ids:
        row.append(spec.eos)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=spec.dtype,
                         count=int(lengths.sum()))
    sizes = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)) + 1
    return SplitPart(b"\n".join(raw) + b"\n", tokens, lengths, sizes)


def _init_worker(spec: TokenizerSpec) -> None:
    global _ENCODER, _SPEC
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the pool is the parallelism
    _ENCODER, _SPEC = load_encoder(spec), spec


def _work(docs: list[str], labels: list[int]) -> list[SplitPart | None]:
    return pack_chunk(_SPEC, docs, labels, _ENCODER)


class ChunkEncoder:
    """:func:`pack_chunk` over a stream of chunks, in order, on ``workers`` processes."""

    def __init__(self, spec: TokenizerSpec, workers: int = 1):
        self.spec, self.workers = spec, max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._encode = None

    def __enter__(self) -> ChunkEncoder:
        return self

    def _start(self) -> None:
        """Load the tokenizer here, or start the pool (on first use: a resumed run with
        nothing left to pack starts nothing)."""
        if self.workers == 1 and self._encode is None:
            self._encode = load_encoder(self.spec)
        elif self.workers > 1 and self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.spec,))

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, chunks: Iterator[tuple[object, list[str], list[int]]]
            ) -> Iterator[tuple[object, list[SplitPart | None]]]:
        """``(tag, parts)`` for each ``(tag, docs, labels)``, in order; ``tag`` is passed
        through (e.g. the index of the chunk's last document)."""
        self._start()
        if self._pool is None:
            for tag, docs, labels in chunks:
                yield tag, pack_chunk(self.spec, docs, labels, self._encode)
            return
        pending: collections.deque[tuple[object, Future]] = collections.deque()
        for tag, docs, labels in chunks:
            pending.append((tag, self._pool.submit(_work, docs, labels)))
            if len(pending) >= 2 * self.workers + 2:
                done_tag, future = pending.popleft()
                yield done_tag, future.result()
        while pending:
            done_tag, future = pending.popleft()
            yield done_tag, future.result()
