"""``xelm eval``: seed, dense and every ``eval.methods`` method on every language's test
split; the main section of ``results.json`` (schema in DESIGN.md).

Each score is cached in ``eval/<name>.json`` under its key (:func:`xelm.evaluate.scoring.
score_key`), so an interrupted evaluation resumes and a changed setting or weight file is
scored again; ``results.json`` is rebuilt from the cache.
"""

from __future__ import annotations

from xelm.config import Config
from xelm.io import cached_json, read_json
from xelm.rundir import TRAIN_STATE, RunDir


def evaluate(cfg: Config, rd: RunDir) -> dict:
    """Score seed, dense and the expert set (each method in ``eval.methods``)."""
    return write_results(cfg, rd, score_models(cfg, rd, cfg.eval.methods))


def score_models(cfg: Config, rd: RunDir, methods, models=("seed", "dense")) -> dict:
    """``{name: {lang: metrics}}`` of ``models`` (folders of the run) and the expert set
    under each of ``methods`` (named ``xelm_<method>``), on the test streams ``xelm eval``
    scores, through its cache (a benchmark scoring a method the run's evaluation did not
    leaves it there for ``xelm eval``)."""
    import torch

    from xelm.evaluate.scoring import (language_streams, method_scorer, score_key,
                                       score_languages, single_scorer)
    from xelm.experts.manifest import LazyExperts
    from xelm.experts.store import load_causal_lm

    def cached(name: str, compute, folder=None) -> dict:
        return cached_json(rd.eval_cache / f"{name}.json", compute,
                           key=score_key(cfg, rd, name, streams, folder))

    with torch.inference_mode():
        languages = read_json(rd.prepare_json)["languages"]
        streams = language_streams(rd, languages, "test", cfg.eval.max_tokens_per_language)
        scores = {}
        for key in models:
            folder = {"seed": rd.seed, "dense": rd.dense}[key]
            scores[key] = cached(key, lambda folder=folder, key=key: score_languages(
                cfg, streams, single_scorer(load_causal_lm(folder)), key), folder=folder)
        experts = LazyExperts(rd)
        for method in methods:
            name = f"xelm_{method}"
            scores[name] = cached(name, lambda method=method, name=name: score_languages(
                cfg, streams, method_scorer(cfg, rd, experts, method, streams), name))
        return scores


def with_methods(cfg: Config, rd: RunDir, results: dict, methods) -> dict:
    """``results`` (a run's ``results.json``) with the perplexity and bits per byte of
    each of ``methods`` it lacks, scored by :func:`score_models`; the file is not touched."""
    missing = [m for m in methods if f"xelm_{m}" not in results["perplexity"]]
    extra = score_models(cfg, rd, missing, models=()) if missing else {}
    out = {**results, **{k: dict(results[k]) for k in ("perplexity", "bits_per_byte")}}
    for name, per in extra.items():
        for k in ("perplexity", "bits_per_byte"):
            out[k][name] = {lang: v[k] for lang, v in per.items()}
    return out


def budget(rd: RunDir) -> dict:
    """``results.json["budget"]``: the training tokens of seed, dense and every expert."""
    def tokens(folder):
        path = folder / TRAIN_STATE
        return read_json(path)["tokens"] if path.is_file() else None

    manifest = read_json(rd.manifest)
    experts = [e for e in manifest["experts"] if not e.get("adapted_language")]
    state = next((f / TRAIN_STATE for f in (rd.seed, rd.dense)
                  if (f / TRAIN_STATE).is_file()), None)
    out = {"dense_tokens": tokens(rd.dense), "seed_tokens": tokens(rd.seed),
           "expert_tokens": {e["name"]: e["tokens"] for e in experts},
           "expert_languages": {e["name"]: e["languages"] for e in experts},
           "parameters": read_json(state).get("parameters") if state else None}
    # HMR: the earlier rounds' experts (each listed once) are compute of the expert set too
    earlier = {a["name"]: a for e in experts for a in e.get("ancestors", [])}
    if earlier:
        rounds = sorted({a["round"] for a in earlier.values()})
        out["hmr_round_tokens"] = {str(r): sum(a["tokens"] for a in earlier.values()
                                               if a["round"] == r) for r in rounds}
    return out


def write_results(cfg: Config, rd: RunDir, scores: dict) -> dict:
    """The main section of ``results.json`` from ``{model: {lang: metrics}}``."""
    from xelm.evaluate.scoring import eval_settings
    from xelm.report.results import write_eval

    languages = read_json(rd.prepare_json)["languages"]
    results = {"languages": languages, "eval_settings": eval_settings(cfg), "budget": budget(rd),
               "perplexity": {k: {lang: v[lang]["perplexity"] for lang in languages}
                              for k, v in scores.items()},
               "bits_per_byte": {k: {lang: v[lang]["bits_per_byte"] for lang in languages}
                                 for k, v in scores.items()},
               "eval_tokens": {lang: scores["dense"][lang]["tokens"] for lang in languages},
               "timing": rd.timing()}
    return write_eval(rd, results)
