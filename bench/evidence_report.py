"""Evidence report (issue 19): intervals over seeds and test documents, label-free routing
on realistic streams, and token exposure, from the runs ``bench/evidence.py`` trained.

For every finished seed of each variant (``--train-json``: ``seeds`` -> seed ->
``typology8``/``typology8_exposure``/``tfidf8`` run directory; the exposure-matched
variant, expert budgets proportional to their group's data share, has seed 0 only), every test document is scored by dense and by
each x-ELM method (cached per run in ``RUN/eval/docs-*.json``, keyed like ``xelm eval``'s
scores), in three settings (:mod:`xelm.evaluate.streams`): ``stream`` (the evaluation's
own layout: its totals are ``results.json``'s), ``reset`` (each document alone) and
``interleaved`` (one shuffled stream of all languages).

Statistics, per language (the relative perplexity change of a method vs a reference on
the same documents: ``exp((NLL_m - NLL_ref) / tokens) - 1``, negative = better):

* ``seeds[s].ci95`` -- within one seed: a percentile bootstrap over test documents.
* ``mean``, ``seed_sd``, ``seed_range`` -- across seeds (the point change of each seed).
* ``ci95`` -- hierarchical: resample seeds, then documents within each drawn seed; this
  interval decides: a language is a ``win`` only when it lies below zero.
* ``overall`` -- the same for the unweighted mean over languages.

    python bench/evidence_report.py                        # bench/results/evidence.json
    python bench/evidence_report.py --train-json /tmp/t.json --out /tmp/evidence.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ARCHIVE = ROOT / "bench" / "results" / "evidence-runs"  # bench/evidence.py skips what is here
VARIANTS = ("typology8", "typology8_exposure", "tfidf8")
LABEL_FREE = ("ensemble_posterior", "ensemble_posterior_context", "top1_langid",
              "ensemble_tfidf", "top1_tfidf")


# --------------------------------------------------------------------------- statistics
def paired_change(delta: np.ndarray, tokens: np.ndarray) -> float:
    """``ppl_m / ppl_ref - 1`` over documents with NLL differences ``delta`` (nats)."""
    return math.expm1(float(np.sum(delta)) / float(np.sum(tokens)))


def resampled_changes(delta: np.ndarray, tokens: np.ndarray, n: int, rng) -> np.ndarray:
    """``n`` bootstrap replicates of :func:`paired_change` (documents drawn with
    replacement, as many as there are)."""
    idx = rng.integers(0, len(delta), size=(n, len(delta)))
    return np.expm1(delta[idx].sum(1) / tokens[idx].sum(1))


def interval(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def compare(method: list[dict], ref: list[dict], seeds: list, resamples: int, rng) -> dict:
    """``method``/``ref``: per seed ``{lang: {"nll": [...], "tokens": [...]}}`` on the
    same documents. Per language and overall: point changes per seed, their mean and
    spread, the within-seed and the hierarchical (seeds, then documents) 95% intervals."""
    langs, n_seeds = list(ref[0]), len(ref)
    draw = rng.integers(0, n_seeds, size=(resamples, n_seeds))  # seeds, shared by languages
    cols = np.arange(resamples * n_seeds)
    per_lang, hier, within = {}, [], []
    for lang in langs:
        points, boots = [], []
        for m, r in zip(method, ref):
            tokens = np.asarray(r[lang]["tokens"], dtype=np.float64)
            if np.asarray(m[lang]["tokens"]).tolist() != tokens.astype(int).tolist():
                raise ValueError(f"{lang}: the two scores are not on the same documents")
            delta = np.asarray(m[lang]["nll"]) - np.asarray(r[lang]["nll"])
            points.append(paired_change(delta, tokens))
            boots.append(resampled_changes(delta, tokens, resamples * n_seeds, rng))
        boots = np.stack(boots)                                  # [seeds, resamples*seeds]
        rep = boots[draw.ravel(), cols].reshape(resamples, n_seeds).mean(1)
        hier.append(rep)
        within.append(boots[:, :resamples])
        per_lang[lang] = {**_spread(points), "ci95": interval(rep),
                          "seeds": {str(s): {"change": p, "ci95": interval(b[:resamples])}
                                    for s, p, b in zip(seeds, points, boots)},
                          "win": interval(rep)[1] < 0, "loss": interval(rep)[0] > 0}
    overall_points = [float(np.mean([per_lang[lang]["seeds"][str(s)]["change"] for lang in langs]))
                      for s in seeds]
    within = np.mean(within, 0)                                  # [seeds, resamples]
    overall = {**_spread(overall_points), "ci95": interval(np.mean(hier, 0)),
               "seeds": {str(s): {"change": p, "ci95": interval(w)}
                         for s, p, w in zip(seeds, overall_points, within)}}
    return {"wins": sum(v["win"] for v in per_lang.values()),
            "losses": sum(v["loss"] for v in per_lang.values()),
            "wins_point": sum(v["mean"] < 0 for v in per_lang.values()),
            "languages": len(langs), "overall": overall, "per_language": per_lang}


def _spread(points: list[float]) -> dict:
    return {"mean": float(np.mean(points)),
            "seed_sd": float(np.std(points, ddof=1)) if len(points) > 1 else None,
            "seed_range": [float(min(points)), float(max(points))]}


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- scoring
def load_run(run: Path):
    """(config, RunDir, {lang: (tokens, document ends)}, {lang: (tokens, bytes)}) of the
    run's test streams, exactly as ``xelm eval`` reads them."""
    import yaml

    from xelm.config import from_dict
    from xelm.data.packing import Shard, shard_path
    from xelm.evaluate.perplexity import stream_document_ends
    from xelm.io import read_json
    from xelm.rundir import RunDir

    cfg = from_dict(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")))
    rd = RunDir(run)
    info = read_json(rd.data / "prepare.json")
    docs, streams = {}, {}
    for lang in info["languages"]:
        shard = Shard(shard_path(rd.data, lang, "test"), info["dtype"])
        tokens, nbytes = shard.head(cfg.eval.max_tokens_per_language)
        docs[lang] = (tokens, stream_document_ends(shard.documents, len(tokens)))
        streams[lang] = (tokens, nbytes)
    return cfg, rd, docs, streams


def document_scores(run: Path, order_seed: int, span: bool) -> dict:
    """``{setting: {"dense" or method: {lang: per-document nll and tokens}}}``, cached in
    ``RUN/eval/docs-stream.json`` and ``RUN/eval/docs-label-free.json``."""
    import torch

    from xelm.evaluate import streams as st
    from xelm.evaluate.scoring import langid_weigher as _langid_weigher, score_key
    from xelm.evaluate.scoring import tfidf_weigher as _tfidf_weigher
    from xelm.experts.manifest import ExpertSet
    from xelm.experts.store import load_causal_lm
    from xelm.io import cached_json, read_json, write_json

    cfg, rd, docs, streams = load_run(run)
    key = {"dense": score_key(cfg, rd, "dense", streams, folder=rd.dense),
           "methods": {m: score_key(cfg, rd, f"xelm_{m}", streams) for m in st.METHODS}}
    timing, lazy = rd.eval_cache / "docs-seconds.json", {}

    def scorer(layout: str, score):
        def compute():  # loads the models only if some layout is not cached yet
            start = time.perf_counter()
            if not lazy:
                lazy["es"] = ExpertSet.load(rd.root)
                weighers = {"top1_langid": _langid_weigher, **{
                    m: _tfidf_weigher(cfg, rd, m) for m in ("ensemble_tfidf", "top1_tfidf")}}
                lazy["kw"] = dict(context=cfg.model.context, batch_size=cfg.eval.batch_size,
                                  methods=st.METHODS, weighers=weighers, top_k=cfg.eval.top_k,
                                  singles={"dense": load_causal_lm(rd.dense)})
            out = score(lazy["es"], lazy["kw"])
            seconds = read_json(timing) if timing.is_file() else {}
            write_json(timing, {**seconds, layout: round(time.perf_counter() - start, 1)})
            return out
        return compute

    def label_free(es, kw):
        if es.tokenizer.eos_token_id is None:
            raise ValueError(f"{run}: the tokenizer has no EOS token to separate documents")
        return st.label_free_scores(es, docs, eos=es.tokenizer.eos_token_id,
                                    order_seed=order_seed, span_documents=span, **kw)

    with torch.inference_mode():
        out = cached_json(rd.eval_cache / "docs-stream.json", scorer(
            "stream", lambda es, kw: st.stream_scores(es, docs, **kw)), key={"layout": "stream", **key})
        out.update(cached_json(rd.eval_cache / "docs-label-free.json", scorer("label-free", label_free),
                               key={"layout": "label-free", "order_seed": order_seed,
                                    "span_documents": span, **key}))
    return out


def consistency(run: Path, stream: dict) -> float | None:
    """Largest relative difference between the per-document sums of the ``stream``
    setting and the NLL ``xelm eval`` cached (``RUN/eval/<model>.json``) for the same
    test tokens; None when no such cache exists."""
    from xelm.evaluate.scoring import stream_hashes
    from xelm.evaluate.streams import language_metrics
    from xelm.io import read_json

    test = stream_hashes(load_run(run)[3])
    worst = None
    for name, per_doc in stream.items():
        cached = run / "eval" / f"{'dense' if name == 'dense' else 'xelm_' + name}.json"
        stored = read_json(cached) if cached.is_file() else {}
        if (stored.get("key") or {}).get("test") != test:
            continue
        for lang, got in language_metrics(per_doc).items():
            diff = abs(got["nll"] / stored["value"][lang]["nll"] - 1)
            worst = diff if worst is None else max(worst, diff)
    return worst


# --------------------------------------------------------------------------- archive
def run_record(run: Path, args) -> dict:
    """What the report needs of one run: per-document scores of every model in every
    setting, token exposure, the split, the scoring time. Kept in the repository
    (``bench/results/evidence-runs/<run name>.json.gz``, about 100 kB) so that seeds
    trained in different sessions (run directories do not outlive a session on the
    2-core machine) add up; ``bench/evidence.py`` does not retrain an archived run."""
    from xelm.evaluate.streams import language_switches
    from xelm.io import read_json

    path = ARCHIVE / f"{run.name}.json.gz"
    config = run / "config.yaml"
    sha = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    if path.is_file():
        record = json.loads(gzip.decompress(path.read_bytes()))
        if (record["order_seed"], record["span"]) == (args.order_seed, args.span) and \
                sha in (None, record.get("config_sha256")):  # the run is gone, or the same
            return record
    if not (run / "results.json").is_file():
        raise SystemExit(f"{run}: neither a finished run nor archived in {path}")
    scores = document_scores(run, args.order_seed, args.span)
    timing = run / "eval" / "docs-seconds.json"
    cfg = load_run(run)[0]
    record = {"run": str(run), "order_seed": args.order_seed, "span": args.span,
              "config_sha256": sha, "random_seed": cfg.random_seed,
              "lr": {"experts": cfg.train.lr, "dense": cfg.train.dense_lr or cfg.train.lr},
              "scoring_seconds": read_json(timing) if timing.is_file() else None,
              "stream_vs_xelm_eval_max_rel_diff": consistency(run, scores["stream"]),
              "exposure": exposure(run), "split": split_record(run),
              "language_switches": language_switches(load_run(run)[2], args.order_seed),
              "scores": rounded(scores, 9)}  # NLL sums: far below a 0.001% change
    ARCHIVE.mkdir(parents=True, exist_ok=True)
    data = json.dumps(record, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(data, mtime=0))  # no timestamp: equal scores, equal bytes
    return record


# --------------------------------------------------------------------------- exposure
def exposure(run: Path) -> dict:
    """Per language: expected training tokens from dense and from its top-1 expert (and
    from all experts), from the budgets actually trained and the sampling weights."""
    import yaml

    from xelm.io import read_json
    from xelm.train.jobs import language_weights

    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    alpha = cfg["train"]["alpha"]
    stats = read_json(run / "data" / "prepare.json")["stats"]
    counts = {lang: s["train"]["tokens"] for lang, s in stats.items()}
    total = sum(counts.values())
    dense_tokens = read_json(run / "dense" / "train_state.json")["tokens"]
    manifest, alloc = read_json(run / "xelm.json"), read_json(run / "allocation.json")
    budget = {e["name"]: e["tokens"] for e in manifest["experts"]}
    dense_w = language_weights(counts, alpha)
    from_expert = {lang: {} for lang in counts}
    for name, spec in alloc["experts"].items():
        if alloc["method"] == "tfidf":  # a cluster's shard, sampled uniformly by token
            mix = {lang: n / spec["tokens"] for lang, n in spec["tokens_by_language"].items()}
        else:
            mix = language_weights({lang: counts[lang] for lang in spec["languages"]}, alpha)
        for lang, w in mix.items():
            from_expert[lang][name] = budget[name] * w
    out = {}
    for lang in counts:
        top1 = from_expert[lang].get(manifest["language_to_expert"][lang], 0.0)
        dense = dense_tokens * dense_w[lang]
        out[lang] = {"dense_tokens": dense, "expert_tokens": top1,
                     "all_experts_tokens": sum(from_expert[lang].values()),
                     "expert_to_dense": top1 / dense, "data_share": counts[lang] / total,
                     "tokens_per_byte": counts[lang] / stats[lang]["train"]["bytes"]}
    return out


def exposure_report(records: dict, changes: dict) -> dict:
    """Exposure per language, averaged over the seeds' runs (TF-IDF clusters, and so the
    experts' language mixes, change with the seed), and the Spearman correlation of the
    top-1 gain (minus the mean change vs dense) with each column."""
    per = {s: r["exposure"] for s, r in records.items()}
    langs = list(next(iter(per.values())))
    cols = list(next(iter(per.values()))[langs[0]])
    mean = {lang: {c: float(np.mean([p[lang][c] for p in per.values()])) for c in cols}
            for lang in langs}
    gain = [-changes[lang]["mean"] for lang in langs]
    return {"per_language": mean,
            "expert_to_dense_per_seed": {s: {lang: p[lang]["expert_to_dense"] for lang in langs}
                                         for s, p in per.items()},
            "spearman_gain_with": {c: spearman(gain, [mean[lang][c] for lang in langs])
                                   for c in ("expert_to_dense", "data_share", "tokens_per_byte")},
            "note": "expected tokens: budget trained x sampling probability (dense: language_weights "
                    "over all languages; a typology expert: over its group; a TF-IDF expert: its "
                    "cluster's token mix), mean over seeds; gain = -(mean top-1 change vs dense)"}


# --------------------------------------------------------------------------- report
def brief(result: dict) -> dict:
    """``compare``'s result without the per-seed detail of each language."""
    return {**{k: result[k] for k in ("wins", "losses", "wins_point", "languages", "overall")},
            "per_language": {lang: {k: v[k] for k in ("mean", "ci95", "win")}
                             for lang, v in result["per_language"].items()}}


def variant_report(index: int, runs: dict, args) -> dict:
    from xelm.evaluate.streams import METHODS, language_metrics

    records = {s: run_record(run, args) for s, run in runs.items()}
    scores = {s: r["scores"] for s, r in records.items()}
    seconds = {s: r["scoring_seconds"] for s, r in records.items()}
    checks = {s: r["stream_vs_xelm_eval_max_rel_diff"] for s, r in records.items()}
    seeds = list(runs)

    def versus(setting: str, method: str, ref: str, slot: int) -> dict:
        rng = np.random.default_rng([args.bootstrap_seed, index, slot])
        return compare([scores[s][setting][method] for s in seeds],
                       [scores[s][setting][ref] for s in seeds], seeds, args.resamples, rng)

    out = {"runs": {s: os.path.relpath(run, ROOT) for s, run in runs.items()}, "scoring_seconds": seconds,
           "stream_vs_xelm_eval_max_rel_diff": checks,
           "vs_dense": {m: versus("stream", m, "dense", i) for i, m in enumerate(METHODS)}}
    settings = [k for k in scores[seeds[0]]]
    label_free = {"settings": settings, "order_seed": args.order_seed,
                  "language_switches": records[seeds[0]]["language_switches"]}
    for j, setting in enumerate(settings):
        names = [m for m in ("top1", "ensemble", *LABEL_FREE) if m in scores[seeds[0]][setting]]
        ppl = {m: {lang: float(np.mean([language_metrics(scores[s][setting][m])[lang]["perplexity"]
                                        for s in seeds]))
                   for lang in scores[seeds[0]][setting][m]} for m in ["dense", *names]}
        label_free[setting] = {
            "perplexity": ppl,
            "vs_top1": {m: brief(versus(setting, m, "top1", 100 * (j + 1) + i))
                        for i, m in enumerate(names) if m != "top1"},
            "vs_dense": {m: brief(versus(setting, m, "dense", 100 * (j + 1) + 50 + i))
                         for i, m in enumerate(names)}}
    out["label_free"] = label_free
    out["exposure"] = exposure_report(records, out["vs_dense"]["top1"]["per_language"])
    out["split"] = records[seeds[0]]["split"]
    return out


def split_record(run: Path) -> dict:
    cfg, rd, docs, _ = load_run(run)
    return {"corpus.split": cfg.corpus.split, "corpus.split_seed": cfg.corpus.split_seed,
            "held_out_keys_file": (rd.data / "held_out_keys.json").is_file(),
            "eval.max_tokens_per_language": cfg.eval.max_tokens_per_language,
            "test_documents": {lang: len(ends) for lang, (_, ends) in docs.items()},
            "test_tokens": {lang: int(len(tokens)) for lang, (tokens, _) in docs.items()}}


def finished_runs(train: dict, variant: str) -> dict:
    """``{seed: run}`` of the seeds whose ``variant`` run has its results."""
    out = {}
    for seed, runs in (train.get("seeds") or {}).items():
        if variant not in runs:
            continue
        run = Path(runs[variant])
        run = run if run.is_absolute() else ROOT / run
        finished = (run / "results.json").is_file() and (run / "xelm.json").is_file()
        if finished or (ARCHIVE / f"{run.name}.json.gz").is_file():
            out[str(seed)] = run
    return out


INTERVALS = (
    "change = ppl(method)/ppl(reference) - 1 on the same test documents (paired; negative: "
    "method better). Per seed: 95% percentile bootstrap over test documents (ci95 under "
    "seeds). Across seeds: mean, sample sd and range of the per-seed changes. Decision "
    "interval (ci95): hierarchical bootstrap -- draw seeds with replacement, then documents "
    "within each drawn seed, average; a language is a win only if its ci95 lies below 0. "
    "overall = unweighted mean over languages, same resampling (documents resampled "
    "independently per language, though the test chapters are parallel across languages).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-json", default=str(ROOT / "bench" / "results" / "evidence-train.json"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "evidence.json"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--order-seed", type=int, default=0, help="interleaved stream order")
    parser.add_argument("--span", action="store_true",
                        help="also score the interleaved stream in blocks that span documents")
    args = parser.parse_args()
    train = json.loads(Path(args.train_json).read_text())
    variants = {v: finished_runs(train, v) for v in args.variants.split(",")}
    variants = {v: runs for v, runs in variants.items() if runs}
    if not variants:
        raise SystemExit(f"no finished run of {args.variants} in {args.train_json}")
    report = {"command": "python bench/evidence_report.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "train_json": os.path.relpath(args.train_json, ROOT), "train_command": train.get("command"),
              "chosen": train.get("chosen"),
              "seeds": {v: list(runs) for v, runs in variants.items()},
              "n_seeds": {v: len(runs) for v, runs in variants.items()},
              "interval_method": INTERVALS, "archive": os.path.relpath(ARCHIVE, ROOT),
              "resamples": args.resamples, "bootstrap_seed": args.bootstrap_seed,
              "variants": {}}
    for i, (variant, runs) in enumerate(variants.items()):
        report["variants"][variant] = variant_report(i, runs, args)
        Path(args.out).write_text(json.dumps(rounded(report), indent=2) + "\n")
        summary(variant, report["variants"][variant], len(runs))
    print(f"wrote {args.out}")


def rounded(obj, digits: int = 6):
    """Floats to ``digits`` significant digits (6 for the report: nothing measured is finer)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, digits) for v in obj]
    return obj


def summary(variant: str, r: dict, n_seeds: int) -> None:
    top = r["vs_dense"]["top1"]
    o = top["overall"]
    print(f"{variant} ({n_seeds} seed{'s' * (n_seeds > 1)}): top-1 vs dense {100 * o['mean']:+.1f}% "
          f"[{100 * o['ci95'][0]:+.1f}, {100 * o['ci95'][1]:+.1f}], wins {top['wins']}/"
          f"{top['languages']} (hierarchical ci95 below 0), {top['wins_point']} by the mean")
    for setting in r["label_free"]["settings"]:
        gaps = ", ".join(f"{m} {100 * v['overall']['mean']:+.2f}%"
                         for m, v in r["label_free"][setting]["vs_top1"].items())
        print(f"  {setting}: gap to top-1: {gaps}")


if __name__ == "__main__":
    main()
