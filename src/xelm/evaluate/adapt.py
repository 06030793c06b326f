"""Scoring an ``xelm adapt`` call: every model on the new languages, forgetting on the old.

Scores are cached per model under ``adapt/<key>/eval/``, keyed like the eval stage's
(:func:`xelm.evaluate.scoring.score_key`), so an interrupted evaluation resumes and changed
eval settings or weights are scored again; ``evaluate_call`` assembles the call's ``results.json["adapt"]``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from xelm.config import Config
from xelm.evaluate.scoring import (eval_settings, language_streams, method_scorer, score_key,
                                   score_languages, single_scorer)
from xelm.experts.manifest import LazyExperts
from xelm.io import cached_json, read_json
from xelm.rundir import TRAIN_STATE, RunDir

# The LAPT baselines: results key -> folder under adapt/<key>/.
BASELINES = {"dense_lapt": "dense-lapt", "seed_lapt": "seed-lapt"}
# The models scored on the new languages, in the report's column order.
NEW_MODELS = ("seed", "dense", "seed_lapt", "dense_lapt", "xelm_top1", "xelm_posterior")

# The adapted set as one model on the new languages: every expert, new and old, weighted
# by its posterior given the preceding block and the block's prefix (no language label).
POSTERIOR_METHOD = "ensemble_posterior_context"


def _scores(cfg: Config, rd: RunDir, key: str, new: list[str], old: list[str]) -> dict:
    """Test-split metrics of every model: new languages for all, old ones for dense/x-ELM."""
    from xelm.experts.store import load_causal_lm

    cap = cfg.eval.max_tokens_per_language
    streams_new = language_streams(rd, new, "test", cap)
    streams_all = language_streams(rd, old + new, "test", cap)
    folders = {"seed": rd.seed, "dense": rd.dense,
               **{k: rd.adapt_dir / key / v for k, v in BASELINES.items()}}

    def single(name: str, folder: Path, streams: dict) -> dict:
        return score_languages(cfg, streams, single_scorer(load_causal_lm(folder)), name)

    experts = LazyExperts(rd)  # loaded once, only if an x-ELM score is not cached yet

    def xelm(method: str, streams: dict, name: str):
        return lambda: score_languages(cfg, streams, method_scorer(cfg, rd, experts, method,
                                                                   streams), name)

    cache = rd.adapt_call(key) / "eval"
    scores = {}
    for name, folder in folders.items():
        streams = streams_all if name in ("dense", "dense_lapt") else streams_new
        scores[name] = cached_json(cache / f"{name}.json",
                                   lambda f=folder, name=name, s=streams: single(name, f, s),
                                   key=score_key(cfg, rd, name, streams, folder))
    for name, method, streams in (("xelm_top1", "top1", streams_all),
                                  # the whole adapted set on the new languages, no label
                                  ("xelm_posterior", POSTERIOR_METHOD, streams_new)):
        scores[name] = cached_json(cache / f"{name}.json", xelm(method, streams, name),
                                   key=score_key(cfg, rd, f"xelm_{method}", streams))
    return scores


def tokens_per_byte(stats: dict) -> float:
    """Tokens (EOS included) per UTF-8 byte (newline included) over all splits."""
    return sum(s["tokens"] for s in stats.values()) / sum(s["bytes"] for s in stats.values())


def expert_perplexities(cfg: Config, rd: RunDir, langs: list[str],
                        split: str = "valid") -> dict[str, dict[str, float]]:
    """Perplexity of every expert of the set on each language's ``split``."""
    from xelm.experts.manifest import ExpertSet

    experts = ExpertSet.load(rd.root)
    streams = language_streams(rd, langs, split, cfg.eval.max_tokens_per_language)
    table = {name: score_languages(cfg, streams, single_scorer(model), name)
             for name, model in experts.models.items()}
    return {lang: {name: table[name][lang]["perplexity"] for name in experts.names}
            for lang in langs}


