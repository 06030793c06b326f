"""Text generation from an expert set, one token at a time, each expert with its own KV cache.

``top1`` needs no wrapper: it is the chosen expert's own ``model.generate()``, and
:func:`generate` hands it straight to HF. Every other method mixes k next-token
distributions, which HF ``generate()`` cannot do (it drives one model and one cache), so
this module runs its own small loop: each supported expert consumes the new token with
its cache, the router weights the experts exactly as in scoring (the BTM posterior sees
the prompt and everything generated so far), and the combined distribution is searched
greedily or sampled. Prompts in one batch must have equal length (no padding).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from xelm.infer.mixture import resolve_method
from xelm.infer.routers import Router


def _cache_argument(model) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; accept both."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _next_logprobs(model, ids: Tensor, cache) -> tuple[Tensor, Any, Tensor]:
    """Run ``ids`` through ``model`` with ``cache``; per-position log-probs ``[B, n, V]``."""
    device = next(model.parameters()).device
    name = _cache_argument(model)
    out = model(input_ids=ids.to(device), use_cache=True, **{name: cache})
    logp = torch.log_softmax(out.logits.float(), dim=-1).to(ids.device)
    return logp[:, -1], out[name], logp


class _ExpertStates:
    """Per-expert caches plus each expert's log-prob of every token seen so far."""

    def __init__(self, models: list, router: Router, batch: int):
        self.models = models
        self.router = router
        self.active = router.support(len(models), batch).any(dim=1).nonzero().flatten().tolist()
        self.caches: dict[int, Any] = {e: None for e in self.active}
        self.history: Tensor | None = None  # [k, B, t]: log p_e(token s+1 | tokens <= s)

    def step(self, new_ids: Tensor) -> Tensor:
        """Feed ``new_ids`` ``[B, n]``; return every expert's next-token log-probs ``[k, B, V]``."""
        k, batch = len(self.models), new_ids.shape[0]
        last, seen = None, None
        for e in self.active:
            nxt, self.caches[e], full = _next_logprobs(self.models[e], new_ids, self.caches[e])
            if last is None:
                last = torch.zeros(k, *nxt.shape, device=new_ids.device)
                seen = torch.zeros(k, batch, full.shape[1] - 1, device=new_ids.device)
            last[e] = nxt
            # within the chunk, each position's log-prob of the following token (prompt)
            seen[e] = full[:, :-1].gather(-1, new_ids[:, 1:, None]).squeeze(-1)
        self._append(seen)
        return last

    def _append(self, columns: Tensor) -> None:
        self.history = columns if self.history is None else torch.cat([self.history, columns], -1)

    def record(self, last: Tensor, token: Tensor) -> None:
        """Remember each expert's log-prob of the token just chosen."""
        self._append(last.gather(-1, token.view(1, -1, 1).expand(last.shape[0], -1, 1)))

    def log_weights(self) -> Tensor:
        """Router log-weights ``[k, B]`` for the next token, given the history."""
        k, batch, steps = self.history.shape
        padded = torch.cat([self.history, torch.zeros(k, batch, 1, device=self.history.device)], -1)
        return self.router.log_weights(padded)[..., -1]


def _choose(logp: Tensor, do_sample: bool, temperature: float, generator) -> Tensor:
    if not do_sample:
        return logp.argmax(dim=-1)
    probs = torch.softmax(logp / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(expert_set_or_models, input_ids: Tensor, method: str = "ensemble", *,
             lang: str | None = None, expert: str | int | None = None, prior=None,
             top_k: int | None = None, max_new_tokens: int = 32, do_sample: bool = False,
             temperature: float = 1.0, eos_token_id: int | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Continue ``input_ids`` ``[B, L]`` by up to ``max_new_tokens`` tokens; ``[B, L + n]``.

    ``method``/``lang``/``expert``/``prior``/``top_k`` mean what they mean in
    :func:`~xelm.infer.mixture.score_targets`. Sequences that emit ``eos_token_id`` are
    padded with it until every sequence has finished.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    models, router, combine = resolve_method(expert_set_or_models, method, lang=lang,
                                             expert=expert, top_k=top_k, prior=prior)
    states = _ExpertStates(models, router, input_ids.shape[0])
    last = states.step(input_ids)
    out, done = input_ids, torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        log_w = states.log_weights()[..., None]
        if combine == "mixture":
            logp = torch.logsumexp(log_w + last, dim=0)
        else:
            w = log_w.exp()
            logp = torch.log_softmax(torch.where(w > 0, w * last, 0.0).sum(0), dim=-1)
        token = _choose(logp, do_sample, temperature, generator)
        if eos_token_id is not None:
            token = token.masked_fill(done, eos_token_id)
            done |= token == eos_token_id
        out = torch.cat([out, token[:, None]], dim=1)
        if bool(done.all()):
            break
        states.record(last, token)
        last = states.step(token[:, None])
    return out


def generate_top1(expert_set, input_ids: Tensor, lang: str, **generate_kwargs) -> Tensor:
    """Top-1 generation is plain HF ``generate()`` on the language's expert."""
    model = expert_set.models[expert_set.expert_for_language(lang)]
    return model.generate(input_ids=input_ids, **generate_kwargs)

