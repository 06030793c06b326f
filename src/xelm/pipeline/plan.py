"""``xelm plan CONFIG`` / ``xelm run CONFIG --dry-run``: what a run will do, before compute.

Nothing is trained and no run directory is created. For every training job (seed, dense,
each expert; each HMR round) the plan gives steps, tokens, parameters, FLOPs (the same
``6·N·tokens`` + attention count the training loop records), an estimate of peak memory,
tokens per parameter and an estimated wall time from a few training steps of the model's
real shape measured on this machine (``measure=False`` skips them). The token budgets come
from the functions the train stage uses, so they equal what a real run records.

It warns when the run sits where BENCHMARKS.md's regime map found no gain for the experts
(below ~13 total training tokens per parameter).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from xelm.config import Config
from xelm.io import read_json

from xelm.pipeline import STAGES, done
from xelm.rundir import TRAIN_STATE, RunDir
from xelm.train.budget import REGIME_MIN_TOKENS_PER_PARAMETER


def _hf_config(cfg: Config, root: Path | None):
    from transformers import AutoConfig

    if cfg.model.base:
        return AutoConfig.from_pretrained(cfg.model.base,
                                          trust_remote_code=cfg.model.trust_remote_code)
    from xelm.train.jobs import model_config

    prepared = RunDir(root).prepare_json if root is not None else None
    vocab = (read_json(prepared)["vocab_size"] if prepared is not None and prepared.is_file()
             else cfg.tokenizer.vocab_size)
    special = SimpleNamespace(eos_token_id=0, pad_token_id=1)  # ids do not change the shape
    return AutoConfig.for_model(**model_config(cfg, vocab, special))


def _shape(cfg: Config, root: Path | None) -> dict:
    """Parameters and training FLOPs per token of the model, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from xelm.train.loop import train_flops_per_token

    hf = _hf_config(cfg, root)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_token": train_flops_per_token(model, cfg.model.context), "config": hf}


def peak_memory_bytes(parameters: int, hf, batch: int, context: int, micro_batches: int = 1,
                      checkpointing: bool = False) -> int:
    """Training memory in fp32 with AdamW: weights, gradients and two moments (16 bytes a
    parameter); AdamW's temporaries while it updates the largest tensor, the embedding (two
    fp32 copies of vocab x d); the activations one micro-batch (``batch / micro_batches``
    sequences, ``train.grad_accum_steps``) keeps for the backward pass: about 34·d + 5·h·T
    bytes per token and layer, doubled for fp32, or with ``checkpointing`` only each layer's
    input (4·d bytes per token and layer) plus one layer's full set while it is recomputed;
    the micro-batch's logits, their log-softmax and gradient (3 x 4 bytes per token and
    vocabulary entry); and the process itself (torch and the libraries, about 0.5 GB)."""
    d = getattr(hf, "hidden_size", None) or getattr(hf, "d_model", 0)
    layers = getattr(hf, "num_hidden_layers", None) or getattr(hf, "num_layers", 0)
    heads = getattr(hf, "num_attention_heads", None) or getattr(hf, "attention_heads", 1)
    vocab = hf.vocab_size
    tokens = max(1, batch // max(1, micro_batches)) * context
    one_layer = 2 * tokens * (34 * d + 5 * heads * context)
    activations = layers * 4 * tokens * d + one_layer if checkpointing else layers * one_layer
    logits = 3 * 4 * tokens * vocab
    optimizer_temporaries = 2 * 4 * vocab * d
    return int(16 * parameters + optimizer_temporaries + activations + logits + 0.5 * 2**30)


def _measure_step_seconds(cfg: Config, hf, batch: int, steps: int = 3) -> float:
    """Seconds per optimizer step of the real model shape on this machine."""
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, hf.vocab_size, (batch, cfg.model.context + 1))
    times = []
    with torch.enable_grad():
        for _ in range(steps + 1):  # the first step warms up
            start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def _jobs(cfg: Config, root: Path | None) -> list[dict]:
    """Every training job with its budget, as the seed and train stages will plan it."""
    from xelm.train.jobs import training_plan

    jobs = []
    per_step = cfg.seed.batch_size * cfg.model.context
    if not cfg.model.base:
        jobs.append({"job": "seed", "round": 0, "languages": None,
                     "tokens": cfg.seed.tokens // per_step * per_step,
                     "batch_size": cfg.seed.batch_size, "folder": "seed"})
    rd = RunDir(root) if root is not None else None
    alloc = read_json(rd.allocation) if rd is not None and rd.allocation.is_file() else None
    info = read_json(rd.prepare_json) if alloc is not None else {"stats": {}}
    if alloc is not None or not cfg.hmr.rounds:
        if alloc is None:  # flat, not allocated yet: equal budgets until the groups exist
            k = cfg.allocate.experts
            alloc = {"experts": {f"e{i}": {"languages": []} for i in range(k)}}
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
                update={"expert_budget": "equal"})})
        plan = training_plan(cfg, alloc, info)
        experts = [(e.name, e.round, e.languages or None, e.tokens, e.path) for e in plan.experts]
    else:  # HMR before allocation: the budgets of each round, names not known yet
        from xelm.train.plan import per_expert_tokens

        step = cfg.train.batch_size * cfg.model.context
        experts = [(f"r{r}-e{i}", r, None,
                    per_expert_tokens(cfg.train.tokens, f, k, step, r), None)
                   for r, (k, f) in enumerate(zip(cfg.hmr.rounds, cfg.hmr.fractions()), 1)
                   for i in range(k)]
    dense = sum(e[3] for e in experts)  # the train stage's rule: exactly the experts' sum
    jobs.append({"job": "dense", "round": 1, "languages": None, "tokens": dense,
                 "batch_size": cfg.train.batch_size, "folder": "dense"})
    jobs += [{"job": name, "round": r, "languages": list(langs) if langs else None,
              "tokens": tokens, "batch_size": cfg.train.batch_size, "folder": path}
             for name, r, langs, tokens, path in experts]
    return jobs


