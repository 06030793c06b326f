"""Adding languages on real text: new experts vs dense and seed LAPT, per parent selection.

Each selection adapts its own copy of a finished run (default: the headline run,
``bench/quality.py``'s typology8, 16 languages, 8 experts) to the same new languages with
``xelm adapt``, so the results do not depend on each other; each copy is a resumable run
directory.

    python bench/quality.py --corpus ../shared/corpus --variants typology8   # once
    python bench/adapt.py --corpus ../shared/corpus --select typology,average --tokens 500000
    # a seed-dominated run of the regime map (seed 6M, x-BTM 1.5M), its own LAPT budget:
    python bench/adapt.py --corpus ../shared/corpus --base runs/bench-regime/d32-seed6M-1500k \
        --prefix d32-seed6M- --select typology,average

Writes ``bench/results/adapt-real.json``: per run (``<prefix><select>``) the command and ``results.json["adapt"]`` (perplexity and bits per byte on
the new languages for every model, forgetting, parents, budgets, old-expert hashes), and
a one-line summary per run. Runs already in the file are kept.
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

HEADLINE = ROOT / "runs" / "bench-quality" / "typology8"
LANGUAGES = "fi,hu,id,ha,th"


def adapt_copy(base: Path, run: Path, corpus: str, languages: str, tokens: int | None,
               select: str) -> dict:
    from xelm.cli import main

    if not run.exists():
        if not (base / "results.json").is_file():
            raise SystemExit(f"{base} is not a finished run (for the headline: "
                             "`python bench/quality.py --corpus DIR --variants typology8`)")
        shutil.copytree(base, run)
    args = ["adapt", str(run), "--languages", languages, "--corpus", corpus, "--select", select]
    args += [] if tokens is None else ["--tokens", str(tokens)]
    if main(args) != 0:
        raise SystemExit(f"adapting {run} failed; see {run / 'xelm.log'}")
    timing = json.loads((run / "timing.json").read_text())
    return {**json.loads((run / "results.json").read_text())["adapt"],
            "seconds": timing.get("adapt")}  # the adapt calls' wall time in this run


def line(name: str, res: dict) -> str:
    ppl = res["perplexity"]

    def versus(model: str) -> str:  # wins and per-language change against dense LAPT
        change = {lang: ppl[model][lang] / ppl["dense_lapt"][lang] - 1 for lang in res["languages"]}
        return (f"{sum(v <= 0 for v in change.values())}/{len(change)} ("
                + ", ".join(f"{k} {100 * v:+.1f}%" for k, v in change.items()) + ")")
    ensemble = f"; posterior ensemble {versus('xelm_posterior')}" if "xelm_posterior" in ppl else ""
    return (f"{name}: new experts beat dense LAPT on {versus('xelm_top1')}{ensemble}; "
            f"old experts unchanged: {res['old_experts_unchanged']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-adapt"))
    parser.add_argument("--languages", default=LANGUAGES)
    parser.add_argument("--base", default=str(HEADLINE), help="the finished run to adapt copies of")
    parser.add_argument("--tokens", type=int,
                        help="LAPT tokens per language (default: the run's per-expert budget)")
    parser.add_argument("--select", default="typology,average",
                        help="comma-separated parent selections: typology, ppl, average")
    parser.add_argument("--prefix", default="", help="result and run name prefix")
    args = parser.parse_args()
    selects = args.select.split(",")
    path = ROOT / "bench" / "results" / "adapt-real.json"
    report = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    for select in selects:
        name = args.prefix + select
        res = adapt_copy(Path(args.base), Path(args.out) / name, args.corpus, args.languages,
                         args.tokens, select)
        base = Path(args.base).resolve()
        base = str(base.relative_to(ROOT)) if base.is_relative_to(ROOT) else str(base)
        report["runs"][name] = {"base": base, "command": " ".join(
            ["python bench/adapt.py --languages", args.languages, "--select", select]
            + (["--tokens", str(args.tokens)] if args.tokens else [])
            + (["--base", base] if Path(args.base).resolve() != HEADLINE else [])
            + (["--prefix", args.prefix] if args.prefix else [])),
            "adapt": res}
    report.update(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=platform.machine(),
                  cpus=os.cpu_count(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    path.write_text(json.dumps(report, indent=2) + "\n")
    for name, run in report["runs"].items():
        print(line(name, run["adapt"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