def _pick(scores: dict, metric: str, model: str, langs: list[str]) -> dict[str, float]:
    return {lang: scores[model][lang][metric] for lang in langs}


def _forgetting(scores: dict, old: list[str], earlier: dict) -> dict:
    """Old-language metrics: dense before/after LAPT; x-ELM top-1 now and in the run's eval."""
    out = {}
    for metric in ("perplexity", "bits_per_byte"):
        before = earlier.get(metric, {}).get("xelm_top1", {})
        out[metric] = {m: _pick(scores, metric, m, old)
                       for m in ("dense", "dense_lapt", "xelm_top1")}
        out[metric]["xelm_top1_before"] = {lang: before[lang] for lang in old if lang in before}
    return out


def summary(res: dict) -> dict:
    """Headline numbers: new languages vs dense LAPT (the new expert alone, by language label,
    and the posterior ensemble of the whole set); mean / largest old-language change."""
    ppl, f = res["perplexity"], res["forgetting"]["perplexity"]
    change = lambda a, b, langs: [a[x] / b[x] - 1 for x in langs if x in b]  # noqa: E731
    vs_dense = change(ppl["xelm_top1"], ppl["dense_lapt"], res["languages"])
    posterior = change(ppl["xelm_posterior"], ppl["dense_lapt"], res["languages"])
    forget = change(f["dense_lapt"], f["dense"], res["old_languages"])
    xelm = change(f["xelm_top1"], f["xelm_top1_before"], res["old_languages"])
    return {"new_wins_vs_dense_lapt": sum(v <= 0 for v in vs_dense),
            "new_mean_ppl_change_vs_dense_lapt": statistics.fmean(vs_dense),
            "new_wins_vs_dense_lapt_posterior": sum(v <= 0 for v in posterior),
            "new_mean_ppl_change_vs_dense_lapt_posterior": statistics.fmean(posterior),
            "old_mean_ppl_change_dense_lapt": statistics.fmean(forget) if forget else None,
            "old_max_ppl_change_dense_lapt": max(forget) if forget else None,
            "old_max_abs_ppl_change_xelm": max(map(abs, xelm)) if xelm else None}


def evaluate_call(cfg: Config, rd: RunDir, key: str, call: dict, record: dict,
                  manifest: dict, hashes: dict) -> dict:
    """The call's ``results.json["adapt"]``: scores, budgets, parents, forgetting, hashes."""
    new = call["languages"]
    old = [lang for lang in manifest["language_to_expert"] if lang not in new]
    scores = _scores(cfg, rd, key, new, old)
    tokens = lambda folder: read_json(folder / TRAIN_STATE)["tokens"]  # noqa: E731
    experts = call["experts"].values()
    stats = read_json(rd.prepare_json)["stats"]
    res = {"languages": new, "old_languages": old, "select": call["select"],
           "features_file": call["features_file"], "scores": call["scores"],
           "parents": call["parents"], "experts": call["experts"],
           "budget": {"tokens_per_language": call["tokens"],
                      "expert_tokens": {n: tokens(rd.experts / n) for n in experts},
                      **{f"{k}_tokens": tokens(rd.adapt_dir / key / v)
                         for k, v in BASELINES.items()}},
           "perplexity": {m: _pick(scores, "perplexity", m, new) for m in NEW_MODELS},
           "bits_per_byte": {m: _pick(scores, "bits_per_byte", m, new) for m in NEW_MODELS},
           "tokens_per_byte": {x: tokens_per_byte(record["languages"][x]["stats"]) for x in new},
           "tokens_per_byte_old": {x: tokens_per_byte(stats[x]) for x in old if x in stats},
           "forgetting": _forgetting(scores, old, read_json(rd.results)),
           "old_experts_unchanged": hashes["unchanged"], "old_expert_hashes": hashes["sha256"],
           "eval_settings": eval_settings(cfg)}
    res["summary"] = summary(res)
    return res
