"""Routers: small objects that turn context into log-weights over experts.

Every router answers two questions, in log space (weights of 0 are ``-inf``, so mixing
stays a ``logsumexp`` and never adds raw probabilities):

* :meth:`Router.support` -- before any expert runs: which (expert, sequence) pairs can
  get non-zero weight. Scoring runs an expert only on the rows it supports, so top-1
  routing costs one forward pass, not k.
* :meth:`Router.log_weights` -- given ``expert_logprobs[k, B, T]``, each expert's
  log-probability of each target token, the normalised log-weights ``[k, B, T]`` used to
  predict target ``t``. A weight for target ``t`` may use only targets ``< t`` (the prefix),
  never target ``t`` itself, so the mixture is a proper causal language model.

Shapes: ``k`` experts, ``B`` sequences, ``T`` targets (``input_ids.shape[1] - 1``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

NEG_INF = float("-inf")


def normalise_log(log_w: Tensor, dim: int = 0) -> Tensor:
    """Shift log-weights so their ``exp`` sums to 1 along ``dim``.

    The largest weight is moved to 0 first: ``x - logsumexp(x)`` at ``x ~ -1e10`` would
    lose ``log k`` to rounding (two equal weights came out as 1 each)."""
    peak = log_w.amax(dim=dim, keepdim=True)
    shifted = log_w - torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    return shifted - torch.logsumexp(shifted, dim=dim, keepdim=True)


def top_k_log(log_w: Tensor, top_k: int | None, dim: int = 0) -> Tensor:
    """Keep exactly the ``top_k`` largest weights along ``dim`` (others -> -inf; ties go
    to the lower index), renormalised."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_k is None or top_k >= log_w.shape[dim]:
        return normalise_log(log_w, dim)
    # stable sort: among equal weights the lower expert index wins, on every device
    order = log_w.sort(dim=dim, descending=True, stable=True).indices.narrow(dim, 0, top_k)
    keep = torch.zeros_like(log_w, dtype=torch.bool).scatter_(dim, order, True)
    return normalise_log(log_w.masked_fill(~keep, NEG_INF), dim)


def as_log_prior(prior: Sequence[float] | Tensor | None, k: int) -> Tensor:
    """Normalised log-prior ``[k]`` from non-negative weights (None: uniform)."""
    if prior is None:
        return torch.full((k,), -torch.log(torch.tensor(float(k))).item())
    weights = torch.as_tensor(prior, dtype=torch.float64).flatten()
    if weights.numel() != k:
        raise ValueError(f"prior has {weights.numel()} weights for {k} experts")
    if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"prior weights must be finite, >= 0 and not all 0: {weights.tolist()}")
    return normalise_log(weights.log()).float()


class Router:
    """Base class: uniform weights over all experts. Subclasses override what differs.

    ``static`` routers' weights do not depend on ``expert_logprobs`` (they may be called
    with any tensor of the right shape), which lets scoring stream over experts.
    """

    static = True

    def support(self, k: int, batch: int) -> Tensor:
        """Bool ``[k, B]``: True where expert ``e`` may get weight on sequence ``b``."""
        return torch.ones(k, batch, dtype=torch.bool)

    def log_weights(self, expert_logprobs: Tensor, **ctx) -> Tensor:
        """Normalised log-weights ``[k, B, T]`` (``ctx`` may hold ``mask`` ``[B, T]``)."""
        k = expert_logprobs.shape[0]
        return torch.full_like(expert_logprobs, -torch.log(torch.tensor(float(k))).item())


class Uniform(Router):
    """Equal weight on every expert (the plain ensemble)."""


class TopOne(Router):
    """All weight on one expert, e.g. the one trained on the sequence's language."""

    def __init__(self, expert: int):
        self.expert = int(expert)

    def support(self, k: int, batch: int) -> Tensor:
        if not 0 <= self.expert < k:
            raise ValueError(f"expert index {self.expert} out of range for {k} experts")
        mask = torch.zeros(k, batch, dtype=torch.bool)
        mask[self.expert] = True
        return mask

    def log_weights(self, expert_logprobs: Tensor, **ctx) -> Tensor:
        log_w = torch.full_like(expert_logprobs, NEG_INF)
        log_w[self.expert] = 0.0
        return log_w


class Fixed(Router):
    """Weights given per sequence before scoring (TF-IDF routing, a cached prior).

    ``log_weights`` is ``[k, B]`` (or ``[k]``, shared by all sequences) in log space;
    use :meth:`from_weights` for plain non-negative weights. Experts whose weight is 0
    for a sequence are not run on it.
    """

    def __init__(self, log_weights: Tensor, top_k: int | None = None):
        log_w = torch.as_tensor(log_weights, dtype=torch.float32)
        if log_w.dim() == 1:
            log_w = log_w[:, None]
        if log_w.dim() != 2 or torch.isnan(log_w).any() or (log_w == float("inf")).any():
            raise ValueError(f"Fixed expects finite or -inf log-weights [k, B], "
                             f"got {tuple(log_w.shape)}")
        if not (log_w > NEG_INF).any(0).all():
            raise ValueError("every sequence needs a non-zero weight on some expert")
        self.table = top_k_log(log_w, top_k)

    @classmethod
    def from_weights(cls, weights, top_k: int | None = None) -> "Fixed":
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if (weights < 0).any() or not torch.isfinite(weights).all():
            raise ValueError("weights must be finite and >= 0")
        return cls(weights.log(), top_k=top_k)

    def _table(self, k: int, batch: int) -> Tensor:
        if self.table.shape[0] != k or self.table.shape[1] not in (1, batch):
            raise ValueError(f"fixed weights have shape {tuple(self.table.shape)}, "
                             f"expected [{k}, {batch}] or [{k}, 1]")
        return self.table.expand(k, batch)

    def support(self, k: int, batch: int) -> Tensor:
        return self._table(k, batch) > NEG_INF

    def log_weights(self, expert_logprobs: Tensor, **ctx) -> Tensor:
        k, batch, steps = expert_logprobs.shape
        table = self._table(k, batch).to(expert_logprobs)
        return table[:, :, None].expand(k, batch, steps).clone()


