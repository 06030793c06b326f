"""Unit tests of the perplexity arithmetic with hand-computed numbers.

``stream_blocks``/``block_batches``/``stream_nll``/``metrics`` (evaluate/perplexity.py)
and the shard head (``Shard.head``, data/packing.py) are real; the scorer is a plain
function that records what it was asked and returns known log-probabilities.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xelm.data.packing import Shard, write_shard, write_tokens
from xelm.evaluate.perplexity import block_batches, metrics, stream_blocks, stream_nll

LN2 = math.log(2)


class RecordingScorer:
    """``score(ids, rows)``: logp of target t is ``-t / 10`` (so the NLL is the sum of the
    targets over 10); records every target and the rows it was given."""

    def __init__(self):
        self.targets: list[int] = []
        self.calls: list[tuple[list[list[int]], list[int]]] = []

    def __call__(self, ids: torch.Tensor, rows: list) -> torch.Tensor:
        assert ids.dtype == torch.int64 and ids.dim() == 2
        self.calls.append((ids.tolist(), list(rows)))
        self.targets += ids[:, 1:].flatten().tolist()
        return -ids[:, 1:].to(torch.float32) / 10


# --------------------------------------------------------------------------- stream_blocks

def test_blocks_overlap_by_one_and_the_last_is_short():
    blocks = stream_blocks(np.arange(10), context=4)
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9]]
    assert all(b.dtype == np.int64 for b in blocks)


def test_no_block_of_one_token_at_the_end():
    """9 tokens, context 4: targets 1-4 and 5-8; a block [8] would predict nothing."""
    assert [b.tolist() for b in stream_blocks(np.arange(9), 4)] == [[0, 1, 2, 3, 4],
                                                                    [4, 5, 6, 7, 8]]


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_to_predict(n):
    assert stream_blocks(np.arange(n), 4) == []


def test_context_longer_than_the_stream_gives_one_block():
    assert [b.tolist() for b in stream_blocks(np.arange(3, dtype=np.uint16), 8)] == [[0, 1, 2]]


def test_blocks_of_a_uint16_memmap(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(7, dtype=np.uint16).tofile(path)
    blocks = stream_blocks(np.memmap(path, dtype=np.uint16, mode="r"), 3)
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [3, 4, 5, 6]]
    assert all(b.dtype == np.int64 for b in blocks)


@pytest.mark.parametrize("n", range(2, 27))
@pytest.mark.parametrize("context", [1, 2, 3, 5, 8])
def test_every_token_but_the_first_is_a_target_once(n, context):
    blocks = stream_blocks(np.arange(n), context)
    targets = [t for b in blocks for t in b[1:].tolist()]
    assert targets == list(range(1, n))
    assert all(2 <= len(b) <= context + 1 for b in blocks)
    assert all(a[-1] == b[0] for a, b in zip(blocks, blocks[1:]))


# --------------------------------------------------------------------------- block_batches

def test_full_blocks_batched_then_the_short_one_alone():
    blocks = stream_blocks(np.arange(15), 4)  # lengths 5, 5, 5, 3
    assert [len(b) for b in blocks] == [5, 5, 5, 3]
    assert block_batches(blocks, 4, batch_size=2) == [[0, 1], [2], [3]]
    assert block_batches(blocks, 4, batch_size=8) == [[0, 1, 2], [3]]
    assert block_batches(blocks, 4, batch_size=1) == [[0], [1], [2], [3]]


def test_batches_hold_every_block_once_with_one_length_each():
    blocks = stream_blocks(np.arange(40), 6)
    batches = block_batches(blocks, 6, batch_size=3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(blocks)))
    assert all(len({len(blocks[i]) for i in batch}) == 1 for batch in batches)
    assert block_batches([], 6, 3) == []


# --------------------------------------------------------------------------- stream_nll

def test_nll_is_the_sum_over_targets_and_count_the_targets():
    score = RecordingScorer()
    nll, count = stream_nll(score, np.arange(10), context=4, batch_size=2)
    assert count == 9
    assert nll == pytest.approx(sum(range(1, 10)) / 10)  # 4.5
    assert sorted(score.targets) == list(range(1, 10))
    assert [rows for _, rows in score.calls] == [[0, 1], [2]]
    assert score.calls[0][0] == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]
    assert score.calls[1][0] == [[8, 9]]


@pytest.mark.parametrize("n, context, batch_size", [(2, 4, 1), (17, 4, 3), (33, 5, 2),
                                                    (64, 8, 4), (65, 8, 16)])
def test_every_target_scored_exactly_once(n, context, batch_size):
    tokens = np.arange(100, 100 + n, dtype=np.uint16)
    score = RecordingScorer()
    nll, count = stream_nll(score, tokens, context, batch_size)
    assert sorted(score.targets) == list(range(101, 100 + n))
    assert count == n - 1
    assert nll == pytest.approx(sum(range(101, 100 + n)) / 10)
    blocks = stream_blocks(tokens, context)
    for ids, rows in score.calls:  # rows name the blocks the scorer got
        assert ids == [blocks[r].tolist() for r in rows]


def test_nothing_scored_on_a_one_token_stream():
    score = RecordingScorer()
    assert stream_nll(score, np.array([5]), 4, 2) == (0.0, 0)
    assert score.calls == []


# --------------------------------------------------------------------------- metrics

def test_metrics_from_known_numbers():
    out = metrics(nll=9 * LN2, tokens=9, nbytes=18)
    assert out["perplexity"] == pytest.approx(2.0)
    assert out["bits_per_byte"] == pytest.approx(0.5)  # 9 bits over 18 bytes
    assert (out["nll"], out["tokens"], out["bytes"]) == (9 * LN2, 9, 18)


def test_metrics_uniform_over_a_vocabulary():
    """A uniform model over 256 symbols: perplexity 256, 8 bits a token; 2 bytes a token."""
    nll = 100 * math.log(256)
    out = metrics(nll, tokens=100, nbytes=200)
    assert out["perplexity"] == pytest.approx(256.0)
    assert out["bits_per_byte"] == pytest.approx(4.0)


# --------------------------------------------------------------------------- Shard.head

@pytest.fixture
def shard(tmp_path) -> Shard:
    """Three documents (EOS = 0) of 3, 2 and 4 tokens and 4, 2 and 6 bytes: ends 3, 5, 9."""
    path = tmp_path / "en.test.bin"
    docs = [np.array([5, 6, 0]), np.array([7, 0]), np.array([8, 9, 10, 0])]
    stats = write_tokens(path, docs, [4, 2, 6], "uint16")
    assert stats == {"tokens": 9, "bytes": 12, "docs": 3, "dtype": "uint16"}
    return Shard(path, "uint16")


def test_shard_index(shard):
    assert shard.documents.tolist() == [[3, 4], [5, 2], [9, 6]]
    docs, sizes = shard.split_documents()
    assert [d.tolist() for d in docs] == [[5, 6, 0], [7, 0], [8, 9, 10, 0]]
    assert sizes.tolist() == [4, 2, 6]


@pytest.mark.parametrize("max_tokens, n_tokens, n_bytes", [
    (None, 9, 12), (100, 9, 12), (9, 9, 12),  # everything
    (8, 5, 6), (5, 5, 6),                      # the first two documents
    (4, 3, 4), (3, 3, 4),                      # the first document
])
def test_head_keeps_whole_documents(shard, max_tokens, n_tokens, n_bytes):
    tokens, nbytes = shard.head(max_tokens)
    assert tokens.tolist() == [5, 6, 0, 7, 0, 8, 9, 10, 0][:n_tokens]
    assert nbytes == n_bytes


@pytest.mark.parametrize("max_tokens", [0, 1, 2])
def test_head_keeps_at_least_the_first_document(shard, max_tokens):
    """Below the first document's length the head is that document (over the cap), never
    an empty stream."""
    tokens, nbytes = shard.head(max_tokens)
    assert tokens.tolist() == [5, 6, 0] and nbytes == 4


def test_head_of_an_empty_shard(tmp_path):
    """A split with no documents is a 0-byte shard (numpy cannot memory-map it): it reads
    as an empty stream."""
    path = tmp_path / "empty.bin"
    assert write_tokens(path, [], [], "uint16")["docs"] == 0
    shard = Shard(path, "uint16")
    tokens, nbytes = shard.head(None)
    assert tokens.size == 0 and tokens.dtype == np.uint16 and nbytes == 0
    docs, doc_bytes = shard.split_documents()
    assert docs == [] and len(doc_bytes) == 0


class WordTokenizer:
    """Word-level: a word's id is its length (1..99); EOS is 0."""

    eos_token_id = 0

    def __len__(self) -> int:
        return 100

    def __call__(self, docs, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [[len(w) for w in doc.split()] for doc in docs]}


