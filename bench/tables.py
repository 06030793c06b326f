"""Markdown tables for BENCHMARKS.md from bench/results/quality.json, regime.json and
evidence.json (with evidence-train.json).

    python bench/tables.py                   # prints the tables; paste them into BENCHMARKS.md
    python bench/tables.py --evidence PATH   # only the evidence tables, of PATH

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
    from regime import by_budget  # one entry per budget, over its seeds

    data = json.loads(path.read_text())
    source(data, f" ; wall s by command: {data['wall_seconds_by_command']}")
    print("| series | parameters | seed tokens per parameter | dense training tokens | total "
          "tokens per parameter | x-ELM-8 top-1 wins | mean ppl vs dense | worst language |")
    print("|---|---|---|---|---|---|---|---|")
    seeded = [size for size, points in data["sizes"].items()
              if len({p.get("random_seed", 0) for p in points}) > 1]
    for size, points in data["sizes"].items():
        for p in points:
            s = p["summary"]
            name = f"{size}, seed {p.get('random_seed', 0)}" if size in seeded else size
            print(f"| {name} | {p['parameters'] / 1e6:.2f}M | "
                  f"{p['seed_tokens'] / p['parameters']:.1f} | {p['train_tokens'] / 1e6:.2f}M | "
                  f"{p['tokens_per_parameter']:.1f} | {s['wins']}/{s['languages']} | "
                  f"{pct(s['mean_ppl_reduction'])} | {pct(s['min_ppl_reduction'])} |")
    if seeded:
        print("\nSeries with several seeds, per budget: the mean over seeds of the mean ppl change "
              "(sample sd of the seeds), each seed's change and wins, and the language whose "
              "seed-mean change is worst.\n")
        print("| series | dense training tokens | total tokens per parameter | seeds | mean ppl vs "
              "dense (seed sd) | per seed | wins per seed | worst language |")
        print("|---|---|---|---|---|---|---|---|")
    for size in seeded:
        for b in by_budget(data["sizes"][size]):
            sd = f" ({100 * b['seed_sd']:.1f})" if b["seed_sd"] is not None else ""
            langs = b["gain_per_language"]
            worst = min(langs, key=langs.get)
            print(f"| {size} | {b['train_tokens'] / 1e6:.2f}M | {b['tokens_per_parameter']:.1f} | "
                  f"{', '.join(map(str, b['seeds']))} | "
                  f"{pct(b['summary']['mean_ppl_reduction'])}{sd} | "
                  f"{' / '.join(pct(g) for g in b['seed_mean_gains'])} | "
                  f"{' / '.join(map(str, b['seed_wins']))} of {b['summary']['languages']} | "
                  f"{worst} {pct(langs[worst])} |")
    print("\n| series | mean gain turns positive at (total tokens/parameter) | 16/16 from |")
    print("|---|---|---|")
    for size, c in data["crossover"].items():
        print(f"| {size} | {c['mean_gain_positive_at']} | {c['all_languages_from']} |")
        for seed, cs in c.get("per_seed", {}).items():
            print(f"| {size}, seed {seed} alone | {cs['mean_gain_positive_at']} | "
                  f"{cs['all_languages_from']} |")


def ci(v: dict) -> str:
    """A change and its decision interval in percent (negative: x-ELM/method better)."""
    return f"{100 * v['mean']:+.1f}% [{100 * v['ci95'][0]:+.1f}, {100 * v['ci95'][1]:+.1f}]"


def evidence(path: Path) -> None:
    """Issue 19: the sweep, the per-language change with intervals, label-free routing
    in three settings, token exposure and the exposure-matched variant."""
    data = json.loads(path.read_text())
    train_path = Path(data["train_json"])
    train_path = train_path if train_path.is_absolute() else ROOT / train_path
    train = json.loads(train_path.read_text()) if train_path.is_file() else {}
    source(data, f" ; seeds {data['n_seeds']}")
    if train.get("sweep"):
        print("| learning rate | dense: valid loss | x-ELM top-1: valid loss |")
        print("|---|---|---|")
        for lr, v in sorted(train["sweep"].items(), key=lambda kv: float(kv[0])):
            print(f"| {lr} | {v['dense']['loss']:.4f} | {v['xelm_top1']['loss']:.4f} |")
        c = train["chosen"]
        print(f"\nChosen on validation: dense {c['dense_lr']:g}, experts {c['expert_lr']:g}.")
        if train.get("seed0_valid"):
            s = train["seed0_valid"]
            print(f"Seed 0 retrained at the chosen rates: valid loss dense {s['dense']['loss']:.4f}, "
                  f"x-ELM top-1 {s['xelm_top1']['loss']:.4f}.")
    variants = data["variants"]
    print()
    names = [v for v in variants]
    print("| language | " + " | ".join(f"{v}: top-1 vs dense [95% CI] (seed sd)" for v in names)
          + " |")
    print("|---" * (len(names) + 1) + "|")
    first = variants[names[0]]["vs_dense"]["top1"]["per_language"]
    for lang in first:
        cells = []
        for v in names:
            x = variants[v]["vs_dense"]["top1"]["per_language"][lang]
            mark = " **win**" if x["win"] else (" loss" if x["loss"] else "")
            sd = f" ({100 * x['seed_sd']:.1f})" if x.get("seed_sd") is not None else ""
            cells.append(ci(x) + sd + mark)
        print(f"| {lang} | " + " | ".join(cells) + " |")
    cells = []
    for v in names:
        r = variants[v]["vs_dense"]["top1"]
        cells.append(f"{ci(r['overall'])}; wins {r['wins']}/{r['languages']}, losses "
                     f"{r['losses']} (mean below 0: {r['wins_point']})")
    print("| **all (unweighted mean)** | " + " | ".join(cells) + " |")
    for v in names:
        lf = variants[v]["label_free"]
        print(f"\n{v}: label-free methods, change against top-1 (with the label) and wins "
              f"against dense, per setting ({100 * lf['language_switches']:.0f}% of documents in "
              "the interleaved stream follow one of another language):\n")
        settings = lf["settings"]
        print("| method | " + " | ".join(f"{s}: vs top-1 | {s}: wins vs dense" for s in settings) + " |")
        print("|---" * (2 * len(settings) + 1) + "|")
        methods = list(lf[settings[0]]["vs_top1"])
        for m in methods:
            cells = []
            for s in settings:
                a, b = lf[s]["vs_top1"][m], lf[s]["vs_dense"][m]
                cells += [ci(a["overall"]), f"{b['wins']}/{b['languages']}"]
            print(f"| {m} | " + " | ".join(cells) + " |")
    v = names[0]
    e = variants[v]["exposure"]
    gain = variants[v]["vs_dense"]["top1"]["per_language"]
    print(f"\n{v}: expected training tokens per language (mean over seeds) and the top-1 change:\n")
    print("| language | from dense | from its expert | expert / dense | data share | tokens/byte | top-1 vs dense |")
    print("|---|---|---|---|---|---|---|")
    for lang, x in e["per_language"].items():
        print(f"| {lang} | {x['dense_tokens']:,.0f} | {x['expert_tokens']:,.0f} | "
              f"{x['expert_to_dense']:.2f} | {100 * x['data_share']:.1f}% | "
              f"{x['tokens_per_byte']:.3f} | {100 * gain[lang]['mean']:+.1f}% |")
    rho = e["spearman_gain_with"]
    print("\nSpearman of the gain with: " + ", ".join(f"{k} {r:+.2f}" for k, r in rho.items()))
    if "typology8_exposure" in variants and "typology8" in variants:
        same = variants["typology8_exposure"]["vs_dense"]["top1"]
        base = variants["typology8"]["vs_dense"]["top1"]
        seeds = list(same["overall"]["seeds"])
        print(f"\nExposure-matched budgets vs equal budgets, same seed(s) {seeds}: top-1 vs dense\n")
        print("| language | equal budgets | exposure-matched |")
        print("|---|---|---|")
        for lang in same["per_language"]:
            b = [base["per_language"][lang]["seeds"][s]["change"] for s in seeds]
            m = [same["per_language"][lang]["seeds"][s]["change"] for s in seeds]
            print(f"| {lang} | {100 * statistics.mean(b):+.1f}% | {100 * statistics.mean(m):+.1f}% |")
        b = [base["overall"]["seeds"][s]["change"] for s in seeds]
        m = [same["overall"]["seeds"][s]["change"] for s in seeds]
        print(f"| **mean** | {100 * statistics.mean(b):+.1f}% | {100 * statistics.mean(m):+.1f}% |")


def main() -> int:
    results = ROOT / "bench" / "results"
    if sys.argv[1:2] == ["--evidence"]:
        evidence(Path(sys.argv[2]))
        return 0
    if (results / "quality.json").is_file():
        quality(results / "quality.json")
    if (results / "regime.json").is_file():
        regime(results / "regime.json")
    if (results / "evidence.json").is_file():
        evidence(results / "evidence.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
