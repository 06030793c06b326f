"""The MoE router: initialised from the languages, then (optionally) tuned on mixed text.

**Initialisation.** mergekit-moe's "hidden" gates set each expert's router row to the
mean hidden state of a few prompts written for that expert. An x-ELM expert is defined
by its languages, so the prompts here are those languages' validation text, and the
hidden state is the one the router actually reads: the input of layer ``i``'s MoE block
(after the post-attention norm). It is collected with every layer *forced* to the
expert itself (:func:`~xelm.export.moe.forced_routing`), i.e. the hidden states the MoE
produces on that text when it routes as x-ELM top-1 would. For each layer two row sets
are tried on the collected states -- the plain means, and the means as unit vectors
(a cosine router, blind to hidden-state norm) -- each centred (a shift common to all
rows changes no routing decision) and scaled by the factor that minimises the
cross-entropy of the true expert; the one that routes more tokens to their own expert
wins. One row per expert is one direction, but an expert of several languages has
several clusters of hidden states, so the rows are then refined by a logistic regression
of the expert on the states (started from the means), kept only where that routes a
held-out fifth of the states at least as well. Choice and held-out accuracy per layer
are reported.

**Tuning** (BTX's router training). The LM loss on the run's mixed training data,
sampled as the dense model was (language weights ∝ share^alpha), trains the routers only
(``what="router"``) or every parameter (``"all"``, as BTX). Mixtral renormalises the
top-k weights, so with one expert per token the weight is always 1 and the router gets
no gradient: tuning always routes to at least two experts per token; the tuned router
then serves any number.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from torch import Tensor

from xelm.export.moe import ExportError, forced_routing, set_experts_per_token, set_gates, sparse_blocks

TUNE_CHOICES = ("router", "all")


def _batches(blocks: Tensor, batch_size: int):
    for start in range(0, len(blocks), batch_size):
        yield blocks[start:start + batch_size]


@torch.no_grad()
def collect_mlp_inputs(model, blocks_by_expert: Sequence[Tensor], batch_size: int = 16,
                       keep_per_expert: int = 4096, seed: int = 0
                       ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Per layer and expert the mean MoE-block input over that expert's blocks (routed to
    it alone): ``means [layers, experts, hidden]``; and per layer a random sample of about
    ``keep_per_expert`` token states per expert with their expert labels ``(X, y)``."""
    blocks = sparse_blocks(model)
    n_layers, n_experts = len(blocks), len(blocks_by_expert)
    hidden = model.config.hidden_size
    sums = torch.zeros(n_layers, n_experts, hidden, dtype=torch.float64)
    counts = torch.zeros(n_experts, dtype=torch.float64)
    samples: list[list[Tensor]] = [[] for _ in range(n_layers)]
    labels: list[Tensor] = []
    gen = torch.Generator().manual_seed(seed)
    current: dict[str, object] = {}

    def grab(layer: int):
        def hook(module, args):
            h = args[0].detach().reshape(-1, hidden).float().cpu()
            sums[layer, current["expert"]] += h.double().sum(0)
            samples[layer].append(h[current["keep"]])
        return hook

    handles = [b.register_forward_pre_hook(grab(i)) for i, b in enumerate(blocks)]
    try:
        for e, ids in enumerate(blocks_by_expert):
            if not len(ids):
                raise ExportError(f"expert {e} has no validation text to initialise its router")
            p = min(1.0, keep_per_expert / ids.numel())
            with forced_routing(model, e):
                for batch in _batches(ids, batch_size):
                    current["expert"] = e
                    current["keep"] = torch.rand(batch.numel(), generator=gen) < p
                    model(input_ids=batch, use_cache=False)
                    labels.append(torch.full((int(current["keep"].sum()),), e))
                    counts[e] += batch.numel()
    finally:
        for handle in handles:
            handle.remove()
    means = (sums / counts[None, :, None]).float()
    y = torch.cat(labels)
    return means, [(torch.cat(s), y) for s in samples]


def _fit_scale(logits: Tensor, y: Tensor) -> tuple[float, float]:
    """The factor ``s`` minimising the cross-entropy of ``s * logits`` (a log grid)."""
    base = 1.0 / max(float(logits.std()), 1e-8)
    best = (math.inf, base)
    for power in torch.linspace(-8, 8, 65).tolist():
        s = base * 2.0 ** power
        ce = float(torch.nn.functional.cross_entropy(s * logits, y))
        best = min(best, (ce, s))
    return best[1], best[0]


def _refine(x: Tensor, y: Tensor, rows: Tensor, steps: int = 200, lr: float = 0.05,
            l2: float = 1e-4) -> Tensor:
    """Multinomial logistic regression of the expert label on the hidden state, started
    from ``rows`` (full-batch Adam): one row per expert can only be one direction, and an
    expert of several languages has several clusters of hidden states."""
    w = rows.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr * float(rows.abs().mean().clamp_min(1e-3)))
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(x @ w.T, y) + l2 * w.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach()


def _accuracy(x: Tensor, y: Tensor, rows: Tensor) -> float:
    return float(((x @ rows.T).argmax(-1) == y).float().mean()) if len(y) else float("nan")


