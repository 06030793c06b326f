"""Train one causal LM on one mixture of token shards for a token budget.

The same loop trains the seed, the dense baseline and every expert; only the job differs
(where it starts, which shards it samples, how many tokens). It runs under `accelerate`
(one CPU process here; DDP and bf16 under ``accelerate launch``).

Resumable by construction: the global batch of step ``s`` (``batch_size`` x processes
rows) is drawn from an RNG seeded with ``(job seed, s)`` and each process takes its own
slice, so the data position is just the step and W processes of batch B see exactly the
rows of one process of batch W·B; a checkpoint holds the model, the optimizer state (both
safetensors), the torch RNG state and the step. A job killed at any moment restarts from
its last checkpoint and, on CPU with the same thread count, ends with bitwise the same
weights as an uninterrupted one.

Big models: ``grad_accum_steps`` splits each batch into equal micro-batches (same steps,
tokens and loss up to rounding; less activation memory); ``gradient_checkpointing``
recomputes layers in the backward pass; an FSDP accelerate config shards the model (on CPU
processes, where accelerate 1.x would use DDP, with FSDP2's ``fully_shard`` here).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xelm.io import read_json, write_json
from xelm.rundir import TRAIN_STATE
from xelm.train import checkpoint as ckpt

log = logging.getLogger(__name__)


class BudgetError(ValueError):
    """The token budget cannot buy a single optimizer step."""


class AccumulationError(ValueError):
    """The batch cannot be split into the requested number of equal micro-batches."""


@dataclass
class TrainJob:
    name: str
    out_dir: Path
    shards: list[tuple[Path, str]]          # (token file, dtype)
    weights: list[float]                    # sampling probability of each shard
    tokens: int
    seq_len: int
    batch_size: int
    lr: float
    seed: int
    init_dir: Path | None = None            # HF folder to branch from; None = fresh init
    model_config: dict = field(default_factory=dict)
    warmup_fraction: float = 0.02
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    save_every: int = 200
    log_every: int = 50
    precision: str = "fp32"
    tensorboard_dir: Path | None = None     # where trackers write (one folder per job)
    tokenizer_dir: Path | None = None
    report_to: str = "tensorboard"          # an accelerate tracker, or "none"
    valid_shards: list[tuple[Path, str]] = field(default_factory=list)
    valid_weights: list[float] = field(default_factory=list)
    eval_every: int | None = None           # validation loss every this many steps
    eval_blocks: int = 32                   # the fixed validation blocks scored each time
    grad_accum_steps: int = 1               # micro-batches per optimizer step (split batch_size)
    gradient_checkpointing: bool = False    # recompute activations in the backward pass

    def __post_init__(self):
        n = self.grad_accum_steps
        if not isinstance(n, int) or n < 1 or self.batch_size % n:
            raise AccumulationError(
                f"{self.name}: a batch of {self.batch_size} sequences cannot be split into "
                f"{n} equal micro-batches (train.grad_accum_steps); choose a divisor of the "
                "batch size (the batch stays the global batch: accumulation only saves memory)")

    def steps(self, world: int = 1) -> int:
        per_step = self.batch_size * self.seq_len * world
        steps = self.tokens // per_step
        if steps < 1:
            raise BudgetError(
                f"{self.name}: a budget of {self.tokens:,} tokens is smaller than one batch "
                f"({self.batch_size} x {self.seq_len} = {per_step:,} tokens); raise the "
                "budget or lower the batch size / context")
        return steps


def is_done(out_dir: Path) -> bool:
    state = out_dir / TRAIN_STATE
    return state.is_file() and read_json(state).get("done", False)


def lr_at(step: int, total: int, job: TrainJob) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak."""
    warmup = math.ceil(job.warmup_fraction * total)
    if step < warmup:
        return job.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = job.min_lr_ratio
    return job.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class MixtureSampler:
    """Blocks of ``seq_len + 1`` tokens, shard chosen by weight, offset uniform."""

    def __init__(self, shards, weights, seq_len, batch_size, seed, rank=0):
        self.streams = [np.memmap(p, dtype=d, mode="r") for p, d in shards]
        for (path, _), stream in zip(shards, self.streams):
            if len(stream) < seq_len + 2:
                raise BudgetError(f"{path} holds {len(stream)} tokens, fewer than one "
                                  f"block of {seq_len + 1}; give this language more text")
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()
        self.seq_len, self.batch_size, self.seed, self.rank = seq_len, batch_size, seed, rank

    def batch(self, step: int):
        import torch

        rng = np.random.default_rng([self.seed, step, self.rank])
        which = rng.choice(len(self.streams), size=self.batch_size, p=self.p)
        rows = []
        for s in which:
            stream = self.streams[s]
            start = int(rng.integers(0, len(stream) - self.seq_len - 1))
            rows.append(np.asarray(stream[start:start + self.seq_len + 1], dtype=np.int64))
        return torch.from_numpy(np.stack(rows))


