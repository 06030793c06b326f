"""Benchmark the training loop and the launchers; writes bench/results/scale.json.

1. ``loop``: xelm's ``run_job`` (accelerate, checkpoint-free budget, ledger) against a
   minimal hand-written PyTorch loop on the same Llama model, batches, optimizer, learning
   rate schedule and gradient clipping, both saving the final weights. Target: xelm at
   >= 0.95 of the hand loop's tokens/s. Runs are interleaved (order alternating per
   round); two clocks as in bench/inference.py: CPU time of the calling thread (torch on
   1 thread, so every op runs on it; barely moved by other processes on a shared machine)
   and wall time. The CPU-time ratio is the primary result.
2. ``ray``: two expert jobs as Ray tasks with 1 CPU each, against the same two jobs one
   after another in this process with 1 thread each. Target: wall-time ratio <= 0.6. The
   Ray time counts from submission to the last result (task workers start cold and import
   torch: a real cost of Ray); starting the local Ray itself is reported apart.
3. ``gpu``: where CUDA is available, ~100M-parameter Llama in bf16: tokens/s and model
   FLOPs utilisation. Otherwise "not measured".

    python bench/scale.py                 # everything, ~4 min on 2 cores
    python bench/scale.py --quick         # smoke run with tiny sizes (numbers meaningless)
    python bench/scale.py --parts ray     # one part; the others' results are kept
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xelm.train.launch import run_jobs
from xelm.train.loop import MixtureSampler, TrainJob, build_model, lr_at, run_job

ROOT = Path(__file__).resolve().parents[1]
# the CPU reference shape of bench/inference.py: d128/L4, vocab 8000, batch 8 x 256
REFERENCE = {"model_type": "llama", "vocab_size": 8000, "hidden_size": 128, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 512,
             "max_position_embeddings": 256, "tie_word_embeddings": True}
GPU_100M = {**REFERENCE, "vocab_size": 32000, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "num_key_value_heads": 12, "intermediate_size": 2048,
            "max_position_embeddings": 1024}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def token_shard(path: Path, vocab: int, n: int = 2_000_000) -> Path:
    np.random.default_rng(0).integers(0, vocab, n).astype(np.uint16).tofile(path)
    return path


def make_job(root: Path, name: str, shard: Path, mc: dict, steps: int, batch: int,
             seq: int, precision: str = "fp32") -> TrainJob:
    return TrainJob(name=name, out_dir=root / name, shards=[(shard, "uint16")], weights=[1.0],
                    tokens=steps * batch * seq, seq_len=seq, batch_size=batch, lr=1e-3, seed=1,
                    model_config=mc, save_every=10**9, log_every=10**9, precision=precision)


def hand_loop(job: TrainJob) -> None:
    """The same training as ``run_job(job)``, written out with nothing but torch."""
    model = build_model(job)
    opt = torch.optim.AdamW(model.parameters(), lr=job.lr, betas=job.betas, eps=1e-8,
                            weight_decay=job.weight_decay)
    sampler = MixtureSampler(job.shards, job.weights, job.seq_len, job.batch_size, job.seed)
    total = job.steps()
    model.train()
    for step in range(total):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, job)
        batch = sampler.batch(step)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.save_pretrained(str(job.out_dir), safe_serialization=True)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def bench_loop(root: Path, shard: Path, steps: int, batch: int, seq: int, repeats: int) -> dict:
    torch.set_num_threads(1)
    tokens = steps * batch * seq
    times = {"xelm": {"wall": [], "cpu": []}, "hand": {"wall": [], "cpu": []}}
    runs = {"xelm": lambda job: run_job(job, progress=False), "hand": hand_loop}
    warm = make_job(root, "warm", shard, REFERENCE, 2, batch, seq)
    run_job(warm, progress=False)  # first-call costs (imports, allocator) out of the race
    for r in range(repeats):
        for kind in (("xelm", "hand") if r % 2 == 0 else ("hand", "xelm")):
            job = make_job(root, f"{kind}-{r}", shard, REFERENCE, steps, batch, seq)
            wall, cpu = timed(lambda: runs[kind](job))
            times[kind]["wall"].append(wall)
            times[kind]["cpu"].append(cpu)
            shutil.rmtree(job.out_dir)
            print(f"  loop {kind:<4} round {r}: {tokens / cpu:8.0f} tok/s (cpu) "
                  f"{tokens / wall:8.0f} tok/s (wall)", flush=True)
    out = {"shape": REFERENCE, "batch": batch, "seq_len": seq, "steps": steps, "threads": 1,
           "repeats": repeats, "primary_clock": "cpu", "target_ratio_min": 0.95}
    for clock in ("cpu", "wall"):
        tps = {k: tokens / statistics.median(v[clock]) for k, v in times.items()}
        per_round = statistics.median(h / x for x, h in zip(times["xelm"][clock],
                                                             times["hand"][clock]))
        out[clock] = {"tokens_per_s": {k: round(v) for k, v in tps.items()},
                      "ratio_xelm_to_hand": round(tps["xelm"] / tps["hand"], 4),
                      "ratio_per_round_median": round(per_round, 4),
                      "seconds": {k: [round(s, 3) for s in v[clock]] for k, v in times.items()}}
    out["ok"] = out["cpu"]["ratio_xelm_to_hand"] >= 0.95
    return out


def bench_ray(root: Path, shard: Path, steps: int, batch: int, seq: int) -> dict:
    import ray

    def jobs(tag):
        return [make_job(root / tag, f"e{i}", shard, REFERENCE, steps, batch, seq) for i in range(2)]

    torch.set_num_threads(1)
    start = time.perf_counter()
    run_jobs(jobs("sequential"), threads=1, progress=False)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start = time.perf_counter() - start
    try:
        start = time.perf_counter()
        ledgers, failed = run_jobs(jobs("ray"), launcher="ray", resources={"CPU": 1})
        on_ray = time.perf_counter() - start
    finally:
        ray.shutdown()
    assert not failed, failed
    in_task = max(l["wall_s"] for l in ledgers.values())
    print(f"  ray: sequential {sequential:.1f} s, ray {on_ray:.1f} s "
          f"(longest job's own loop {in_task:.1f} s; ray.init {ray_start:.1f} s)", flush=True)
    return {"jobs": 2, "tokens_per_job": steps * batch * seq, "shape": REFERENCE,
            "resources_per_job": {"CPU": 1}, "threads_per_job": 1,
            "sequential_s": round(sequential, 2), "ray_s": round(on_ray, 2),
            "ray_init_s": round(ray_start, 2), "ray_longest_job_loop_s": round(in_task, 2),
            "wall_ratio_ray_to_sequential": round(on_ray / sequential, 4),
            "target_ratio_max": 0.6, "ok": on_ray / sequential <= 0.6}


def bench_gpu(root: Path, steps: int) -> dict | str:
    if not torch.cuda.is_available():
        return "not measured (no CUDA device on this machine)"
    from xelm.train.loop import train_flops_per_token

    name = torch.cuda.get_device_name(0)
    batch, seq = 8, 1024
    shard = token_shard(root / "gpu.bin", GPU_100M["vocab_size"], 20_000_000)
    run_job(make_job(root, "gpu-warm", shard, GPU_100M, 3, batch, seq, "bf16"), progress=False)
    ledger = run_job(make_job(root, "gpu", shard, GPU_100M, steps, batch, seq, "bf16"),
                     progress=False)
    model = build_model(make_job(root, "gpu", shard, GPU_100M, 1, batch, seq))
    tps = ledger["tokens"] / ledger["wall_s"]
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"device": name, "parameters": ledger["parameters"], "precision": "bf16",
            "batch": batch, "seq_len": seq, "steps": steps, "tokens_per_s": round(tps),
            "mfu": round(train_flops_per_token(model, seq) * tps / peak, 4) if peak else None,
            "peak_flops_assumed": peak}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale.json")
    parser.add_argument("--parts", default="loop,ray,gpu",
                        help="which parts to run; the others keep their results from --out")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    loop_steps, ray_steps, batch, seq = (2, 3, 2, 64) if args.quick else (20, 50, 8, 256)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xelm-scale-") as tmp:
        root = Path(tmp)
        shard = token_shard(root / "tokens.bin", REFERENCE["vocab_size"])
        results = dict(previous.get("results", {}))
        if "loop" in parts:
            results["loop"] = bench_loop(root, shard, loop_steps, batch, seq, args.repeats)
        if "ray" in parts:
            try:
                import ray  # noqa: F401
                results["ray"] = bench_ray(root, shard, ray_steps, batch, seq)
            except ImportError:
                results["ray"] = "not measured (ray is not installed: pip install 'xelm[ray]')"
        if "gpu" in parts:
            results["gpu"] = bench_gpu(root, 5 if args.quick else 50)
        for part in parts:  # when and under what load each part was measured
            results[part] = results[part] if isinstance(results[part], str) else \
                {**results[part], "measured": {"date": dt.datetime.now(dt.timezone.utc).isoformat(
                    timespec="seconds"), "loadavg_before": load_before}}
    report = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_name(), "nproc": os.cpu_count(),
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                          "torch": torch.__version__,
                          "transformers": __import__("transformers").__version__},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    loop, ray_result = results.get("loop"), results.get("ray")
    if isinstance(loop, dict):
        print(f"loop: xelm/hand tokens/s = {loop['cpu']['ratio_xelm_to_hand']} (cpu clock), "
              f"{loop['wall']['ratio_xelm_to_hand']} (wall); target >= 0.95")
    if ray_result is not None:
        print("ray: " + (ray_result if isinstance(ray_result, str) else
                         f"wall ray/sequential = {ray_result['wall_ratio_ray_to_sequential']}; "
                         "target <= 0.6"))
    print(f"gpu: {results.get('gpu')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
