"""The GPU check: xelm's training and inference on CUDA, in a few minutes; writes
bench/results/gpu.json (``bench/gpu.sh`` runs it with a time limit).

Parts (each on its own: a failing part records its error and the others still run):

1. ``train`` -- bf16 (autocast, fp32 master weights) training throughput of a
   Llama-shaped expert of ~134M parameters (d768, 12 layers, vocab 32000, untied) through
   xelm's own loop (``run_job``): tokens/s from the loop's log lines after a warm-up
   interval, model FLOPs utilisation (the loop's 6·N + attention count per token over the
   device's dense bf16 peak), peak memory allocated, and whether the loss fell on a
   learnable token stream.
2. ``fsdp`` -- one short job under ``accelerate launch`` with docs/scale.md's FSDP config
   on every GPU (accelerate's FSDP2 path, bf16): the ledger must say ``sharding: fsdp``.
3. ``ddp`` -- where there are at least 2 GPUs: the same job with
   ``accelerate launch --multi_gpu --num_processes 2`` (one step = both GPUs' batches).
4. ``ensemble`` -- scoring one batch with 4 experts in bf16 (``score_targets``: top1,
   uniform ensemble, posterior ensemble) against one model: tokens/s and the ratio.
5. ``generate`` -- HF ``generate()`` through xelm (``generate``): greedy, 128 new tokens
   for a batch of 8 prompts, top-1 and posterior ensemble of the 4 experts: new tokens/s,
   and top-1 equal to the expert's own ``generate()``.

``--smoke`` runs every part on CPU with a tiny model in fp32 (DDP is skipped without 2
GPUs; the FSDP part launches one CPU process): it checks this script, not the GPU.

    bash bench/gpu.sh                                   # on a GPU machine, <= 8 minutes
    python bench/gpu_check.py --smoke --out /tmp/gpu-smoke.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LLAMA_134M = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 768,
              "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
              "intermediate_size": 2048, "max_position_embeddings": 1024,
              "tie_word_embeddings": False}
TINY = {**LLAMA_134M, "vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 64}
# dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name()
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12}


def settings(smoke: bool) -> dict:
    if smoke:
        return {"shape": TINY, "steps": 24, "interval": 8, "batch": 4, "context": 64,
                "precision": "fp32", "lr": 1e-2, "must_fall": 0.1, "launch_steps": 4, "score_batch": 2, "score_len": 64,
                "prompts": 2, "new_tokens": 8, "repeats": 2}
    return {"shape": LLAMA_134M, "steps": 120, "interval": 20, "batch": 16, "context": 1024,
            "precision": "bf16", "lr": 1e-3, "must_fall": 1.0, "launch_steps": 30, "score_batch": 8, "score_len": 1024,
            "prompts": 8, "new_tokens": 128, "repeats": 5}


class LoopLog(logging.Handler):
    """Tokens/s and loss from the loop's "step i/n, loss x, lr y, z tokens/s" lines."""

    def __init__(self):
        super().__init__()
        self.speeds, self.losses = [], []

    def emit(self, record):
        if "tokens/s" in str(record.msg) and record.args:
            self.speeds.append(float(record.args[-1]))
            self.losses.append(float(record.args[3]))