def _from_means(mu: Tensor, x: Tensor, y: Tensor) -> tuple[str, Tensor]:
    """The better of the plain and the unit-length means, centred and scaled."""
    unit = mu / mu.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    tried = {}
    for kind, rows in (("mean", mu), ("direction", unit)):
        rows = rows - rows.mean(0, keepdim=True)
        logits = x @ rows.T
        scale, ce = _fit_scale(logits, y)
        tried[kind] = ((_accuracy(x, y, rows), -ce), scale * rows)
    kind = max(tried, key=lambda name: tried[name][0])
    return kind, tried[kind][1]


def fit_gates(means: Tensor, samples: list[tuple[Tensor, Tensor]], seed: int = 0,
              refine: bool = True) -> tuple[list[Tensor], list[dict]]:
    """Router rows per layer from the experts' mean hidden states (see module doc); with
    ``refine`` then fitted to the labelled states, kept only if that routes a held-out
    fifth of them at least as well. ``accuracy`` is measured on that held-out fifth."""
    gates, stats = [], []
    for layer, (x, y) in enumerate(samples):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + layer))
        held, fit = order[: len(y) // 5], order[len(y) // 5:]
        kind, rows = _from_means(means[layer], x[fit], y[fit])
        from_means = _accuracy(x[held], y[held], rows)
        accuracy = from_means
        if refine:
            refined = _refine(x[fit], y[fit], rows)
            if _accuracy(x[held], y[held], refined) >= from_means:
                kind, rows = kind + "+fit", refined
                accuracy = _accuracy(x[held], y[held], refined)
        gates.append(rows)
        stats.append({"layer": layer, "rows": kind, "accuracy": accuracy,
                      "accuracy_means": from_means, "tokens": int(len(y)),
                      "held_out": int(len(held))})
    return gates, stats


def init_router(model, blocks_by_expert: Sequence[Tensor], batch_size: int = 16,
                keep_per_expert: int = 4096, seed: int = 0) -> list[dict]:
    """Set every layer's router from the experts' validation text; per-layer statistics
    (``accuracy``: share of sampled tokens the router sends to their own expert)."""
    means, samples = collect_mlp_inputs(model, blocks_by_expert, batch_size,
                                        keep_per_expert, seed)
    gates, stats = fit_gates(means, samples, seed=seed)
    set_gates(model, gates)
    return stats


@torch.no_grad()
def mean_nll(model, blocks: Tensor, batch_size: int = 16) -> float:
    """Mean next-token negative log-likelihood (nats) over ``blocks`` ``[n, L]``."""
    from xelm.infer.mixture import target_logprobs

    total, count = 0.0, 0
    for batch in _batches(blocks, batch_size):
        lp = target_logprobs(model, batch)
        total -= float(lp.double().sum())
        count += lp.numel()
    return total / max(count, 1)


def _trainable(model, what: str) -> list:
    if what not in TUNE_CHOICES:
        raise ExportError(f"--tune must be one of {TUNE_CHOICES}, got {what!r}")
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(what == "all" or name.endswith("mlp.gate.weight"))
        if p.requires_grad:
            params.append(p)
    return params


def tune_router(model, batch_at: Callable[[int], Tensor], steps: int, *, what: str = "router",
                lr: float = 3e-3, grad_clip: float = 1.0, warmup_fraction: float = 0.05,
                min_lr_ratio: float = 0.1, log_every: int = 0) -> dict:
    """Train the routers (or everything) for ``steps`` batches of ``batch_at(step)``
    ``[B, L]`` token ids with the LM loss; returns the losses seen and the time taken.

    Runs with ``max(2, experts per token)`` experts per token (see module doc) and
    restores the model's own setting afterwards; AdamW with linear warm-up and cosine
    decay (``xelm.train.loop.lr_at``)."""
    from xelm.train.loop import lr_at

    n_experts = model.config.num_local_experts
    if n_experts < 2:
        raise ExportError("router tuning needs at least two experts")
    if steps < 1:
        raise ExportError("router tuning needs at least one batch of tokens")
    k_serve = model.config.num_experts_per_tok
    params = _trainable(model, what)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = SimpleNamespace(lr=lr, warmup_fraction=warmup_fraction, min_lr_ratio=min_lr_ratio)
    set_experts_per_token(model, max(2, k_serve))
    losses, start = [], time.perf_counter()
    model.train()
    try:
        with torch.enable_grad():
            for step in range(steps):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, steps, schedule)
                batch = batch_at(step)
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                if log_every and (step + 1) % log_every == 0:
                    import logging

                    logging.getLogger("xelm").info("router tuning %d/%d: loss %.4f",
                                                   step + 1, steps, losses[-1])
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        set_experts_per_token(model, k_serve)
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": steps, "what": what, "lr": lr, "train_experts_per_token": max(2, k_serve),
            "loss_first": sum(head) / len(head), "loss_last": sum(tail) / len(tail),
            "seconds": round(time.perf_counter() - start, 2)}
