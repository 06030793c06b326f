"""Minimal pairs (issue 22): does x-ELM's perplexity gain carry over to a task these small
models can pass or fail?

For a finished run (``xelm run``), builds the minimal-pair tasks from the run's own data
(:mod:`xelm.evaluate.minimal_pairs`: grammar pairs on the synthetic corpus, perturbed
held-out sentences on real text), scores seed, dense, x-ELM top-1 and the best label-free
method the lm-eval model runs (lowest bits per byte in ``results.json``; the posterior
ensemble, scored on the test split here, when the run evaluated none) through lm-eval,
and, per language, sets the change in accuracy (x-ELM minus dense, paired over the same
pairs) against the change in perplexity (``results.json``), with Pearson's and Spearman's
correlation and their intervals.

    python bench/minimal_pairs.py --run /tmp/mp-demo --name synthetic-demo
    python bench/minimal_pairs.py --run runs/bench-evidence/seed0-typology8 --name real-typology8

Writes ``bench/results/minimal_pairs.json`` (one entry per ``--name``; other entries are
kept) and ``bench/results/minimal_pairs-<name>.png``. Tasks and per-model scores live in
the work folder (default ``runs/minimal-pairs/<name>``); scores are cached there, keyed on
the pairs and the weights, so a rerun only re-analyses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "bench" / "results"


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _model_key(run: Path, model: str, tasks_key: str) -> dict:
    if model in ("seed", "dense"):
        weights = _fingerprint(list((run / model).glob("*.safetensors")))
    else:  # xelm.json pins every expert's weights by SHA-256
        weights = _fingerprint([run / "xelm.json"])
    return {"tasks": tasks_key, "weights": weights}


def score_all(run: Path, summary: dict, work: Path, models: list[str],
              batch_size: int) -> tuple[dict, dict]:
    """Per-pair outcomes of every model (cached in ``work/scores``) and seconds spent."""
    from xelm.evaluate.pairs_score import score_pairs
    from xelm.io import read_json, write_json

    tasks_key = _fingerprint(list((work / "tasks" / "data").glob("*.jsonl")))
    outcomes, seconds, experts = {}, {}, None
    for model in models:
        cache, key = work / "scores" / f"{model}.json", _model_key(run, model, tasks_key)
        cached = read_json(cache) if cache.is_file() else {}
        if cached.get("key") != key:
            if model.startswith("xelm_") and experts is None:
                from xelm.experts.manifest import ExpertSet

                experts = ExpertSet.load(run)
            start = time.perf_counter()
            print(f"scoring {model} ...", flush=True)
            got = score_pairs(run, summary, model, batch_size=batch_size, expert_set=experts)
            cached = {"key": key, "outcomes": got,
                      "seconds": round(time.perf_counter() - start, 1)}
            write_json(cache, cached)
        outcomes[model], seconds[model] = cached["outcomes"], cached["seconds"]
    return outcomes, seconds


def _delta(outcomes: dict, a: str, b: str, lang: str) -> dict:
    from xelm.evaluate.pairs_score import paired_difference

    x = [h for v in outcomes[a][lang].values() for h in v]
    y = [h for v in outcomes[b][lang].values() for h in v]
    mean, lo, hi = paired_difference(x, y)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(x)}


def analyse(outcomes: dict, results: dict, label_free: str | None) -> dict:
    """Accuracies, per-language deltas against dense and the correlations."""
    from xelm.evaluate.pairs_score import accuracy_table, correlation, paired_difference, wilson

    ppl = results["perplexity"]
    langs = sorted(outcomes["dense"])
    out: dict = {"accuracy": {m: accuracy_table(o) for m, o in outcomes.items()},
                 "pooled": {}, "per_language": {}, "per_phenomenon": {}, "correlation": {}}
    for model, per in outcomes.items():
        hits = [h for lang in per.values() for v in lang.values() for h in v]
        lo, hi = wilson(sum(hits), len(hits))
        out["pooled"][model] = {"acc": sum(hits) / len(hits), "lo": lo, "hi": hi, "n": len(hits),
                                "mean_of_languages": statistics.fmean(
                                    out["accuracy"][model][lg]["all"]["acc"] for lg in per)}
    compared = [m for m in ("xelm_top1", label_free) if m]
    out["pooled_minus_dense"] = {}
    for model in compared:
        x, y = ([h for lang in outcomes[m].values() for v in lang.values() for h in v]
                for m in (model, "dense"))
        mean, lo, hi = paired_difference(x, y)
        out["pooled_minus_dense"][model] = {"mean": mean, "lo": lo, "hi": hi, "n": len(x)}
        rows = {lang: {"dppl_pct": 100 * (ppl[model][lang] / ppl["dense"][lang] - 1),
                       "dacc": _delta(outcomes, model, "dense", lang)} for lang in langs}
        out["per_language"][model] = rows
        out["correlation"][model] = correlation([rows[lg]["dppl_pct"] for lg in langs],
                                                [rows[lg]["dacc"]["mean"] for lg in langs])
        wins = [lg for lg in langs if rows[lg]["dacc"]["mean"] > 0]
        out["correlation"][model].update({
            "languages_acc_up": len(wins), "languages_ppl_down": sum(
                rows[lg]["dppl_pct"] < 0 for lg in langs), "languages": len(langs),
            "languages_acc_up_ci_above_0": sum(rows[lg]["dacc"]["lo"] > 0 for lg in langs),
            "languages_acc_down_ci_below_0": sum(rows[lg]["dacc"]["hi"] < 0 for lg in langs)})
    phenomena = sorted({ph for lang in outcomes["dense"].values() for ph in lang})
    for ph in phenomena:
        have = [lg for lg in langs if ph in outcomes["dense"][lg]]
        row = {"languages": len(have)}
        for model in outcomes:
            hits = [h for lg in have for h in outcomes[model][lg][ph]]
            row[model] = sum(hits) / len(hits)
        for model in compared:
            x = [h for lg in have for h in outcomes[model][lg][ph]]
            y = [h for lg in have for h in outcomes["dense"][lg][ph]]
            mean, lo, hi = paired_difference(x, y)
            row[f"{model}_minus_dense"] = {"mean": mean, "lo": lo, "hi": hi, "n": len(x)}
        out["per_phenomenon"][ph] = row
    return out


def plot(analysis: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(analysis["per_language"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows, corr = analysis["per_language"][model], analysis["correlation"][model]
        x = [r["dppl_pct"] for r in rows.values()]
        y = [100 * r["dacc"]["mean"] for r in rows.values()]
        err = [[100 * (r["dacc"]["mean"] - r["dacc"]["lo"]) for r in rows.values()],
               [100 * (r["dacc"]["hi"] - r["dacc"]["mean"]) for r in rows.values()]]
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, alpha=0.8)
        for lang, xi, yi in zip(rows, x, y):
            ax.annotate(lang, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
        ci = corr["pearson_ci"]
        ax.set_title(f"{model} vs dense: Pearson r = {corr['pearson']:.2f}"
                     + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""), fontsize=10)
        ax.set_xlabel("perplexity change vs dense (%)")
        ax.set_ylabel("minimal-pair accuracy change (points, 95% CI)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(entry: dict) -> str:
    a = entry["analysis"]
    models = list(a["pooled"])
    lines = ["| model | pooled accuracy % [95% CI] | mean of languages % |", "|---|---|---|"]
    lines += [f"| {m} | {100 * p['acc']:.1f} [{100 * p['lo']:.1f}, {100 * p['hi']:.1f}] | "
              f"{100 * p['mean_of_languages']:.1f} |" for m, p in a["pooled"].items()]
    lines += ["", "| phenomenon | langs | " + " | ".join(models) + " | top-1 - dense |",
              "|---" * (len(models) + 3) + "|"]
    for ph, row in a["per_phenomenon"].items():
        d = row["xelm_top1_minus_dense"]
        lines.append(f"| {ph} | {row['languages']} | " + " | ".join(
            f"{100 * row[m]:.1f}" for m in models)
            + f" | {100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] |")
    for model, c in a["correlation"].items():
        ci, sci, d = c["pearson_ci"], c["spearman_ci"], a["pooled_minus_dense"][model]
        lines += ["", f"{model} minus dense, pooled over {d['n']} pairs: "
                  f"{100 * d['mean']:+.2f} points [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]",
                  f"{model} vs dense over {c['n']} languages: accuracy up in "
                  f"{c['languages_acc_up']} ({c['languages_acc_up_ci_above_0']} with the CI "
                  f"above 0, {c['languages_acc_down_ci_below_0']} below), perplexity down in "
                  f"{c['languages_ppl_down']}; Pearson r(dppl, dacc) = {c['pearson']:.2f}"
                  + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                  + f", Spearman {c['spearman']:.2f}" + (f" [{sci[0]:.3f}, {sci[1]:.3f}]"
                                                           if sci else "")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished run directory (results.json)")
    p.add_argument("--name", help="entry name in the JSON (default: the run folder's name)")
    p.add_argument("--pairs", default="auto", choices=("auto", "grammar", "text"))
    p.add_argument("--n", type=int, default=300, help="pairs per language and phenomenon")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--work", help="tasks and score cache (default runs/minimal-pairs/NAME)")
    p.add_argument("--json", default=str(RESULTS / "minimal_pairs.json"))
    p.add_argument("--png", help="default bench/results/minimal_pairs-NAME.png")
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's bars, one per task and model

    import yaml

    from xelm.evaluate.minimal_pairs import build_minimal_pairs
    from xelm.evaluate.pairs_score import best_label_free
    from xelm.io import read_json, write_json
    from xelm.outputs import claim_out_dir

    run = Path(args.run).resolve()
    if not (run / "results.json").is_file():
        raise SystemExit(f"{run} has no results.json: finish the run first (xelm run)")
    name = args.name or run.name
    work = claim_out_dir(args.work or ROOT / "runs" / "minimal-pairs" / name,
                         "bench/minimal_pairs.py")
    results = read_json(run / "results.json")
    context = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["model"]["context"]
    start = time.perf_counter()
    summary = build_minimal_pairs(run, work / "tasks", pairs=args.pairs, n=args.n,
                                  seed=args.seed, max_tokens=context - 2)
    built = time.perf_counter() - start
    if best_label_free(results) is None:  # the run evaluated top-1 only: score it here
        from xelm.export.rundata import run_config
        from xelm.pipeline.eval import with_methods
        from xelm.rundir import RunDir

        results = with_methods(run_config(run), RunDir(run), results, ["ensemble_posterior"])
    chosen = best_label_free(results)
    models = [m for m in ("seed", "dense") if (run / m).is_dir()] + ["xelm_top1"]
    label_free = None
    if chosen:
        label_free = f"xelm_{chosen[1]}"
        models.append(label_free)
        # results.json name of the method whose perplexity the label-free scores pair with
        results["perplexity"][label_free] = results["perplexity"][chosen[0]]
    outcomes, seconds = score_all(run, summary, work, models, args.batch_size)
    analysis = analyse(outcomes, results, label_free)
    png = Path(args.png or RESULTS / f"minimal_pairs-{name}.png")
    plot(analysis, png, f"{name}: minimal pairs ({summary['pairs']}) vs perplexity, per language")
    entry = {"run": str(run), "pairs": summary["pairs"], "n_per_task": args.n,
             "n_pairs": summary["n_pairs"], "skipped": summary["skipped"],
             "label_free": {"results_method": chosen[0], "lm_eval_method": chosen[1]}
             if chosen else None,
             "models": models, "max_tokens": context - 2, "seconds": {"build": round(built, 1),
                                                                      **seconds},
             "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "omp_threads": os.environ.get("OMP_NUM_THREADS")},
             "command": "python bench/minimal_pairs.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
             "png": str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png),
             "analysis": analysis}
    out = Path(args.json)
    data = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    data.setdefault("runs", {})[name] = entry
    write_json(out, data)
    print(markdown(entry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
