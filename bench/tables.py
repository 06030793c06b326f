"""Markdown tables for BENCHMARKS.md from bench/results/quality.json and regime.json.

    python bench/tables.py            # prints the tables; paste them into BENCHMARKS.md

Printing from the JSON (never retyping numbers) keeps BENCHMARKS.md equal to what the
benchmarks measured.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"xelm_top1": "top-1", "xelm_top1_langid": "top-1 by language ID",
         "xelm_ensemble_posterior": "posterior ensemble",
         "xelm_ensemble_posterior_context": "posterior ensemble, preceding block as evidence",
         "xelm_ensemble_tfidf": "TF-IDF ensemble",
         "xelm_top1_tfidf": "top-1 by TF-IDF", "xelm_ensemble": "uniform ensemble"}


def pct(x: float) -> str:
    return f"{-100 * x:+.1f}%"


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for i, j in enumerate(order):
            r[j] = float(i)
        return r
    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb)


def source(data: dict, extra: str = "") -> None:
    """An HTML comment naming the command and date behind the tables that follow."""
    print(f"\n<!-- {data['command']} ; {data['date']}{extra} -->\n")


def quality(path: Path) -> None:
    data = json.loads(path.read_text())
    times = {name: round(sum(v.get("timing", {}).values())) for name, v in data["variants"].items()}
    source(data, f" ; stage seconds per variant: {times}")
    print("| variant | method | wins vs dense | mean ppl vs dense | mean bits/byte vs dense "
          "| std | best / worst language |")
    print("|---|---|---|---|---|---|---|")
    for name, v in data["variants"].items():
        for method, s in v["summary"].items():
            gains = {lang: 1 - v["perplexity"][method][lang] / v["perplexity"]["dense"][lang]
                     for lang in v["perplexity"]["dense"]}
            best, worst = max(gains, key=gains.get), min(gains, key=gains.get)
            print(f"| {name} | {NAMES.get(method, method)} | {s['wins']}/{s['languages']} | "
                  f"{pct(s['mean_ppl_reduction'])} | {pct(s['mean_bpb_reduction'])} | "
                  f"{100 * s['std_ppl_reduction']:.1f} | {best} {pct(gains[best])} / "
                  f"{worst} {pct(gains[worst])} |")
    for name, v in data["variants"].items():
        ppl, bpb = v["perplexity"], v["bits_per_byte"]
        methods = [m for m in ppl if m.startswith("xelm_")]
        print(f"\n**{name}** — perplexity per language (bits per byte in brackets)\n")
        print("| language | data share | tokens/byte | dense | "
              + " | ".join(NAMES.get(m, m) for m in methods) + " | top-1 vs dense |")
        print("|---" * (5 + len(methods)) + "|")
        for lang, info in v["per_language"].items():
            cells = " | ".join(f"{ppl[m][lang]:.2f} ({bpb[m][lang]:.3f})" for m in methods)
            print(f"| {lang} | {100 * info['data_share']:.1f}% | {info['tokens_per_byte']:.3f} | "
                  f"{ppl['dense'][lang]:.2f} ({bpb['dense'][lang]:.3f}) | {cells} | "
                  f"{pct(info['gain_top1'])} |")
        langs = list(v["per_language"])
        g = [v["per_language"][lang]["gain_top1"] for lang in langs]
        share = [v["per_language"][lang]["data_share"] for lang in langs]
        fert = [v["per_language"][lang]["tokens_per_byte"] for lang in langs]
        print(f"\nSpearman correlation of the top-1 gain with data share: "
              f"{spearman(g, share):+.2f}; with tokens per byte: {spearman(g, fert):+.2f}.")


def regime(path: Path) -> None:
    data = json.loads(path.read_text())
    source(data, f" ; wall s by command: {data['wall_seconds_by_command']}")
    print("| series | parameters | seed tokens per parameter | dense training tokens | total "
          "tokens per parameter | x-ELM-8 top-1 wins | mean ppl vs dense | worst language |")
    print("|---|---|---|---|---|---|---|---|")
    for size, points in data["sizes"].items():
        for p in points:
            s = p["summary"]
            print(f"| {size} | {p['parameters'] / 1e6:.2f}M | "
                  f"{p['seed_tokens'] / p['parameters']:.1f} | {p['train_tokens'] / 1e6:.2f}M | "
                  f"{p['tokens_per_parameter']:.1f} | {s['wins']}/{s['languages']} | "
                  f"{pct(s['mean_ppl_reduction'])} | {pct(s['min_ppl_reduction'])} |")
    print("\n| series | mean gain turns positive at (total tokens/parameter) | 16/16 from |")
    print("|---|---|---|")
    for size, c in data["crossover"].items():
        print(f"| {size} | {c['mean_gain_positive_at']} | {c['all_languages_from']} |")


def main() -> int:
    results = ROOT / "bench" / "results"
    if (results / "quality.json").is_file():
        quality(results / "quality.json")
    if (results / "regime.json").is_file():
        regime(results / "regime.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