def plan_run(cfg: Config, measure: bool = True) -> dict:
    """The plan of ``cfg``'s run (its ``out_dir`` is read if it exists, never written)."""
    root = Path(cfg.out_dir)
    root = root if RunDir(root).config_yaml.is_file() else None
    shape = _shape(cfg, root)
    params, hf = shape["parameters"], shape["config"]
    jobs = _jobs(cfg, root)
    seconds = {}
    if measure:
        for batch in sorted({j["batch_size"] for j in jobs}):
            seconds[batch] = _measure_step_seconds(cfg, hf, batch)
    for j in jobs:
        per_step = j["batch_size"] * cfg.model.context
        j["steps"] = j["tokens"] // per_step
        j["parameters"] = params
        j["flops"] = shape["flops_per_token"] * j["tokens"]
        j["peak_memory_bytes"] = peak_memory_bytes(
            params, hf, j["batch_size"], cfg.model.context,
            micro_batches=cfg.train.grad_accum_steps,
            checkpointing=cfg.train.gradient_checkpointing)
        j["tokens_per_parameter"] = j["tokens"] / params
        j["estimated_seconds"] = (j["steps"] * seconds[j["batch_size"]]) if measure else None
        state = root / j["folder"] / TRAIN_STATE if root and j["folder"] else None
        j["done"] = bool(state and state.is_file() and read_json(state).get("done"))
    seed_tokens = next((j["tokens"] for j in jobs if j["job"] == "seed"), 0)
    dense_tokens = next(j["tokens"] for j in jobs if j["job"] == "dense")
    total_tpp = (seed_tokens + dense_tokens) / params
    todo = [s for s in STAGES if root is None or not done(RunDir(root), s)]
    warning = None
    if total_tpp < REGIME_MIN_TOKENS_PER_PARAMETER:
        warning = (f"{total_tpp:.1f} total training tokens per parameter (seed + dense): below "
                   f"~{REGIME_MIN_TOKENS_PER_PARAMETER}, where BENCHMARKS.md's regime map "
                   "(bench/results/regime.png) found no mean gain for the experts over dense; "
                   "train the seed longer or use a smaller model")
    remaining = [j["estimated_seconds"] for j in jobs if not j["done"]]
    return {"out_dir": cfg.out_dir, "exists": root is not None, "stages_to_do": todo,
            "parameters": params, "jobs": jobs,
            "total_tokens_per_parameter": total_tpp, "regime_warning": warning,
            "seconds_per_step_measured": {str(b): s for b, s in seconds.items()} or None,
            "estimated_seconds_remaining": (sum(remaining) if measure else None),
            "note": "expert languages (and proportional budgets) are decided by `allocate`"
            if root is None or not RunDir(root).allocation.exists() else None}


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m = seconds / 60
    return f"{seconds:.0f} s" if m < 1 else f"{m:.1f} min" if m < 90 else f"{m / 60:.1f} h"


def format_plan(plan: dict) -> str:
    """The plan as the terminal shows it."""
    lines = [f"run directory: {plan['out_dir']}" + ("" if plan["exists"] else " (not created yet)"),
             f"stages to do: {', '.join(plan['stages_to_do']) or 'none'}",
             f"model: {_human(plan['parameters'])} parameters", "",
             f"{'job':<10}{'round':>6}{'steps':>9}{'tokens':>10}{'FLOPs':>10}{'peak mem':>10}"
             f"{'tok/param':>10}{'est. time':>11}  state / languages"]
    for j in plan["jobs"]:
        langs = " ".join(j["languages"]) if j["languages"] else ""
        lines.append(f"{j['job']:<10}{j['round']:>6}{j['steps']:>9,}{_human(j['tokens']):>10}"
                     f"{_human(j['flops']):>10}{_human(j['peak_memory_bytes'], 'B'):>10}"
                     f"{j['tokens_per_parameter']:>10.1f}{_duration(j['estimated_seconds']):>11}"
                     f"  {'done' if j['done'] else 'to do'} {langs}".rstrip())
    lines += ["", f"total training tokens per parameter (seed + dense): "
              f"{plan['total_tokens_per_parameter']:.1f}",
              f"estimated training time still to do: {_duration(plan['estimated_seconds_remaining'])}"
              " (measured steps of this model on this machine; evaluation not included)"]
    if plan["note"]:
        lines.append(plan["note"])
    if plan["regime_warning"]:
        lines.append(f"warning: {plan['regime_warning']}")
    return "\n".join(lines)