def test_bytes_count_the_document_separator(tmp_path: Path):
    """'héllo wörld' is 13 UTF-8 bytes + 1 newline, 'ab' 2 + 1: 17 bytes in all."""
    path = tmp_path / "de.test.bin"
    stats = write_shard(path, WordTokenizer(), ["héllo wörld", "ab"])
    assert stats == {"tokens": 5, "bytes": 17, "docs": 2, "dtype": "uint16"}
    shard = Shard(path, "uint16")
    assert shard.documents.tolist() == [[3, 14], [5, 3]]
    tokens, nbytes = shard.head(None)
    assert tokens.tolist() == [5, 5, 0, 2, 0] and nbytes == 17
    head, head_bytes = shard.head(4)
    assert head.tolist() == [5, 5, 0] and head_bytes == 14


def test_shard_to_bits_per_byte(tmp_path: Path):
    """A model that gives every target probability 1/2: 4 targets (the first token is
    context only) cost 4 bits over the 17 bytes of the text; perplexity 2."""
    path = tmp_path / "de.test.bin"
    write_shard(path, WordTokenizer(), ["héllo wörld", "ab"])
    tokens, nbytes = Shard(path, "uint16").head(None)

    def half(ids, rows):
        return torch.full((ids.shape[0], ids.shape[1] - 1), -LN2)

    nll, count = stream_nll(half, tokens, context=2, batch_size=4)
    out = metrics(nll, count, nbytes)
    assert count == 4 and nll == pytest.approx(4 * LN2)
    assert out["perplexity"] == pytest.approx(2.0)
    assert out["bits_per_byte"] == pytest.approx(4 / 17)
