"""Benchmark ``xelm prepare`` on big corpora against the tokenizer alone; writes
bench/results/prepare.json.

Corpora of about 100 MB, 500 MB and 2 GB (1 MB = 10^6 bytes of corpus files) are built
under /tmp from the real text of ../shared/corpus (17 languages, one document per line):
each language's file is repeated until its share of the size is reached, every copy
after the first perturbed (each document rotated at a copy- and line-dependent character
offset), so no two documents are the same. Each is prepared with ``xelm prepare``
(``corpus.num_proc: 2``, ``split: random``, the default tokenizer: a 4096-token BPE trained
on 2 MB per language) in a subprocess whose process tree's RSS is sampled every 0.1 s.

The limit: the tokenizer prepare trained, encoding the same files on the same cores with
its own batch encoding and nothing else (no cleaning, splitting, writing). Four ways are
measured on the 100 MB corpus -- one process with the tokenizer's own threads, or two
processes with one thread each, each with ``encode_batch`` and ``encode_batch_fast`` -- and
the fastest is the limit at every size.

Targets: prepare's throughput over reading, splitting, tokenising and packing (the
tokenizer's training is a fixed cost, 2 MB per language whatever the corpus size, and
the limit has none) >= 0.8x the limit's; peak RSS < 1.5 GB and flat from 100 MB to 2 GB;
time linear in size. ``os.getloadavg()`` is recorded around every run: on a shared
machine other processes take cores, and each figure is only as good as its load.

    python bench/prepare.py                 # 100 MB, 500 MB, 2 GB (about an hour on 2 cores)
    python bench/prepare.py --sizes 100     # one size (results of other sizes are kept)
    python bench/prepare.py --quick         # a 5 MB smoke run into /tmp (numbers meaningless)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "corpus"
WORK = Path("/tmp/xelm-bench-prepare")
OUT = ROOT / "bench" / "results" / "prepare.json"
WORKERS = 2
MB = 10 ** 6
LIMIT_WAYS = [("threads", "encode_batch"), ("threads", "encode_batch_fast"),
              ("processes", "encode_batch"), ("processes", "encode_batch_fast")]


# --------------------------------------------------------------------------- corpora

def build_corpus(out: Path, target: int) -> dict:
    """``out/<lang>.txt`` of about ``target`` bytes in all, in the languages' proportions."""
    files = sorted(SOURCE.glob("*.txt"))
    total = sum(f.stat().st_size for f in files)
    done = out / "corpus.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    docs = 0
    for f in files:
        quota = target * f.stat().st_size / total
        lines = [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        written, copy = 0, 0
        with open(out / f.name, "w", encoding="utf-8") as sink:
            while written < quota:
                for i, line in enumerate(lines):
                    if copy:  # rotate at a copy- and line-dependent offset: a new document
                        k = (copy * 7919 + i * 104729) % len(line)
                        line = f"{line[k:]} {line[:k]}"
                    data = line + "\n"
                    sink.write(data)
                    written += len(data.encode("utf-8"))
                    docs += 1
                    if written >= quota:
                        break
                copy += 1
    info = {"bytes": sum(p.stat().st_size for p in out.glob("*.txt")), "docs": docs,
            "languages": len(files)}
    done.write_text(json.dumps(info))
    return info


# --------------------------------------------------------------------------- measuring

class TreeSampler:
    """Peak RSS of a process and all its descendants (summed), and of the process alone."""

    def __init__(self, pid: int, every: float = 0.1):
        self.proc, self.every = psutil.Process(pid), every
        self.peak_tree = self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                main = self.proc.memory_info().rss
                tree = main + sum(_rss(c) for c in self.proc.children(recursive=True))
            except psutil.Error:
                break
            self.peak_main, self.peak_tree = max(self.peak_main, main), max(self.peak_tree, tree)
            time.sleep(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def measured(cmd: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run ``cmd``; wall and CPU seconds (the whole tree), peak RSS, load around it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()
    start = time.perf_counter()
    with open(log or os.devnull, "ab") as sink:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=sink)
        sampler = TreeSampler(proc.pid)
        stdout, _ = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": round(sampler.peak_tree / MB, 1),
            "peak_rss_main_mb": round(sampler.peak_main / MB, 1),
            "loadavg_before": [round(x, 2) for x in load],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "stdout": stdout.decode().strip()}


def run_prepare(corpus: Path, run: Path, log: Path) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    config = run.with_suffix(".yaml")
    config.write_text(f"out_dir: {run}\ncorpus: {{source: dir, path: {corpus}, "
                      f"num_proc: {WORKERS}}}\n", encoding="utf-8")
    result = measured([sys.executable, "-m", "xelm", "prepare", str(config)], log=log)
    line = re.search(r"prepare took ([\d.]+) s to read and split, ([\d.]+) s for the "
                     r"tokenizer, ([\d.]+) s to tokenise and pack .*included: ([\d.]+) s, "
                     r"([\d.]+) s, ([\d.]+) s\)", (run / "xelm.log").read_text(encoding="utf-8"))
    read_split, tokenizer, pack, *cpu = map(float, line.groups())
    info = json.loads((run / "data" / "prepare.json").read_text())
    result.pop("stdout")
    result["phases"] = {"read_and_split_s": read_split, "tokenizer_s": tokenizer,
                        "tokenise_and_pack_s": pack}
    result["phases_cpu"] = dict(zip(result["phases"], cpu))
    result["streaming_seconds"] = round(read_split + pack, 2)
    result["streaming_cpu_seconds"] = round(cpu[0] + cpu[2], 2)
    result["tokens"] = sum(s["tokens"] for lang in info["stats"].values() for s in lang.values())
    return result


def run_limit(corpus: Path, tokenizer: Path, how: str, method: str, log: Path) -> dict:
    cmd = [sys.executable, __file__, "--limit", str(corpus), str(tokenizer), how, method]
    threads = {"threads": "true", "processes": "false"}[how]
    result = measured(cmd, env={"TOKENIZERS_PARALLELISM": threads,
                                "RAYON_NUM_THREADS": str(WORKERS)}, log=log)
    result.update(json.loads(result.pop("stdout")))
    result["way"] = f"{how}/{method}"
    return result


# --------------------------------------------------------------------------- the limit itself

def _encode_files(paths: list[str], tokenizer: str, method: str) -> int:
    """Tokens of the files' lines, encoded in batches of about 1 MB; nothing else."""
    from tokenizers import Tokenizer

    encode = getattr(Tokenizer.from_file(str(Path(tokenizer) / "tokenizer.json")), method)
    tokens = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            batch, size = [], 0
            for line in handle:
                batch.append(line[:-1])
                size += len(line)
                if size >= MB:
                    tokens += sum(map(len, encode(batch, add_special_tokens=False)))
                    batch, size = [], 0
            if batch:
                tokens += sum(map(len, encode(batch, add_special_tokens=False)))
    return tokens


def limit_main(corpus: str, tokenizer: str, how: str, method: str) -> None:
    files = sorted(str(p) for p in Path(corpus).glob("*.txt"))
    if how == "threads":
        tokens = _encode_files(files, tokenizer, method)
    else:  # files dealt to WORKERS processes, largest first, to even out their bytes
        from concurrent.futures import ProcessPoolExecutor

        shares: list[list[str]] = [[] for _ in range(WORKERS)]
        load = [0] * WORKERS
        for f in sorted(files, key=os.path.getsize, reverse=True):
            i = load.index(min(load))
            shares[i].append(f)
            load[i] += os.path.getsize(f)
        with ProcessPoolExecutor(WORKERS) as pool:
            tokens = sum(pool.map(_encode_files, shares, [tokenizer] * WORKERS,
                                  [method] * WORKERS))
    print(json.dumps({"tokens": tokens}))


# --------------------------------------------------------------------------- main

def bench_size(mb: int, ways: list[tuple[str, str]], log: Path) -> dict:
    corpus = WORK / f"corpus-{mb}mb"
    made = build_corpus(corpus, mb * MB)
    size = made["bytes"] / MB
    print(f"{mb} MB: corpus {size:.1f} MB, {made['docs']} documents", flush=True)
    prep = run_prepare(corpus, WORK / f"run-{mb}mb", log)
    prep["mb_per_s"] = round(size / prep["seconds"], 3)
    prep["streaming_mb_per_s"] = round(size / prep["streaming_seconds"], 3)
    print(f"  prepare: {prep['seconds']} s ({prep['phases']}), peak RSS "
          f"{prep['peak_rss_mb']} MB, load {prep['loadavg_before']}", flush=True)
    limits = []
    for how, method in ways:
        lim = run_limit(corpus, WORK / f"run-{mb}mb" / "data" / "tokenizer", how, method, log)
        lim["mb_per_s"] = round(size / lim["seconds"], 3)
        print(f"  limit {lim['way']}: {lim['seconds']} s, {lim['mb_per_s']} MB/s", flush=True)
        limits.append(lim)
    best = max(limits, key=lambda r: r["mb_per_s"])
    shutil.rmtree(WORK / f"run-{mb}mb", ignore_errors=True)
    return {"target_mb": mb, "corpus_mb": round(size, 1), "docs": made["docs"],
            "languages": made["languages"], "prepare": prep, "limit": best,
            "limit_ways": limits if len(limits) > 1 else None,
            "ratio_streaming": round(prep["streaming_mb_per_s"] / best["mb_per_s"], 3),
            "ratio_total": round(prep["mb_per_s"] / best["mb_per_s"], 3),
            "tokens_without_eos": {"prepare": prep["tokens"] - made["docs"],
                                   "limit": best["tokens"]}}


def summarise(sizes: list[dict]) -> dict:
    mb = np.array([s["corpus_mb"] for s in sizes])
    secs = np.array([s["prepare"]["streaming_seconds"] for s in sizes])
    out = {"streaming_seconds_per_mb": [round(t / m, 4) for t, m in zip(secs, mb)]}
    if len(sizes) >= 2:
        slope, intercept = np.polyfit(mb, secs, 1)
        fit = slope * mb + intercept
        r2 = 1 - ((secs - fit) ** 2).sum() / max(((secs - secs.mean()) ** 2).sum(), 1e-12)
        out.update(fit_seconds={"per_mb": round(float(slope), 4),
                                "intercept": round(float(intercept), 2)}, r2=round(float(r2), 5))
    rss = [s["prepare"]["peak_rss_mb"] for s in sizes]
    out["checks"] = {
        "streaming throughput >= 0.8x the limit": all(s["ratio_streaming"] >= 0.8 for s in sizes),
        "peak RSS < 1.5 GB at every size": max(rss) < 1500,
        "peak RSS flat (largest / smallest size)": round(rss[-1] / rss[0], 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,500,2000", help="corpus sizes in MB")
    parser.add_argument("--quick", action="store_true", help="5 MB smoke run, into /tmp")
    parser.add_argument("--keep-corpora", action="store_true", help="keep /tmp corpora")
    parser.add_argument("--limit", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.limit:
        return limit_main(*args.limit)
    sizes = [5] if args.quick else [int(s) for s in args.sizes.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "bench.log"
    results, ways = [], list(LIMIT_WAYS)
    for mb in sizes:
        results.append(bench_size(mb, ways, log))
        ways = [tuple(results[0]["limit"]["way"].split("/"))]  # the fastest on the first size
        if not args.keep_corpora:
            shutil.rmtree(WORK / f"corpus-{mb}mb", ignore_errors=True)
    report = {"date": dt.datetime.now().isoformat(timespec="seconds"),
              "command": "python bench/prepare.py" + (" --quick" if args.quick else
                                                      f" --sizes {args.sizes}"),
              "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory()
                                                                     .total / 2 ** 30, 1)},
              "workers": WORKERS, "sizes": results, "summary": summarise(results),
              "note": "loadavg_* are os.getloadavg() before/after each run: other processes "
                      "on the machine took cores while these figures were taken"}
    target = Path("/tmp/prepare-quick.json") if args.quick else OUT
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