class Posterior(Router):
    """BTM's Bayesian posterior: ``w_e(t) ∝ prior(e) · p_e(x_<t)``.

    ``p_e(x_<t)`` is the expert's own likelihood of the prefix (targets ``0..t-1``), an
    exclusive cumulative sum of its log-probs, so all T weights cost O(k·B·T). Masked
    targets (``mask`` False, e.g. padding) do not count as evidence. ``prior`` is k
    non-negative weights (None: uniform); experts with prior 0 are never run.
    ``top_k`` keeps the k most likely experts at each position, renormalised.
    """

    static = False

    def __init__(self, prior: Sequence[float] | Tensor | None = None, top_k: int | None = None):
        self.prior = prior
        self.top_k = top_k
        self.table: Tensor | None = None

    @classmethod
    def per_sequence(cls, log_prior: Tensor, top_k: int | None = None) -> "Posterior":
        """A posterior whose prior differs per sequence: ``log_prior`` is ``[k, B]`` log
        weights (e.g. each sequence's posterior after the text before it)."""
        table = torch.as_tensor(log_prior, dtype=torch.float32)
        if table.dim() != 2 or torch.isnan(table).any() or (table == float("inf")).any():
            raise ValueError(f"per-sequence log prior must be finite or -inf [k, B], got "
                             f"{tuple(table.shape)}")
        router = cls(top_k=top_k)
        router.table = normalise_log(table)
        return router

    def _log_prior(self, k: int, batch: int) -> Tensor:
        """``[k, B]`` normalised log prior."""
        if self.table is None:
            return as_log_prior(self.prior, k)[:, None].expand(k, batch)
        if self.table.shape != (k, batch):
            raise ValueError(f"per-sequence prior has shape {tuple(self.table.shape)}, "
                             f"expected [{k}, {batch}]")
        return self.table

    def support(self, k: int, batch: int) -> Tensor:
        return (self._log_prior(k, batch) > NEG_INF).clone()

    def log_weights(self, expert_logprobs: Tensor, *, mask: Tensor | None = None, **ctx) -> Tensor:
        k, batch = expert_logprobs.shape[:2]
        log_prior = self._log_prior(k, batch).to(expert_logprobs.device, torch.float64)
        evidence = expert_logprobs.double()
        if mask is not None:
            evidence = evidence.masked_fill(~mask.bool().to(evidence.device), 0.0)
        # Experts outside the prior's support were not run: their log-probs are filler.
        evidence = evidence.masked_fill((log_prior == NEG_INF)[:, :, None], 0.0)
        prefix = torch.zeros_like(evidence)
        prefix[..., 1:] = evidence[..., :-1].cumsum(-1)
        log_w = log_prior[:, :, None] + prefix
        total = torch.logsumexp(log_w, dim=0, keepdim=True)
        # Every expert gave the prefix probability 0: fall back to the prior.
        log_w = torch.where(torch.isfinite(total), log_w - total,
                            log_prior[:, :, None].expand_as(log_w))
        return top_k_log(log_w, self.top_k).to(expert_logprobs.dtype)


def tfidf_log_weights(distances: Tensor, temperature: float = 0.1,
                      top_k: int | None = None) -> Tensor:
    """c-BTM routing: ``softmax(-d² / T)`` over cluster-centre distances.

    ``distances`` is ``[B, k]`` (each sequence's distance to each expert's centre);
    returns log-weights ``[k, B]`` for :class:`Fixed`, top-k renormalised.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    d = torch.as_tensor(distances, dtype=torch.float32)
    if d.dim() != 2:
        raise ValueError(f"distances must be [B, k], got shape {tuple(d.shape)}")
    # squared in float64: a float32 square can underflow to 0 (e.g. 1e-30) and tie the
    # nearest centre with a farther one, which top-k may then drop
    return top_k_log(-(d.T.double() ** 2) / temperature, top_k).float()


def estimate_prior(expert_logprobs: Tensor, mask: Tensor | None = None) -> Tensor:
    """BTM's "cached prior": the mean end-of-sequence posterior (uniform prior) over a
    batch of held-out sequences; returns k weights summing to 1."""
    evidence = expert_logprobs.double()
    if mask is not None:
        evidence = evidence.masked_fill(~mask.bool(), 0.0)
    return torch.softmax(evidence.sum(-1), dim=0).mean(-1).float()


def langid_experts(expert_set, texts: list[str]) -> list[str | None]:
    """Language-ID routing, the one implementation (``top1_langid`` in evaluation,
    generation and the lm-eval model): the expert of the language lingua detects in each
    text among the set's languages, or None where none is detected."""
    from xelm.data.langid import detector_for

    detector = detector_for(tuple(sorted(expert_set.language_to_expert)))
    return [None if lang is None else expert_set.expert_for_language(lang)
            for lang in detector.detect(texts)]
