"""Scoring text with a set of experts: per-expert log-probs, combined in log space.

Two ways to combine k experts with weights ``w`` (from a :mod:`~xelm.infer.routers`):

* mixture -- ``p(x) = Σ_e w_e p_e(x)``, computed as ``logsumexp_e(log w_e + log p_e(x))``.
  A target's mixture probability needs only each expert's probability *of that target*,
  so ensembles never hold k full-vocabulary tensors.
* product of experts -- ``p(x) ∝ Π_e p_e(x)^{w_e}``, a weighted geometric mean,
  renormalised over the vocabulary (so it does need full distributions).

Conventions: ``input_ids`` ``[B, L]``; targets are ``input_ids[:, 1:]`` (``T = L - 1``);
results are float32 on ``input_ids``'s device; targets masked out by ``attention_mask``
score 0.0, so per-sequence sums are log-likelihoods without further masking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from xelm.infer.routers import Fixed, Posterior, Router, TopOne, Uniform, langid_experts
from xelm.methods import GENERATE_METHODS, METHODS

NEG_INF = float("-inf")


# --------------------------------------------------------------- one expert's log-probs
def _logits(model, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    device = next(model.parameters()).device
    out = model(input_ids=input_ids.to(device), use_cache=False,
                attention_mask=None if attention_mask is None else attention_mask.to(device))
    return out.logits[:, :-1].float()


@torch.no_grad()
def expert_token_logprobs(model, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """``[B, T, V]`` log-softmax of the model's next-token logits (``T = L - 1``)."""
    return torch.log_softmax(_logits(model, input_ids, attention_mask), dim=-1).to(input_ids.device)


@torch.no_grad()
def target_logprobs(model, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                    return_full: bool = False):
    """``[B, T]`` log-prob of each target token; with ``return_full`` also ``[B, T, V]``.

    Gathers the target logit and subtracts the log-normaliser, so no full log-softmax
    tensor is materialised unless asked for.
    """
    logits = _logits(model, input_ids, attention_mask)
    targets = input_ids[:, 1:].to(logits.device)
    if return_full:
        full = torch.log_softmax(logits, dim=-1)
        picked = full.gather(-1, targets[..., None]).squeeze(-1)
        return picked.to(input_ids.device), full.to(input_ids.device)
    picked = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return picked.to(input_ids.device)


# --------------------------------------------------------------- combining distributions
def mixture_logprobs(full_logprobs: Tensor, log_weights: Tensor) -> Tensor:
    """``[B, T, V]`` log of ``Σ_e w_e p_e`` from ``[k, B, T, V]`` log-probs, ``[k, B, T]``
    log-weights (normalised). Stable for log-probs of any magnitude."""
    return torch.logsumexp(full_logprobs + log_weights[..., None], dim=0)


def _weighted_sum(log_probs: Tensor, weights: Tensor) -> Tensor:
    """``w · log p`` with zero-weight terms exactly 0, even where ``log p`` is ``-inf``."""
    return torch.where(weights > 0, weights * log_probs, torch.zeros((), device=log_probs.device))


def product_of_experts(full_logprobs: Tensor, log_weights: Tensor) -> Tensor:
    """``[B, T, V]`` log of the renormalised weighted geometric mean ``Π_e p_e^{w_e}``."""
    weights = log_weights.exp()[..., None]
    return torch.log_softmax(_weighted_sum(full_logprobs, weights).sum(0), dim=-1)


# --------------------------------------------------------------- scoring with a router
def _run_supported(models: Sequence[Any], input_ids: Tensor, attention_mask: Tensor | None,
                   support: Tensor, output: str):
    """Yield ``(e, rows, result)`` for every expert with support, run only on its supported
    rows (``rows`` None: all rows). ``output``: "targets" (``[b, T]`` target log-probs),
    "full" (those and ``[b, T, V]`` log-probs) or "logits" (``[b, T, V]``)."""
    for e in support.any(dim=1).nonzero().flatten().tolist():
        rows = None if support[e].all() else support[e].nonzero().flatten().to(input_ids.device)
        ids = input_ids if rows is None else input_ids[rows]
        mask = attention_mask if rows is None or attention_mask is None else attention_mask[rows]
        if output == "logits":
            yield e, rows, _logits(models[e], ids, mask).to(input_ids.device)
        else:
            yield e, rows, target_logprobs(models[e], ids, mask, return_full=output == "full")


