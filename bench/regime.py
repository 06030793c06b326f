"""Regime map: where x-ELM starts to beat the dense model, as training tokens per parameter grow.

A series is a model size and a seed budget; its points are training budgets. For each,
``configs/bench-real16.yaml`` is run with 8 typology experts (top-1 routing) and the dense
baseline at the same budget. All points share the prepared data; the points of a series
share its seed model, so a point costs only its dense model and experts. The x axis is
the dense model's total training tokens (seed + x-BTM phase) per parameter: how saturated
the model of that size is. Two points are reused when their runs exist: the headline
(d64, seed 6M, 12M) from ``bench/quality.py`` and its ``--quick`` run (d64, seed 1.5M, 3M;
re-evaluated here on as many test tokens as every other point). Every point is a
resumable run directory: rerun the same command after an interruption.

``--seeds 0,1,2`` trains each point with several seeds (model initialisation and data
order; ``random_seed``; the held-out split stays ``corpus.split_seed``'s, 0 by default).
Points are keyed by series, budget and seed; a series is also named by its split when it
is not ``every_nth`` (the split of the first, leaky, measurements), so that points of
different splits never mix. Per budget, the report gives each seed's mean gain and wins,
their mean and spread, and the crossover of the seed-mean curve and of every seed.

    python bench/regime.py --sizes d64 --seed-tokens 1500000 --budgets 750000,1500000,3000000,6000000
    python bench/regime.py --sizes d32 --seed-tokens 750000 --budgets 375000,750000,1500000,3000000
    python bench/regime.py --sizes d64 --seed-tokens 1500000 --budgets 1500000,3000000 --seeds 0,1,2

``--lr 0.012`` trains dense and experts at that rate (the one ``bench/evidence.py`` chose on
validation for both at the headline) instead of the config's untuned 3e-3.

Writes ``bench/results/regime.json`` (per point: parameters, tokens per parameter, wins
out of 16, mean/min/max relative perplexity reduction, per-language gains) and
``bench/results/regime.png``, and prints per series the crossover: the total tokens per
parameter at which the mean gain of x-ELM-8 over dense turns positive (log-linear
interpolation between the two points around it) and the smallest measured point where it
wins on every language.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from quality import run_config  # noqa: E402

SIZES = {  # name -> model overrides (vocabulary 4096 as in the headline config)
    "d64": ["model.hidden_size=64", "model.layers=2", "model.heads=4",
            "model.intermediate_size=256"],
    "d32": ["model.hidden_size=32", "model.layers=2", "model.heads=4",
            "model.intermediate_size=128"],
}
COMMON = ["allocate.method=typology", "allocate.experts=8", "eval.methods=[top1]"]
HEADLINE = ROOT / "runs" / "bench-quality" / "typology8"        # d64, seed 6M, 12M
QUICK = ROOT / "runs" / "bench-quality-quick" / "typology8"     # d64, seed 1.5M, 3M
STAGES = ("data", "seed", "router", "allocation.json", "dense", "experts", "xelm.json")


def config_split() -> str:
    """The held-out split of ``configs/bench-real16.yaml`` (every point's)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "bench-real16.yaml").read_text())
    return cfg["corpus"].get("split", "random")


def series_name(size: str, seed_tokens: int, split: str = "every_nth",
                lr: float | None = None) -> str:
    tag = "" if split == "every_nth" else f"-{split}"
    if lr is not None:
        tag += f"-lr{lr:g}"
    return f"{size}-seed{seed_tokens / 1e6:g}M{tag}"


def parameters(seed_dir: Path) -> int:
    """Parameters of the seed model (recorded by its training job)."""
    return int(json.loads((seed_dir / "train_state.json").read_text())["parameters"])


def _run_config(run: Path) -> dict:
    """A run's resolved ``config.yaml`` ({} before it has one)."""
    import yaml

    path = run / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _run_split(run: Path) -> str | None:
    return _run_config(run).get("corpus", {}).get("split")


def _run_seed(run: Path) -> int | None:
    return _run_config(run).get("random_seed")


def run_point(out: Path, size: str, seed_tokens: int, tokens: int, corpus: str,
              seed: int = 0, lr: float | None = None) -> Path:
    split = config_split()
    series = series_name(size, seed_tokens, split, lr)
    # the headline and quick runs: seed 0, every_nth, the config's rate
    legacy = seed == 0 and split == "every_nth" and lr is None
    if legacy and (series, tokens) == ("d64-seed6M", 12_000_000) and (HEADLINE / "results.json").is_file():
        return HEADLINE
    run = out / (f"{series}-{tokens // 1000}k" + (f"-s{seed}" if seed else ""))
    if not (run / "config.yaml").exists():
        if legacy and (series, tokens) == ("d64-seed1.5M", 3_000_000) and (QUICK / "xelm.json").is_file():
            for part in STAGES:  # trained already; only the evaluation is redone
                src = QUICK / part
                if src.is_dir():
                    shutil.copytree(src, run / part)
                elif src.is_file():
                    run.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, run / part)
        donors = sorted(p for p in out.glob("*/") if p != run)
        donors += [d for d in (HEADLINE, QUICK) if d.is_dir()]
        for donor in donors:  # share data (any point of the split) and the seed (same series)
            if _run_split(donor) != split:
                continue
            if (donor / "data" / "prepare.json").exists() and not (run / "data").exists():
                shutil.copytree(donor / "data", run / "data")
            state = donor / "seed" / "train_state.json"
            same_size = donor.name.startswith(size + "-") or (donor in (HEADLINE, QUICK)
                                                                and size == "d64")
            if same_size and _run_seed(donor) == seed and state.exists() \
                    and not (run / "seed").exists():
                info = json.loads(state.read_text())
                if info.get("done") and info.get("budget_tokens") == seed_tokens:
                    shutil.copytree(donor / "seed", run / "seed")
    rates = [] if lr is None else [f"train.lr={lr}", f"train.dense_lr={lr}"]
    return run_config(run, corpus, [f"train.tokens={tokens}", f"seed.tokens={seed_tokens}",
                                    f"random_seed={seed}", *rates, *SIZES[size], *COMMON],
                      f"point {series}/{tokens} seed {seed}")


