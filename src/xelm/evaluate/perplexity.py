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