def _place(dest: Tensor, rows: Tensor | None, value: Tensor) -> None:
    if rows is None:
        dest.copy_(value)
    else:
        dest[rows] = value


@torch.no_grad()
def score_with_router(models: Sequence[Any], input_ids: Tensor, router: Router, *,
                      combine: str = "mixture", attention_mask: Tensor | None = None) -> Tensor:
    """``[B, T]`` log-prob of each target under ``router``'s weighting of ``models``.

    ``combine`` is ``"mixture"`` or ``"product"``. An expert runs only on the sequences
    where ``router.support`` allows it weight; others are never run.
    """
    if combine not in ("mixture", "product"):
        raise ValueError(f"combine must be 'mixture' or 'product', got {combine!r}")
    k, (batch, length) = len(models), input_ids.shape
    if length < 2:
        raise ValueError("input_ids needs at least 2 tokens per sequence (one target)")
    support = router.support(k, batch).cpu()
    mask = None if attention_mask is None else attention_mask[:, 1:].bool().to(input_ids.device)
    target_lp = torch.zeros(k, batch, length - 1, device=input_ids.device)
    if combine == "mixture":
        for e, rows, lp in _run_supported(models, input_ids, attention_mask, support, "targets"):
            _place(target_lp[e], rows, lp)
        log_w = router.log_weights(target_lp, mask=mask)
        scores = torch.logsumexp(log_w + target_lp, dim=0)
    else:
        scores = _product_scores(models, input_ids, attention_mask, router, support, mask)
    return scores if mask is None else scores.masked_fill(~mask, 0.0)


def _product_scores(models, input_ids, attention_mask, router, support, mask) -> Tensor:
    """Product of experts; streams over experts when the router's weights are static."""
    k, batch, steps = len(models), input_ids.shape[0], input_ids.shape[1] - 1
    target_lp = torch.zeros(k, batch, steps, device=input_ids.device)
    if router.static:
        # Weights known up front: accumulate Σ_e w_e·logits_e one expert at a time. Each
        # expert's log-normaliser adds Σ_e w_e·lse_e, the same for every vocabulary entry,
        # which the final log_softmax removes: no per-expert softmax is needed.
        weights = router.log_weights(target_lp, mask=mask).exp()
        total = None
        for e, rows, logits in _run_supported(models, input_ids, attention_mask, support, "logits"):
            w = weights[e] if rows is None else weights[e][rows]
            term = _weighted_sum(logits, w[..., None])
            if total is None:
                total = torch.zeros(batch, steps, logits.shape[-1], device=input_ids.device)
            if rows is None:
                total.add_(term)
            else:
                total.index_add_(0, rows.to(total.device), term)
        log_p = torch.log_softmax(total, dim=-1)
    else:  # weights depend on the experts' own scores: keep every full distribution
        full_lp = None
        for e, rows, (lp, full) in _run_supported(models, input_ids, attention_mask, support,
                                                  "full"):
            _place(target_lp[e], rows, lp)
            if full_lp is None:
                full_lp = torch.zeros(k, batch, steps, full.shape[-1], device=input_ids.device)
            _place(full_lp[e], rows, full)
        log_p = product_of_experts(full_lp, router.log_weights(target_lp, mask=mask))
    return log_p.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


# --------------------------------------------------------------- named methods
@dataclass
class _Request:
    names: list[str]
    expert_set: Any
    lang: str | None
    expert: str | int | None
    top_k: int | None
    prior: Any
    text: str | None = None


def _prior_vector(req: _Request) -> list[float] | None:
    prior = req.prior
    if isinstance(prior, str) and prior == "manifest":
        prior = getattr(req.expert_set, "prior", None)
    if prior is None:
        return None
    if isinstance(prior, dict):
        unknown = sorted(set(prior) - set(req.names))
        if unknown:
            raise ValueError(f"prior names unknown experts {unknown}; experts are {req.names}")
        return [float(prior.get(name, 0.0)) for name in req.names]
    return [float(w) for w in prior]


def _index(req: _Request, name: str | int) -> int:
    if isinstance(name, int) and 0 <= name < len(req.names):
        return name
    if name in req.names:
        return req.names.index(name)
    raise ValueError(f"unknown expert {name!r}; experts are {', '.join(req.names)}")


