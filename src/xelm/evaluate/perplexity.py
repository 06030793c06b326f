"""Per-language perplexity and bits per byte of any scorer on a token stream.

The test stream (whole documents, each ending in EOS) is cut into consecutive blocks of
``context + 1`` tokens that overlap by one, so every token but the first is predicted
exactly once, with up to ``context`` tokens of its own block as context. Perplexity is
per token of the shared tokenizer; bits per byte divide the same total negative
log-likelihood by the UTF-8 bytes of the text (one newline per document included), which
makes numbers comparable across tokenizers.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Scorer = Callable[["torch.Tensor", list], "torch.Tensor"]  # noqa: F821  ([B, L] ids, rows) -> [B, L-1]


def stream_blocks(tokens: np.ndarray, context: int) -> list[np.ndarray]:
    if len(tokens) < 2:
        return []
    starts = range(0, len(tokens) - 1, context)
    return [np.asarray(tokens[s:s + context + 1], dtype=np.int64) for s in starts]


def block_batches(blocks: list[np.ndarray], context: int, batch_size: int) -> list[list[int]]:
    """Indices of ``blocks`` in batches: full blocks ``batch_size`` at a time, then each
    shorter block on its own (blocks in a batch must have one length)."""
    full = [i for i, b in enumerate(blocks) if len(b) == context + 1]
    batches = [full[s:s + batch_size] for s in range(0, len(full), batch_size)]
    return batches + [[i] for i, b in enumerate(blocks) if len(b) != context + 1]


def stream_nll(score: Scorer, tokens: np.ndarray, context: int, batch_size: int) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of ``tokens[1:]`` and the count predicted.

    ``score(ids, rows)`` gets a batch of blocks and their indices in
    :func:`stream_blocks` order (routers that weight by preceding context need them).
    """
    import torch

    blocks = stream_blocks(tokens, context)
    nll, count = 0.0, 0
    for rows in block_batches(blocks, context, batch_size):
        logp = score(torch.from_numpy(np.stack([blocks[i] for i in rows])), rows)
        nll -= float(logp.double().sum())
        count += logp.numel()
    return nll, count


def metrics(nll: float, tokens: int, nbytes: int) -> dict[str, float]:
    return {"perplexity": math.exp(nll / tokens), "bits_per_byte": nll / math.log(2) / nbytes,
            "nll": nll, "tokens": tokens, "bytes": nbytes}


class DocumentError(ValueError):
    """Document boundaries that do not fit the token stream they describe."""


def stream_token_nll(score: Scorer, tokens: np.ndarray, context: int,
                     batch_size: int) -> np.ndarray:
    """The negative log-likelihood (nats, float64) of each of ``tokens[1:]``, scored in
    exactly the blocks and batches of :func:`stream_nll` (its sum is ``stream_nll``'s
    total): entry ``i`` is the NLL of ``tokens[i + 1]``."""
    import torch

    blocks = stream_blocks(tokens, context)
    out = np.zeros(max(len(tokens) - 1, 0), dtype=np.float64)
    for rows in block_batches(blocks, context, batch_size):
        logp = score(torch.from_numpy(np.stack([blocks[i] for i in rows])), rows)
        values = -logp.double().cpu().numpy()
        for j, r in enumerate(rows):  # block r predicts tokens r*context + 1 ...
            out[r * context: r * context + values.shape[1]] = values[j]
    return out


def document_of_positions(positions: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each stream position, the index of the document holding it (documents are
    consecutive, document ``j`` ending before ``ends[j]``)."""
    ends = np.asarray(ends, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    if len(ends) == 0 or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise DocumentError("document ends must be positive and strictly increasing, got "
                            f"{ends[:5].tolist()}{' ...' if len(ends) > 5 else ''}")
    if len(positions) and (positions.min() < 0 or positions.max() >= ends[-1]):
        raise DocumentError(f"positions {positions.min()}..{positions.max()} fall outside the "
                            f"{ends[-1]} tokens the documents cover")
    return np.searchsorted(ends, positions, side="right")


def document_nll(token_nll: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document: the summed NLL of its predicted tokens and how many were predicted.

    ``token_nll`` is :func:`stream_token_nll`'s output (entry ``i`` predicts position
    ``i + 1``); ``ends`` the documents' end offsets (``Shard.documents[:, 0]``), the last
    equal to the stream length. Every token but the stream's first belongs to exactly one
    document, so the sums add up to the stream's totals.
    """
    ends = np.asarray(ends, dtype=np.int64)
    if len(ends) and ends[-1] != len(token_nll) + 1:
        raise DocumentError(f"the documents cover {ends[-1]} tokens but the stream has "
                            f"{len(token_nll) + 1}")
    doc = document_of_positions(np.arange(1, len(token_nll) + 1), ends)
    nll = np.bincount(doc, weights=token_nll, minlength=len(ends))
    count = np.bincount(doc, minlength=len(ends)).astype(np.int64)
    return nll, count


def stream_document_ends(documents: np.ndarray, n_tokens: int) -> np.ndarray:
    """The end offsets of the documents that make up the first ``n_tokens`` tokens of a
    shard (``Shard.documents``; ``Shard.head`` cuts at a document end)."""
    ends = np.asarray(documents, dtype=np.int64).reshape(-1, 2)[:, 0]
    n = int(np.searchsorted(ends, n_tokens, side="right"))
    if n == 0 or ends[n - 1] != n_tokens:
        raise DocumentError(f"{n_tokens} tokens do not end at a document boundary of this "
                            "shard; take the stream from Shard.head")
    return ends[:n]
