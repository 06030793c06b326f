"""Benchmark the two allocation methods on a real corpus; writes bench/results/allocation.json.

(a) Typology: groups of the languages for each k (default 2, 4, 8) with the default
    features (lang2vec ``syntax_average``) and the paper's greedy-pairing linkage.
(b) TF-IDF: balanced k-means (default k = 4, 8) on the training lines of those languages;
    every 10th line of each language (index % 10 == 9) is held out. Reports each cluster's
    share of training tokens (tokens estimated as characters / 4, since whitespace tokens
    mean nothing for zh and ja), the largest deviation from the equal share (target <= 5%),
    and, for held-out lines, the fraction routed (nearest centroid) to the cluster that holds
    most of their language's training lines (target >= 95%).

    python bench/allocation.py --corpus ../shared/corpus
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from xelm.allocate.tfidf import allocate_tfidf, estimate_tokens
from xelm.allocate.typology import allocate_typology, plot_dendrogram

ROOT = Path(__file__).resolve().parents[1]
PAPER_LANGUAGES = "en fr es de el bg ru tr ar vi zh hi sw ur ja ko".split()


def read_corpus(corpus: Path, languages: list[str], max_docs: int | None):
    """Training and held-out lines per language (held out: every 10th line)."""
    train, held_out = {}, {}
    for lang in languages:
        lines = (corpus / f"{lang}.txt").read_text("utf-8").splitlines()
        if max_docs:
            lines = lines[:max_docs]
        train[lang] = [t for i, t in enumerate(lines) if i % 10 != 9 and t.strip()]
        held_out[lang] = [t for i, t in enumerate(lines) if i % 10 == 9 and t.strip()]
    return train, held_out


def bench_typology(languages: list[str], ks: list[int], plot: Path | None) -> dict:
    out = {"features": "syntax_average", "linkage": "paper", "groups": {}}
    start = time.perf_counter()
    for k in ks:
        groups, tree = allocate_typology(languages, k)
        out["groups"][str(k)] = groups
        print(f"typology k={k}: " + "  ".join("{" + " ".join(g) + "}" for g in groups))
    out["tree"] = tree.to_dict()
    out["seconds"] = round(time.perf_counter() - start, 2)
    if plot:
        plot_dendrogram(tree, plot)
        out["dendrogram"] = str(plot)
    return out


def bench_tfidf(train: dict, held_out: dict, k: int, fit_docs: int, seed: int) -> dict:
    langs = [lang for lang in train for _ in train[lang]]
    texts = [text for lang in train for text in train[lang]]
    tokens = estimate_tokens(texts)
    start = time.perf_counter()
    assign, router = allocate_tfidf(texts, tokens, k, fit_docs=fit_docs, seed=seed)
    fit_seconds = time.perf_counter() - start
    shares = np.bincount(assign, weights=tokens, minlength=k) / tokens.sum()
    langs = np.array(langs)
    home, routed, composition = {}, {}, {str(c): {} for c in range(k)}
    for lang in train:
        counts = np.bincount(assign[langs == lang], minlength=k)
        home[lang] = int(counts.argmax())
        for c in np.flatnonzero(counts):
            composition[str(c)][lang] = round(float(counts[c] / counts.sum()), 3)
    start = time.perf_counter()
    for lang in held_out:
        nearest = router.distances(held_out[lang]).argmin(axis=1)
        routed[lang] = round(float(np.mean(nearest == home[lang])), 4)
    route_seconds = time.perf_counter() - start
    n_held = sum(len(v) for v in held_out.values())
    overall = sum(routed[lang] * len(held_out[lang]) for lang in held_out) / n_held
    result = {
        "k": k, "train_docs": len(texts), "held_out_docs": n_held,
        "fit_docs": min(fit_docs, len(texts)), "iterations": router.meta["iterations"],
        "token_shares": [round(float(s), 4) for s in shares],
        "max_share_deviation": round(float(np.max(np.abs(shares * k - 1))), 6),
        "clusters": composition, "home_cluster": home,
        "held_out_routed_home": routed, "held_out_routed_home_overall": round(overall, 4),
        "languages_below_95pct": sorted(lang for lang, v in routed.items() if v < 0.95),
        "fit_assign_seconds": round(fit_seconds, 1), "route_seconds": round(route_seconds, 1),
    }
    print(f"tfidf k={k}: shares {result['token_shares']} (max deviation "
          f"{result['max_share_deviation']:.3%}); held-out routed home {overall:.1%}; "
          f"below 95%: {result['languages_below_95pct']}; {fit_seconds:.0f}s fit+assign")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--languages", default=",".join(PAPER_LANGUAGES))
    parser.add_argument("--typology-k", default="2,4,8")
    parser.add_argument("--tfidf-k", default="4,8")
    parser.add_argument("--max-docs-per-language", type=int, default=None,
                        help="subsample: first N lines of each language (default: all)")
    parser.add_argument("--fit-docs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="dendrogram PNG for max k")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "allocation.json")
    args = parser.parse_args(argv)
    languages = args.languages.split(",")
    start = time.perf_counter()
    result = {"command": " ".join(["python"] + sys.argv),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "corpus": str(args.corpus), "languages": languages,
              "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
              "token_estimate": "characters / 4 (xelm.allocate.tfidf.estimate_tokens)",
              "held_out": "every 10th line of each language (index % 10 == 9)",
              "max_docs_per_language": args.max_docs_per_language}
    result["typology"] = bench_typology(languages, [int(k) for k in args.typology_k.split(",")],
                                        args.plot)
    train, held_out = read_corpus(args.corpus, languages, args.max_docs_per_language)
    result["tfidf"] = {str(k): bench_tfidf(train, held_out, int(k), args.fit_docs, args.seed)
                       for k in args.tfidf_k.split(",")}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {args.out} ({result['wall_seconds']}s)")
    return result


if __name__ == "__main__":
    main()