def _top1(req: _Request) -> Router:
    if req.expert is not None:
        index = _index(req, req.expert)
    elif req.lang is not None and req.expert_set is not None:
        index = _index(req, req.expert_set.expert_for_language(req.lang))
    elif len(req.names) == 1:
        index = 0
    else:
        raise ValueError("method 'top1' needs lang= (with an ExpertSet) or expert= to pick "
                         "one of the experts " + ", ".join(req.names))
    return TopOne(index)


def _top1_langid(req: _Request) -> Router:
    """The expert of the language a language identifier detects in ``text``."""
    if req.expert_set is None or req.text is None:
        raise ValueError("method 'top1_langid' needs an ExpertSet and text= (the context "
                         "whose language picks the expert)")
    expert = langid_experts(req.expert_set, [req.text])[0]
    if expert is None:
        raise ValueError(f"no language detected in {req.text[:60]!r}; give lang= with "
                         "method 'top1', or use ensemble_posterior")
    return TopOne(_index(req, expert))


def _static(req: _Request) -> Router:
    prior = _prior_vector(req)
    if prior is None:
        if req.top_k is not None:
            raise ValueError("top_k with uniform weights would pick experts arbitrarily; "
                             "give a prior, or use ensemble_posterior")
        return Uniform()
    return Fixed.from_weights(prior, top_k=req.top_k)


# The router of each kind of routing of the registry (xelm.methods) that scores one
# request at a time; how the experts are then combined is the method's ``combine``.
ROUTERS: dict[str, Callable[[_Request], Router]] = {
    "label": _top1,
    "langid": _top1_langid,
    "prior": _static,
    "posterior": lambda req: Posterior(_prior_vector(req), req.top_k),
}


def _as_models(expert_set_or_models) -> tuple[list[str], list[Any], Any]:
    obj = expert_set_or_models
    if hasattr(obj, "models") and hasattr(obj, "names"):
        return list(obj.names), [obj.models[n] for n in obj.names], obj
    if isinstance(obj, dict):
        return list(obj), list(obj.values()), None
    if isinstance(obj, (list, tuple)):
        return [str(i) for i in range(len(obj))], list(obj), None
    return ["0"], [obj], None


def score_targets(expert_set_or_models, input_ids: Tensor, method: str, *,
                  lang: str | None = None, top_k: int | None = None, prior=None,
                  attention_mask: Tensor | None = None, expert: str | int | None = None,
                  text: str | None = None) -> Tensor:
    """``[B, T]`` log-prob of each target token under a named inference ``method``.

    ``expert_set_or_models``: an :class:`~xelm.experts.manifest.ExpertSet`, a dict
    ``{name: model}``, a list of models or one model. Methods:

    * ``top1`` -- only the expert of ``lang`` (or ``expert=`` name/index) runs.
    * ``top1_langid`` -- only the expert of the language detected in ``text`` runs
      (lingua; languages it knows only).
    * ``ensemble`` -- mixture with static weights: uniform, or ``prior``; ``top_k``
      keeps the ``top_k`` largest prior weights (experts at weight 0 are not run).
    * ``ensemble_posterior`` -- mixture weighted by BTM's posterior given the prefix.
    * ``product_of_experts`` -- weighted geometric mean with the ``ensemble`` weights.

    ``prior`` is ``{name: weight}`` (missing names weigh 0), k weights, ``"manifest"``
    (the ExpertSet's cached prior) or None (uniform).
    """
    models, router, combine = resolve_method(expert_set_or_models, method, lang=lang,
                                             expert=expert, top_k=top_k, prior=prior, text=text)
    return score_with_router(models, input_ids, router, combine=combine,
                             attention_mask=attention_mask)


def resolve_method(expert_set_or_models, method: str, *, lang: str | None = None,
                   expert: str | int | None = None, top_k: int | None = None, prior=None,
                   text: str | None = None) -> tuple[list[Any], Router, str]:
    """``(models, router, combine)`` for a named method (see :func:`score_targets`)."""
    if method not in GENERATE_METHODS:
        raise ValueError(f"unknown inference method {method!r}; choose from "
                         f"{sorted(GENERATE_METHODS)}")
    names, models, expert_set = _as_models(expert_set_or_models)
    spec = METHODS[method]
    router = ROUTERS[spec.route](_Request(names, expert_set, lang, expert, top_k, prior, text))
    return models, router, spec.combine