def summarise(run: Path) -> dict:
    from xelm.report.markdown import gains, summary

    results = json.loads((run / "results.json").read_text())
    params = parameters(run / "seed")
    budget = results["budget"]
    cfg = _run_config(run)
    train = cfg.get("train", {})
    return {"run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
            "random_seed": cfg.get("random_seed") or 0, "split": cfg.get("corpus", {}).get("split"),
            "lr": {"experts": train.get("lr"), "dense": train.get("dense_lr") or train.get("lr")},
            "parameters": params, "train_tokens": budget["dense_tokens"],
            "seed_tokens": budget["seed_tokens"],
            "train_tokens_per_parameter": budget["dense_tokens"] / params,
            "tokens_per_parameter": (budget["dense_tokens"] + budget["seed_tokens"]) / params,
            "summary": summary(results, "xelm_top1"), "gain_per_language": gains(results),
            "perplexity": {k: results["perplexity"][k] for k in ("dense", "xelm_top1")}}


def by_budget(points: list[dict]) -> list[dict]:
    """One entry per budget: the mean over its seeds of the summary figures (a single seed
    is itself), with each seed's mean gain and wins and their spread (sample std)."""
    groups: dict[int, list[dict]] = {}
    for p in points:
        groups.setdefault(p["train_tokens"], []).append(p)
    out = []
    for tokens, ps in sorted(groups.items()):
        ps = sorted(ps, key=lambda p: p.get("random_seed", 0))
        gains = [p["summary"]["mean_ppl_reduction"] for p in ps]
        wins = [p["summary"]["wins"] for p in ps]
        langs = ps[0]["gain_per_language"]
        out.append({"train_tokens": tokens, "tokens_per_parameter": ps[0]["tokens_per_parameter"],
                    "parameters": ps[0]["parameters"],
                    "seeds": [p.get("random_seed", 0) for p in ps],
                    "seed_mean_gains": gains, "seed_wins": wins,
                    "seed_sd": statistics.stdev(gains) if len(gains) > 1 else None,
                    "summary": {"mean_ppl_reduction": statistics.fmean(gains),
                                "wins": min(wins), "languages": ps[0]["summary"]["languages"]},
                    "gain_per_language": {lg: statistics.fmean(p["gain_per_language"][lg]
                                                               for p in ps) for lg in langs}})
    return out


def crossover(points: list[dict]) -> dict:
    """Where the mean gain turns positive (log-linear interpolation) and 16/16 first holds
    (every seed), on the seed-mean curve; and the crossover of each seed alone."""
    out = _crossover(by_budget(points))
    seeds = sorted({p.get("random_seed", 0) for p in points})
    if len(seeds) > 1:
        out["per_seed"] = {str(s): _crossover([p for p in points if p.get("random_seed", 0) == s])
                           for s in seeds}
    return out


