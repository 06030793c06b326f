"""Benchmark scoring with an expert set; writes bench/results/inference.json.

Measures the wall time of scoring one batch (log-prob of every target token) with
``score_targets`` for each inference method, against a dense model of the same shape
scored the plain way (one forward pass, gather the targets). Targets:

* top1 within 1.1x the dense time (routing must add almost nothing);
* a k-expert uniform ensemble within 1.15 * k times the dense time.

Posterior and product-of-experts ensembles are timed for reference (no target). Timings
are interleaved (every method once per round, the order rotated between rounds) and
summarised by their medians.

Each timed call follows an untimed call of the same method, as in an evaluation loop that
scores many batches with one method. Without it a method's time depended on which method
ran just before: glibc serves buffers of 32 MB and more (the demo shape's logits) with
fresh, page-faulting memory after another method's large buffers were freed, which made
the same dense model 20% slower when it followed product_of_experts.

Two clocks: wall time, and the CPU time of the scoring thread (``time.thread_time``, with
torch on 1 thread, so every op runs on the timed thread). On a shared machine other
processes inflate wall time by 2-5x at random; they barely change CPU time, so the CPU-time
ratios are the primary result and the wall-time ratios a cross-check.

    python bench/inference.py                 # both shapes, k = 4 and 8, 1 thread
    python bench/inference.py --experts 16 --repeats 21
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from xelm.infer.mixture import score_targets, target_logprobs

ROOT = Path(__file__).resolve().parents[1]
# (name, hidden, layers, heads, intermediate, vocab, batch, length)
SHAPES = {
    "reference-d128": (128, 4, 4, 512, 8000, 8, 256),  # the PAPER.md CPU reference model
    "demo-d64": (64, 2, 4, 256, 4096, 16, 128),         # configs' default shape
}
METHODS = ("top1", "ensemble", "ensemble_posterior", "product_of_experts")


def build(shape: tuple, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, inter, vocab, _, _ = shape
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=inter,
                         max_position_embeddings=1024)
    return LlamaForCausalLM(config).eval()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_once(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) for one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def summarise(times: dict[str, list[float]], k: int) -> dict:
    median = {m: statistics.median(t) for m, t in times.items()}
    ratio = {m: median[m] / median["dense"] for m in METHODS}
    # each round's time over the same round's dense time: robust to slow phases
    per_round = {m: statistics.median(a / d for a, d in zip(times[m], times["dense"]))
                 for m in METHODS}
    return {"median_s": median, "min_s": {m: min(t) for m, t in times.items()},
            "ratio_to_dense": ratio, "ratio_to_dense_per_round_median": per_round,
            "ensemble_ratio_to_k_dense": ratio["ensemble"] / k}


def bench_shape(name: str, shape: tuple, k: int, repeats: int) -> dict:
    batch, length = shape[5], shape[6]
    dense = build(shape, seed=100)
    experts = {f"e{i}": build(shape, seed=i) for i in range(k)}
    ids = torch.randint(0, shape[4], (batch, length), generator=torch.Generator().manual_seed(0))
    runs = {"dense": lambda: target_logprobs(dense, ids),
            **{m: (lambda m=m: score_targets(experts, ids, m, expert="e0")) for m in METHODS}}
    for fn in runs.values():  # warm-up: allocator, kernels
        fn()
    wall: dict[str, list[float]] = {m: [] for m in runs}
    cpu: dict[str, list[float]] = {m: [] for m in runs}
    with torch.inference_mode():
        order = list(runs)
        for r in range(repeats):  # rotate the order so no method always runs first
            for method in order[r % len(order):] + order[:r % len(order)]:
                runs[method]()  # untimed: reach this method's steady state (see docstring)
                w, c = time_once(runs[method])
                wall[method].append(w)
                cpu[method].append(c)
    clocks = {"cpu": summarise(cpu, k), "wall": summarise(wall, k)}
    ratio = clocks["cpu"]["ratio_to_dense"]
    params = sum(p.numel() for p in dense.parameters())
    print(f"{name}: {params / 1e6:.2f}M params, batch {batch}x{length}, k={k}")
    for m in runs:
        line = f"  {m:<20} cpu {clocks['cpu']['median_s'][m] * 1e3:8.1f} ms" \
               f"  wall {clocks['wall']['median_s'][m] * 1e3:8.1f} ms"
        if m != "dense":
            line += (f"  {ratio[m]:.3f}x dense (cpu)"
                     f"  {clocks['wall']['ratio_to_dense'][m]:.3f}x (wall)")
        print(line, flush=True)
    return {"shape": dict(zip(("hidden", "layers", "heads", "intermediate", "vocab", "batch",
                                "length"), shape)),
            "params": params, "experts": k, "tokens_per_batch": batch * (length - 1),
            "clocks": clocks, "primary_clock": "cpu",
            "top1_ok": ratio["top1"] <= 1.1, "ensemble_ok": ratio["ensemble"] <= 1.15 * k}


def run_case(name: str, k: int, repeats: int, threads: int) -> dict:
    """One case in a fresh interpreter: in one long process, a model built after earlier
    cases' tensors were freed ran up to 18% slower than its twin (heap layout), which
    skewed the ratios; a process per case removes that."""
    cmd = [sys.executable, __file__, "--one-case", name, str(k), "--repeats", str(repeats),
           "--threads", str(threads)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    *lines, last = done.stdout.strip().splitlines()
    print("\n".join(lines), flush=True)
    return json.loads(last)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one-case", nargs=2, metavar=("SHAPE", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--experts", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the CPU clock is exact only with 1")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/inference.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one_case:
        name, k = args.one_case
        print(json.dumps(bench_shape(name, SHAPES[name], int(k), args.repeats)))
        return 0
    load_before = os.getloadavg()
    cases = {f"{name}-k{k}": run_case(name, k, args.repeats, args.threads)
             for name in args.shapes for k in args.experts}
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(),
                    "cores": os.cpu_count(), "threads": args.threads,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__},
        "targets": {"top1_ratio_max": 1.1, "ensemble_ratio_max": "1.15 * k"},
        "repeats": args.repeats, "cases": cases,
        "all_ok": all(c["top1_ok"] and c["ensemble_ok"] for c in cases.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}; all targets met: {result['all_ok']}")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
