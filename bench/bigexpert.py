"""A real-size expert on CPU: XGLM-564M's shape trains 3 steps through xelm's own loop.

The model is XGLM-564M's architecture (d_model 1024, 24 layers, 16 heads, FFN 4096, vocab
256,008, tied embeddings: 564M parameters) built from a local config with random weights
(no hub download); the data are random token ids. The job runs through ``run_job`` with
``gradient_checkpointing`` and ``grad_accum_steps`` as configured, fp32 AdamW, exactly as
``xelm train`` would run an expert of that size. Recorded in bench/results/bigexpert.json:

* seconds per optimizer step, from the loop's own per-step throughput log lines (the
  first step included and reported apart: it allocates the optimizer state), and the
  process's CPU seconds per step after the first (what other processes' load on a shared
  machine barely changes: with 1 thread, CPU seconds ~ the step's time on an idle core);
* the peak RSS of this process during training (the loop's ledger: ``ru_maxrss`` before
  the final save) and over the whole run including the save;
* the estimate of ``xelm plan`` (:func:`xelm.pipeline.plan.peak_memory_bytes`) for the same shape,
  batch, micro-batches and checkpointing, and its ratio to the measured training peak
  (target: within 25%).

    OMP_NUM_THREADS=1 python bench/bigexpert.py                  # ~6 min on one core
    python bench/bigexpert.py --quick   # a d64/L2 stand-in, seconds (numbers meaningless)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
XGLM_564M = {"model_type": "xglm", "vocab_size": 256008, "d_model": 1024, "num_layers": 24,
             "attention_heads": 16, "ffn_dim": 4096, "max_position_embeddings": 2048,
             "scale_embedding": True, "tie_word_embeddings": True, "dropout": 0.0,
             "attention_dropout": 0.0, "activation_dropout": 0.0}
QUICK = {**XGLM_564M, "vocab_size": 4096, "d_model": 64, "num_layers": 2, "attention_heads": 4,
         "ffn_dim": 256}


class StepTimes(logging.Handler):
    """Seconds per step from the loop's "step i/n, ... tokens/s" lines (log_every=1), and
    this process's CPU seconds between those lines (robust to other processes' load)."""

    def __init__(self, tokens_per_step: int):
        super().__init__()
        self.tokens_per_step, self.seconds, self.marks = tokens_per_step, [], []

    def emit(self, record):
        if "tokens/s" in str(record.msg) and record.args:
            self.seconds.append(self.tokens_per_step / record.args[-1])
            self.marks.append(time.process_time())

    def cpu_seconds(self) -> list[float]:
        """CPU seconds of each step but the first (whose mark also covers the build)."""
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def run(shape: dict, steps: int, batch: int, accum: int, context: int, checkpointing: bool,
        work: Path) -> dict:
    import torch
    from transformers import AutoConfig

    from xelm.pipeline.plan import peak_memory_bytes
    from xelm.train.loop import TrainJob, run_job

    shard = work / "tokens.bin"
    np.random.default_rng(0).integers(0, shape["vocab_size"], 400_000).astype(np.uint32).tofile(shard)
    job = TrainJob(name="bigexpert", out_dir=work / "expert", shards=[(shard, "uint32")],
                   weights=[1.0], tokens=steps * batch * context, seq_len=context,
                   batch_size=batch, lr=1e-4, seed=1, model_config=shape, save_every=10**9,
                   log_every=1, report_to="none", grad_accum_steps=accum,
                   gradient_checkpointing=checkpointing)
    timer = StepTimes(batch * context)
    logger = logging.getLogger("xelm.train.loop")
    logger.setLevel(logging.INFO)
    logger.addHandler(timer)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    ledger = run_job(job, progress=False)
    total = time.perf_counter() - t0
    logger.removeHandler(timer)
    hf = AutoConfig.for_model(**shape)
    estimate = peak_memory_bytes(ledger["parameters"], hf, batch, context,
                                 micro_batches=accum, checkpointing=checkpointing)
    measured = ledger["peak_memory_bytes"]
    later = timer.seconds[1:] or timer.seconds
    cpu = timer.cpu_seconds()
    return {"parameters": ledger["parameters"], "steps": ledger["steps"],
            "tokens_per_step": batch * context, "seconds_per_step": timer.seconds,
            "seconds_per_step_after_first": statistics.median(later),
            "cpu_seconds_per_step_after_first": cpu,
            "cpu_seconds_per_step_median": statistics.median(cpu) if cpu else None,
            "wall_s_with_build_and_save": round(total, 1),
            "train_flops_per_step": ledger["flops"] / ledger["steps"],
            "peak_rss_bytes_training": measured,
            "peak_rss_bytes_whole_run": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_bytes_before_build": rss_start,
            "plan_estimate_bytes": estimate, "estimate_over_measured": estimate / measured,
            "within_25_percent": abs(estimate / measured - 1) <= 0.25,
            "threads": torch.get_num_threads(), "last_loss": ledger["last_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny stand-in shape (smoke run)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="sequences per optimizer step")
    parser.add_argument("--accum", type=int, default=2, help="train.grad_accum_steps")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "bigexpert.json"))
    args = parser.parse_args()
    import torch
    import transformers

    work = Path(tempfile.mkdtemp(prefix="xelm-bigexpert-"))
    try:
        result = run(QUICK if args.quick else XGLM_564M, args.steps, args.batch, args.accum,
                     args.context, not args.no_checkpointing, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"command": "OMP_NUM_THREADS=1 python bench/bigexpert.py"
                         + (" --quick" if args.quick else ""),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "nproc": os.cpu_count(), "loadavg": os.getloadavg(),
                          "torch": torch.__version__, "transformers": transformers.__version__},
              "shape": "stand-in d64/L2" if args.quick else "XGLM-564M (random weights)",
              "batch": args.batch, "grad_accum_steps": args.accum, "context": args.context,
              "gradient_checkpointing": not args.no_checkpointing, "results": result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    gb = 2**30
    print(f"{result['parameters'] / 1e6:.0f}M parameters, {result['steps']} steps: "
          f"{result['seconds_per_step_after_first']:.1f} s/step after the first "
          f"({', '.join(f'{s:.1f}' for s in result['seconds_per_step'])}; CPU s/step "
          f"{result['cpu_seconds_per_step_median'] or 0:.1f}); peak RSS "
          f"{result['peak_rss_bytes_training'] / gb:.2f} GiB, plan estimate "
          f"{result['plan_estimate_bytes'] / gb:.2f} GiB "
          f"({result['estimate_over_measured']:.2f}x) -> {args.out}")


if __name__ == "__main__":
    main()