def _crossover(points: list[dict]) -> dict:
    pts = sorted(points, key=lambda p: p["tokens_per_parameter"])
    out = {"mean_gain_positive_at": None, "all_languages_from": None}
    for a, b in zip(pts, pts[1:]):
        ga, gb = a["summary"]["mean_ppl_reduction"], b["summary"]["mean_ppl_reduction"]
        if ga <= 0 < gb:
            xa, xb = math.log(a["tokens_per_parameter"]), math.log(b["tokens_per_parameter"])
            out["mean_gain_positive_at"] = round(math.exp(xa + (xb - xa) * (-ga) / (gb - ga)), 2)
            break
    if out["mean_gain_positive_at"] is None and pts and pts[0]["summary"]["mean_ppl_reduction"] > 0:
        out["mean_gain_positive_at"] = f"< {pts[0]['tokens_per_parameter']:.2f} (positive at every budget)"
    for p in pts:
        if p["summary"]["wins"] == p["summary"]["languages"]:
            out["all_languages_from"] = round(p["tokens_per_parameter"], 2)
            break
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for size, points in report.items():
        pts = by_budget(points)  # seed means; the bars span the seeds' mean gains
        xs = [p["tokens_per_parameter"] for p in pts]
        ys = [100 * p["summary"]["mean_ppl_reduction"] for p in pts]
        line = ax.plot(xs, ys, "o-",
                       label=f"{size} ({pts[0]['parameters'] / 1e6:.2f}M params): mean")[0]
        lo = [y - 100 * min(p["seed_mean_gains"]) for y, p in zip(ys, pts)]
        hi = [100 * max(p["seed_mean_gains"]) - y for y, p in zip(ys, pts)]
        if any(lo) or any(hi):
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", color=line.get_color(), capsize=3)
        # (``size`` is a series: model size and seed budget)
        for p in pts:
            ys = [100 * g for g in p["gain_per_language"].values()]
            ax.scatter([p["tokens_per_parameter"]] * len(ys), ys, s=8, alpha=0.35,
                       color=line.get_color())
            ax.annotate(f"{p['summary']['wins']}/{p['summary']['languages']}",
                        (p["tokens_per_parameter"], 100 * p["summary"]["mean_ppl_reduction"]),
                        textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("total training tokens per parameter (seed + dense; x-ELM-8: the same)")
    ax.set_ylabel("perplexity reduction of x-ELM-8 (top-1) vs dense, %")
    ax.set_title("Where x-ELM beats dense (16 languages; dots: languages, labels: wins)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-regime"))
    parser.add_argument("--sizes", default="d64,d32", help=f"from {', '.join(SIZES)}")
    parser.add_argument("--seed-tokens", type=int, default=6_000_000,
                        help="seed budget of the series (all its points branch from one seed)")
    parser.add_argument("--budgets", default="1500000,3000000,6000000,12000000",
                        help="training tokens of the dense model (= the expert set's total)")
    parser.add_argument("--seeds", default="0",
                        help="random seeds of every point (model initialisation, data order)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate of dense and experts (train.lr, train.dense_lr; the "
                             "seed keeps the config's); default: the config's. The series is "
                             "named by it, so points at other rates never mix")
    args = parser.parse_args()
    out = Path(args.out)
    budgets = [int(float(b)) for b in args.budgets.split(",")]
    path = ROOT / "bench" / "results" / "regime.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    report: dict[str, list[dict]] = previous.get("sizes", {})
    start = time.time()
    for size in args.sizes.split(","):
        if size not in SIZES:
            raise SystemExit(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
        series = series_name(size, args.seed_tokens, config_split(), args.lr)
        points = {(p["train_tokens"], p.get("random_seed", 0)): p for p in report.get(series, [])}
        for seed in [int(x) for x in args.seeds.split(",")]:
            for tokens in budgets:
                point = summarise(run_point(out, size, args.seed_tokens, tokens, args.corpus,
                                            seed, args.lr))
                points[point["train_tokens"], seed] = point
                report[series] = sorted(points.values(),
                                        key=lambda p: (p["train_tokens"], p["random_seed"]))
                s = point["summary"]
                print(f"{series} {tokens / 1e6:g}M seed {seed} ({point['tokens_per_parameter']:.1f} "
                      f"tok/param): top1 wins {s['wins']}/{s['languages']}, mean ppl "
                      f"{-100 * s['mean_ppl_reduction']:+.1f}%", flush=True)
    # another invocation (other sizes) may have written meanwhile: keep its sizes
    latest = json.loads(path.read_text()) if path.exists() else {}
    report = {**latest.get("sizes", {}), **report}
    previous["wall_seconds_by_command"] = {**latest.get("wall_seconds_by_command", {}),
                                           **previous.get("wall_seconds_by_command", {})}
    result = {"command": "python bench/regime.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "wall_seconds_by_command": {**previous.get("wall_seconds_by_command", {}),
                                          " ".join(sys.argv[1:]): round(time.time() - start, 1)},
              "crossover": {size: crossover(points) for size, points in report.items()},
              "sizes": report}
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot(report, ROOT / "bench" / "results" / "regime.png")
    for size, c in result["crossover"].items():
        print(f"{size}: mean gain positive from {c['mean_gain_positive_at']} tokens/param; "
              f"16/16 from {c['all_languages_from']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
