"""Benchmark generation speed; writes bench/results/generation.json.

Greedy decoding through Hugging Face ``generate()`` of: a dense model; ``top1`` (one
expert's own ``generate()``); and 4-expert ``ensemble`` and ``ensemble_posterior``
(``ExpertEnsembleForCausalLM``, one KV cache per expert). Random Llama models of the
configs' default shape (d64, 2 layers, vocabulary 4096); every call produces exactly
``--new`` tokens (``min_new_tokens``), from a ``--prompt``-token prompt, for batch sizes 1
and 8. Reported: generated tokens per second by the CPU time of the calling thread
(torch on 1 thread, so other processes on a shared machine barely change it) and by wall
time, each the median of ``--repeats`` calls.

    python bench/generation.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from inference import SHAPES, build, cpu_name  # noqa: E402

from xelm.infer.generation import generate  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds of this thread, wall seconds) over ``repeats`` calls."""
    cpu, wall = [], []
    fn()  # warm-up
    for _ in range(repeats):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
    return statistics.median(cpu), statistics.median(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/generation.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = SHAPES["demo-d64"]
    dense = build(shape, seed=100)
    experts = {f"e{i}": build(shape, seed=i) for i in range(args.experts)}
    opts = {"max_new_tokens": args.new, "min_new_tokens": args.new, "do_sample": False}
    results: dict[str, dict] = {}
    with torch.inference_mode():
        for batch in args.batches:
            ids = torch.randint(0, shape[4], (batch, args.prompt),
                                generator=torch.Generator().manual_seed(batch))
            calls = {
                "dense": lambda: dense.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                pad_token_id=0, **opts),
                "top1": lambda: generate(experts, ids, "top1", expert="e0", **opts),
                f"ensemble_k{args.experts}": lambda: generate(experts, ids, "ensemble", **opts),
                f"ensemble_posterior_k{args.experts}":
                    lambda: generate(experts, ids, "ensemble_posterior", **opts),
            }
            row = {}
            for name, fn in calls.items():
                cpu, wall = timed(fn, args.repeats)
                row[name] = {"tokens_per_s_cpu": round(batch * args.new / cpu, 1),
                             "tokens_per_s_wall": round(batch * args.new / wall, 1)}
                print(f"batch {batch} {name:<24} {row[name]['tokens_per_s_cpu']:8.1f} tok/s (cpu)"
                      f" {row[name]['tokens_per_s_wall']:8.1f} tok/s (wall)", flush=True)
            base = row["dense"]["tokens_per_s_cpu"]
            for r in row.values():
                r["relative_to_dense_cpu"] = round(r["tokens_per_s_cpu"] / base, 3)
            results[f"batch{batch}"] = row
    out = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": 1,
                       "loadavg": os.getloadavg(), "torch": torch.__version__},
           "shape": "demo-d64 (random weights)", "prompt_tokens": args.prompt,
           "new_tokens": args.new, "results": results}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