class Validation:
    """The validation loss of a job: mean loss over a fixed set of blocks of its languages'
    valid split (the same blocks every time, drawn with their own RNG, so neither the
    training batches nor the resumed weights change)."""

    def __init__(self, job: TrainJob):
        usable = [(s, w) for s, w in zip(job.valid_shards, job.valid_weights)
                  if len(np.memmap(s[0], dtype=s[1], mode="r")) >= job.seq_len + 2]
        self.batch = None
        if job.eval_every and usable:
            sampler = MixtureSampler([s for s, _ in usable], [w for _, w in usable],
                                     job.seq_len, job.eval_blocks, seed=job.seed + 7919)
            self.batch = sampler.batch(0)

    def loss(self, model, device, batch_size: int) -> float:
        import torch

        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for rows in torch.split(self.batch, batch_size):
                out = model(input_ids=rows.to(device), labels=rows.to(device))
                total += float(out.loss) * len(rows)
                count += len(rows)
        model.train(was_training)
        return total / count


def build_model(job: TrainJob):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if job.init_dir is not None:
        from xelm.experts.store import load_causal_lm

        model = load_causal_lm(job.init_dir, dtype=torch.float32)  # safetensors only, checked
    else:
        torch.manual_seed(job.seed)
        config = AutoConfig.for_model(**job.model_config)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if job.gradient_checkpointing:  # non-reentrant: works with accumulation, DDP and FSDP
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.2x
            model.activation_checkpointing_enable(kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model.train()


def train_flops_per_token(model, seq_len: int) -> float:
    """6·N (N = parameters outside the embedding lookup, the output projection included
    even when it is tied to the input embedding) + attention 12·L·d·T."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and inp is not None and out.weight is inp.weight:  # tied: not listed
        n += out.weight.numel()
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", 0)
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", 0)
    return 6.0 * n + 12.0 * layers * d * seq_len


def run_job(job: TrainJob, progress: bool = True) -> dict:
    """Train ``job`` to completion (resuming if a checkpoint exists); return its ledger."""
    import torch

    if is_done(job.out_dir):
        return read_json(job.out_dir / TRAIN_STATE)
    with torch.enable_grad():
        return _train(job, progress)


def _train(job: TrainJob, progress: bool) -> dict:
    from xelm.io import progress as progress_bar

    acc = _accelerator(job)
    total = job.steps(acc.num_processes)
    model, opt, start, history, sharded = _prepare(acc, job)
    world, rank, per_rank = acc.num_processes, acc.process_index, job.batch_size
    # one global batch per step (seeded by the step alone); each process takes its rows
    sampler = MixtureSampler(job.shards, job.weights, job.seq_len, per_rank * world, job.seed)
    tracked = job.report_to != "none" and job.tensorboard_dir is not None
    if tracked:  # one folder per job, the same tags for all: dense and experts overlay
        acc.init_trackers(job.name)
    validation = Validation(job)
    tokens_per_step = per_rank * job.seq_len * world
    bar = progress_bar(total=total, initial=start, desc=f"train {job.name}", unit="step",
                       disable=not (progress and acc.is_main_process), dynamic_ncols=True)
    model.train()
    t0, wall = time.perf_counter(), history.get("wall_s", 0.0)
    t_log, step_log = time.perf_counter(), start
    for step in range(start, total):
        lr = lr_at(step, total, job)
        rows = sampler.batch(step)[rank * per_rank:(rank + 1) * per_rank]
        loss = _step(model, opt, acc, rows.to(acc.device), lr, job)
        history["last_loss"] = loss
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)
        seen = (step + 1) * tokens_per_step
        if ((step + 1) % job.log_every == 0 or step + 1 == total) and acc.is_main_process:
            now = time.perf_counter()
            speed = (step + 1 - step_log) * tokens_per_step / max(now - t_log, 1e-9)
            t_log, step_log = now, step + 1
            log.info("%s: step %d/%d, loss %.4f, lr %.3g, %.0f tokens/s", job.name, step + 1,
                     total, loss, lr, speed, extra={"progress": True})
            if tracked:
                acc.log({"train/loss": loss, "train/lr": lr, "train/tokens_per_s": speed},
                        step=seen)
        if validation.batch is not None and ((step + 1) % job.eval_every == 0
                                             or step + 1 == total):
            valid = validation.loss(model, acc.device, job.batch_size // job.grad_accum_steps)
            history.setdefault("valid", []).append([seen, valid])
            if acc.is_main_process:
                log.info("%s: step %d/%d, validation loss %.4f", job.name, step + 1, total,
                         valid, extra={"progress": True})
                if tracked:
                    acc.log({"valid/loss": valid}, step=seen)
        if (step + 1) % job.save_every == 0 and step + 1 < total:
            history["wall_s"] = wall + time.perf_counter() - t0
            _save_checkpoint(acc, job, model, opt, step + 1, history, sharded)
    bar.close()
    if tracked:
        acc.end_training()
    acc.wait_for_everyone()
    ledger = {"done": True, "name": job.name, "steps": total, "tokens": total * tokens_per_step,
              "budget_tokens": job.tokens, "last_loss": history.get("last_loss"),
              "wall_s": round(wall + time.perf_counter() - t0, 2),
              "device": str(acc.device), "processes": world,
              "init": str(job.init_dir) if job.init_dir else None,
              "valid_loss": history.get("valid"), "grad_accum_steps": job.grad_accum_steps,
              "gradient_checkpointing": job.gradient_checkpointing,
              "sharding": "fsdp" if sharded else "ddp" if world > 1 else "none",
              "peak_memory_bytes": _peak_memory_bytes()}
    # DDP: every rank returns the same full ledger (callers such as the manifest read
    # "flops" on all ranks), and none returns before rank 0 has written the final files.
    unwrapped = acc.unwrap_model(model)
    ledger["flops"] = train_flops_per_token(unwrapped, job.seq_len) * ledger["tokens"]
    ledger["parameters"] = sum(p.numel() for p in unwrapped.parameters())  # global under FSDP
    weights = ckpt.full_state(model, opt.optimizer)[0] if sharded else None  # all ranks gather
    if acc.is_main_process:
        _finish(job, unwrapped, ledger, weights)
    acc.wait_for_everyone()
    return ledger


def _accelerator(job: TrainJob):
    import torch
    from accelerate import Accelerator

    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[job.precision]
    tracked = job.report_to != "none" and job.tensorboard_dir is not None
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available(),
                       log_with=job.report_to if tracked else None,
                       project_dir=str(job.tensorboard_dir) if tracked else None)


def _prepare(acc, job: TrainJob):
    """Model and optimizer, resumed and wrapped: DDP, FSDP (accelerate's, or FSDP2 here on
    CPU processes) or nothing. Returns ``(model, opt, start step, history, sharded)``."""
    import os

    from accelerate.utils import DistributedType

    model = build_model(job)
    opt = _adamw(model, job)
    if acc.distributed_type == DistributedType.FSDP:
        model, opt = acc.prepare(model, opt)
    elif (acc.distributed_type == DistributedType.MULTI_CPU
          and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"):
        model = _fully_shard(model)  # accelerate 1.x only shards on accelerators
        opt = acc.prepare(_adamw(model, job))
    else:  # restored before wrapping: the exact path of the bitwise-resume guarantee
        start, history = ckpt.restore(job.out_dir, model, opt)
        model, opt = acc.prepare(model, opt)
        return model, opt, start, history, False
    start, history = ckpt.restore_full(job.out_dir, model, opt.optimizer)
    return model, opt, start, history, True


def _adamw(model, job: TrainJob):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=job.lr, betas=job.betas, eps=1e-8,
                             weight_decay=job.weight_decay)


def _fully_shard(model):
    """FSDP2 over this process group: every layer class the accelerate config names
    (``fsdp_transformer_layer_cls_to_wrap``; default: the model's ``_no_split_modules``),
    then the root; ``fsdp_reshard_after_forward`` as configured (default: true)."""
    import os

    from torch.distributed.fsdp import fully_shard

    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    layers = {n.strip() for n in names.split(",") if n.strip()} or set(model._no_split_modules or ())
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("true", "full_shard")
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module, reshard_after_forward=reshard)
    return fully_shard(model, reshard_after_forward=reshard)


def _save_checkpoint(acc, job, model, opt, step: int, history: dict, sharded: bool) -> None:
    if sharded:  # every rank takes part in gathering the full state; the main one writes it
        weights, optim = ckpt.full_state(model, opt.optimizer)
        if acc.is_main_process:
            ckpt.save_full(job.out_dir, weights, optim, step, history)
    elif acc.is_main_process:
        ckpt.save(job.out_dir, acc.unwrap_model(model), opt, step, history)


def _step(model, opt, acc, batch, lr: float, job: TrainJob) -> float:
    """One optimizer step over ``grad_accum_steps`` equal micro-batches of ``batch``; the
    loss (averaged over processes) is that of the whole batch: every micro-batch has the
    same number of tokens, so the mean of their mean losses is the batch's mean loss."""
    from contextlib import nullcontext

    for group in opt.param_groups:
        group["lr"] = lr
    parts = job.grad_accum_steps
    total = 0.0
    for i, rows in enumerate(batch.chunk(parts) if parts > 1 else (batch,)):
        # DDP: gradients are all-reduced once, in the backward pass of the last part
        with nullcontext() if i == parts - 1 else acc.no_sync(model):
            with acc.autocast():
                loss = model(input_ids=rows, labels=rows, use_cache=False).loss
            acc.backward(loss / parts if parts > 1 else loss)
        total = total + loss.detach()
    acc.clip_grad_norm_(model.parameters(), job.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    total = total / parts if parts > 1 else total
    return float(acc.reduce(total, reduction="mean") if acc.num_processes > 1 else total)


def _peak_memory_bytes() -> int:
    """Peak accelerator memory allocated by torch, or else this process's peak RSS so far."""
    import resource

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _finish(job: TrainJob, model, ledger: dict, weights: dict | None = None) -> None:
    """Final HF folder first, then the ``done`` marker, then drop the checkpoints.
    ``weights``: the gathered full state dict of a sharded model."""
    model.save_pretrained(str(job.out_dir), safe_serialization=True, state_dict=weights)
    if job.tokenizer_dir is not None:
        from xelm.data.tokenizer import load_tokenizer

        load_tokenizer(job.tokenizer_dir).save_pretrained(str(job.out_dir))
    write_json(job.out_dir / TRAIN_STATE, ledger)
    ckpt.clear(job.out_dir)