def pattern_shard(path: Path, vocab: int, n: int = 2_000_000) -> Path:
    """Learnable tokens: mostly ``next = 5·prev + 3 mod vocab``, 1 in 8 random."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, vocab, n)
    ids = np.empty(n, dtype=np.int64)
    ids[0] = 1
    follow = rng.random(n) >= 0.125
    for i in range(1, n):  # numpy loop: about 1 s per million tokens
        ids[i] = (5 * ids[i - 1] + 3) % vocab if follow[i] else noise[i]
    ids.astype(np.uint16).tofile(path)
    return path


def make_job(work: Path, name: str, s: dict, steps: int, shard: Path, **kw):
    from xelm.train.loop import TrainJob

    return TrainJob(name=name, out_dir=work / name, shards=[(shard, "uint16")], weights=[1.0],
                    tokens=steps * s["batch"] * s["context"], seq_len=s["context"],
                    batch_size=s["batch"], lr=s["lr"], seed=1, model_config=s["shape"],
                    precision=s["precision"], report_to="none", save_every=10**9, **kw)


def device_info() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu", "gpus": 0, "peak_bf16_flops": None}
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"device": name, "gpus": torch.cuda.device_count(), "peak_bf16_flops": peak,
            "cuda": torch.version.cuda, "bf16_supported": torch.cuda.is_bf16_supported()}


def part_train(work: Path, s: dict, shard: Path, info: dict) -> dict:
    from xelm.train.loop import run_job

    job = make_job(work, "train", s, s["steps"], shard, log_every=s["interval"])
    seen = LoopLog()
    logger = logging.getLogger("xelm.train.loop")
    logger.setLevel(logging.INFO)
    logger.addHandler(seen)
    try:
        ledger = run_job(job, progress=False)
    finally:
        logger.removeHandler(seen)
    speed = statistics.median(seen.speeds[1:] or seen.speeds)   # the first interval warms up
    per_token = ledger["flops"] / ledger["tokens"]
    peak = info["peak_bf16_flops"]
    return {"parameters": ledger["parameters"], "device": ledger["device"],
            "precision": s["precision"], "batch": s["batch"], "context": s["context"],
            "steps": ledger["steps"], "tokens_per_s": speed, "tokens_per_s_intervals": seen.speeds,
            "train_flops_per_token": per_token,
            "mfu": speed * per_token / peak if peak and s["precision"] == "bf16" else None,
            "peak_memory_bytes": ledger["peak_memory_bytes"],
            "loss_first_interval": seen.losses[0], "loss_last": ledger["last_loss"],
            "ok": ledger["last_loss"] < seen.losses[0] - s["must_fall"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docs_fsdp_config() -> str:
    text = (ROOT / "docs" / "scale.md").read_text()
    return re.search(r"<!-- fsdp-config.*?-->\s*```yaml\n(.*?)```", text, re.S).group(1)


def part_launch(work: Path, s: dict, shard: Path, kind: str, processes: int) -> dict:
    """One job under ``accelerate launch``: ``fsdp`` (docs/scale.md's config) or ``ddp``."""
    from xelm.io import read_json
    from xelm.train.launch import write_spec

    job = make_job(work, kind, s, s["launch_steps"] * processes, shard, log_every=10)
    if kind == "fsdp":
        (work / "fsdp.yaml").write_text(docs_fsdp_config())
        how = ["--config_file", str(work / "fsdp.yaml")]
    else:
        how = ["--multi_gpu"]
    precision = "bf16" if s["precision"] == "bf16" else "no"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *how,
           "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", precision, "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "xelm.train.launch", str(write_spec(job))]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"accelerate launch failed ({done.returncode}):\n{done.stderr[-2000:]}")
    ledger = read_json(job.out_dir / "train_state.json")
    expected = kind  # accelerate launch always starts a process group, even of one
    return {"processes": ledger["processes"], "sharding": ledger["sharding"],
            "steps": ledger["steps"], "tokens": ledger["tokens"], "device": ledger["device"],
            "last_loss": ledger["last_loss"], "train_wall_s": ledger["wall_s"],
            "tokens_per_s_incl_first_steps": ledger["tokens"] / max(ledger["wall_s"], 1e-9),
            "launch_wall_s": round(wall, 1), "expected_sharding": expected,
            "ok": ledger["processes"] == processes and ledger["sharding"] == expected}


def _experts(s: dict, k: int, device, dtype) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**s["shape"])
    out = {}
    for i in range(k):
        torch.manual_seed(100 + i)
        out[f"e{i}"] = AutoModelForCausalLM.from_config(config).to(device, dtype).eval()
    return out


def _timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up: kernels, allocator
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part_ensemble(s: dict, experts: dict, device, sync) -> dict:
    import torch

    from xelm.infer.mixture import score_targets, target_logprobs

    vocab = s["shape"]["vocab_size"]
    ids = torch.randint(0, vocab, (s["score_batch"], s["score_len"]),
                        generator=torch.Generator().manual_seed(0)).to(device)
    tokens = ids.numel() - len(ids)
    runs = {"one_model": lambda: target_logprobs(experts["e0"], ids),
            **{m: (lambda m=m: score_targets(experts, ids, m, expert="e0"))
               for m in ("top1", "ensemble", "ensemble_posterior")}}
    with torch.inference_mode():
        seconds = {name: _timed(fn, s["repeats"], sync) for name, fn in runs.items()}
        finite = bool(torch.isfinite(score_targets(experts, ids, "ensemble")).all())
    return {"experts": len(experts), "batch": list(ids.shape), "seconds": seconds,
            "tokens_per_s": {n: tokens / t for n, t in seconds.items()},
            "ratio_to_one_model": {n: t / seconds["one_model"] for n, t in seconds.items()},
            "ok": finite}


