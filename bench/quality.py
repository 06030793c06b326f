"""Quality benchmark: x-ELM vs dense at equal training tokens on real text.

Runs ``configs/bench-real16.yaml`` (the paper's 16 languages, capacity-bound model) once
per allocation variant. The variants share the prepared data, the seed and the dense
baseline (copied from the first run, identical by construction: same config up to
``allocate.*``), so each extra variant costs only its experts. Every run directory is
resumable: rerun the same command after an interruption.

    python bench/quality.py --corpus ../shared/corpus            # headline (~45 min, 2 cores)
    python bench/quality.py --corpus ../shared/corpus --quick    # smaller budgets (~10 min)

Writes ``bench/results/quality.json`` (or ``quality-quick.json``): per variant the
per-language perplexity and bits per byte of dense and each method, and a summary (wins
out of 16, mean/std/min/max relative reduction, gain vs data share and tokenizer fertility).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = {
    "typology8": ["allocate.method=typology", "allocate.experts=8"],
    "typology4": ["allocate.method=typology", "allocate.experts=4"],
    "tfidf8": ["allocate.method=tfidf", "allocate.experts=8"],
    "tfidf4": ["allocate.method=tfidf", "allocate.experts=4"],
    # HMR: round 1 trains 2 experts on the tree's halves, round 2 branches the 8 leaves
    "hmr8": ["allocate.method=typology", "allocate.experts=8", "hmr.rounds=[2,8]"],
}
QUICK = ["seed.tokens=1500000", "train.tokens=3000000", "eval.max_tokens_per_language=20000"]
SHARED = ("data", "seed", "dense")


def run_config(run: Path, corpus: str, sets: list[str], what: str) -> Path:
    """``xelm run configs/bench-real16.yaml`` into ``run`` with ``--set`` overrides
    (resumable: rerunning a finished run only re-reads it). Shared with ``regime.py``."""
    from xelm.cli import main

    args = ["run", str(ROOT / "configs" / "bench-real16.yaml"), "--out", str(run),
            "--set", f"corpus.path={corpus}"]
    for item in sets:
        args += ["--set", item]
    if main(args) != 0:
        raise SystemExit(f"{what} failed; see {run / 'xelm.log'}")
    return run


def run_variant(name: str, out: Path, corpus: str, extra: list[str], first: Path | None) -> Path:
    run = out / name
    if first is not None and not (run / "config.yaml").exists():
        for part in SHARED:
            if (first / part).exists() and not (run / part).exists():
                shutil.copytree(first / part, run / part)
    return run_config(run, corpus, [*VARIANTS[name], *extra], f"variant {name}")


def summarise(run: Path) -> dict:
    from xelm.report.markdown import gains, summary

    results = json.loads((run / "results.json").read_text())
    prepared = json.loads((run / "data" / "prepare.json").read_text())
    stats = prepared["stats"]
    total = sum(s["train"]["tokens"] for s in stats.values())
    methods = [m for m in results["perplexity"] if m.startswith("xelm_")]
    per_lang = {lang: {"data_share": stats[lang]["train"]["tokens"] / total,
                       "tokens_per_byte": stats[lang]["train"]["tokens"] / stats[lang]["train"]["bytes"],
                       "gain_top1": gains(results)[lang]} for lang in results["languages"]}
    ensembles = [m for m in methods if m != "xelm_top1"]
    best = min(ensembles, key=lambda m: sum(results["bits_per_byte"][m].values()), default=None)
    return {"summary": {m: summary(results, m) for m in methods}, "best_ensemble": best,
            "per_language": per_lang, "perplexity": results["perplexity"],
            "bits_per_byte": results["bits_per_byte"], "budget": results["budget"],
            "timing": results.get("timing", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-quality"))
    parser.add_argument("--quick", action="store_true", help="smaller budgets (about 10 minutes)")
    parser.add_argument("--variants", default="typology8,typology4",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    args = parser.parse_args()
    out = Path(args.out + ("-quick" if args.quick else ""))
    extra = QUICK if args.quick else []
    path = ROOT / "bench" / "results" / ("quality-quick.json" if args.quick else "quality.json")
    # variants accumulate across invocations (each run directory is reused, so rerunning
    # a finished variant only re-reads its results); a variant's time is the stage times
    # its run directory recorded (``timing``), which survive resumes and re-reads
    previous = json.loads(path.read_text()) if path.exists() else {}
    first, report = None, dict(previous.get("variants", {}))
    for name in VARIANTS:  # a variant already run shares its seed and dense baseline
        if first is None and (out / name / "dense").exists():
            first = out / name
    for name in args.variants.split(","):
        run = run_variant(name, out, args.corpus, extra, first)
        first = first or run
        report[name] = summarise(run)
    result = {"command": "python bench/quality.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "variants": report}
    path.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in report.items():
        s = r["summary"]["xelm_top1"]
        print(f"{name}: top1 wins {s['wins']}/{s['languages']}, mean ppl "
              f"{-100 * s['mean_ppl_reduction']:+.1f}%, bpb {-100 * s['mean_bpb_reduction']:+.1f}% vs dense")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