def part_generate(s: dict, experts: dict, device, sync) -> dict:
    import torch

    from xelm.infer.generation import generate

    vocab = s["shape"]["vocab_size"]
    prompts = torch.randint(0, vocab, (s["prompts"], 32),
                            generator=torch.Generator().manual_seed(1)).to(device)
    n = s["new_tokens"]
    options = {"max_new_tokens": n, "min_new_tokens": n}
    out, seconds = {}, {}
    with torch.inference_mode():
        for method in ("top1", "ensemble_posterior"):
            run = (lambda m=method: out.__setitem__(m, generate(experts, prompts, m,
                                                                expert="e0", **options)))
            seconds[method] = _timed(run, max(1, s["repeats"] // 2), sync)
        own = experts["e0"].generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                                     do_sample=False, **options)
    return {"prompts": s["prompts"], "new_tokens": n, "seconds": seconds,
            "new_tokens_per_s": {m: s["prompts"] * n / t for m, t in seconds.items()},
            "shapes": {m: list(t.shape) for m, t in out.items()},
            "ok": bool(torch.equal(out["top1"], own))}  # top-1 is the expert's own generate()


def run(smoke: bool, work: Path, parts: list[str], save=lambda report: None) -> dict:
    """Every part in turn; ``save(report)`` after each, so a time limit keeps what ran."""
    import torch

    s = settings(smoke)
    info = device_info()
    cuda = info["gpus"] > 0 and not smoke
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    shard = pattern_shard(work / "tokens.bin", s["shape"]["vocab_size"],
                          n=200_000 if smoke else 2_000_000)
    results: dict = {}
    experts: dict = {}
    for part in parts:
        t0 = time.perf_counter()
        try:
            if part == "train":
                results[part] = part_train(work, s, shard, info)
            elif part == "fsdp":
                results[part] = part_launch(work, s, shard, "fsdp", max(1, info["gpus"]))
            elif part == "ddp":
                results[part] = (part_launch(work, s, shard, "ddp", 2) if info["gpus"] >= 2
                                 else {"skipped": f"{info['gpus']} GPU(s); DDP needs 2"})
            elif part in ("ensemble", "generate"):
                experts = experts or _experts(s, 4, device, dtype)
                fn = part_ensemble if part == "ensemble" else part_generate
                results[part] = fn(s, experts, device, sync)
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the others
            results[part] = {"error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()[-3000:]}
        results[part]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{part}: {json.dumps({k: v for k, v in results[part].items() if k != 'traceback'})}",
              flush=True)
        report = {"device": info, "smoke": smoke, "shape": s["shape"],
                  "settings": {k: v for k, v in s.items() if k != "shape"}, "results": results,
                  "parts_done": len(results), "parts_asked": len(parts),
                  "ok": all(r.get("ok", "skipped" in r) for r in results.values())}
        save(report)
    return report


PARTS = ("train", "fsdp", "ddp", "ensemble", "generate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU (checks the script)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {','.join(PARTS)}")
    parser.add_argument("--out", help="JSON path (default bench/results/gpu.json; "
                                      "with --smoke bench/results/gpu-smoke.json)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    import torch
    import transformers

    t0 = time.perf_counter()
    name = "gpu-smoke.json" if args.smoke else "gpu.json"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(report: dict) -> None:
        report.update({"command": "bash bench/gpu.sh" if not args.smoke else
                       "python bench/gpu_check.py --smoke",
                       "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "wall_s": round(time.perf_counter() - t0, 1), "host": socket.gethostname(),
                       "threads": torch.get_num_threads(), "cpus": os.cpu_count()})
        out.write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="xelm-gpu-") as tmp:
        report = run(args.smoke, Path(tmp), parts, save)
    failed = [k for k, r in report["results"].items() if not r.get("ok", "skipped" in r)]
    print(f"{'ok' if report['ok'] else 'FAILED: ' + ', '.join(failed)} in {report['wall_s']} s"
          f" -> {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
