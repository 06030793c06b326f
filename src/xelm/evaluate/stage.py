"""The ``eval`` stage: every model and inference method on every language's test split.

Results per (model or method) are cached in ``eval/<key>.json`` so an interrupted
evaluation resumes; ``results.json`` (schema in DESIGN.md) is rebuilt from the cache.
"""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.io import read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def _test_streams(cfg: Config, rd: RunDir) -> dict:
    from xelm.data.packing import Shard, shard_path

    info = read_json(rd.data / "prepare.json")
    return {lang: Shard(shard_path(rd.data, lang, "test"), info["dtype"]).head(
        cfg.eval.max_tokens_per_language) for lang in info["languages"]}


def _score_languages(cfg: Config, streams: dict, scorer_for, desc: str) -> dict:
    from tqdm.auto import tqdm

    from xelm.evaluate.perplexity import metrics, stream_nll

    out = {}
    for lang, (tokens, nbytes) in tqdm(streams.items(), desc=desc, unit="lang", leave=False):
        nll, count = stream_nll(scorer_for(lang), tokens, cfg.model.context, cfg.eval.batch_size)
        out[lang] = metrics(nll, count, nbytes)
    return out


def _cached(rd: RunDir, key: str, compute) -> dict:
    path = rd.eval_cache / f"{key}.json"
    if path.is_file():
        return read_json(path)
    result = compute()
    write_json(path, result)
    return result


def evaluate(cfg: Config, rd: RunDir) -> dict:
    """Score seed, dense and the expert set (each method in ``eval.methods``)."""
    import torch

    with torch.inference_mode():
        return _evaluate(cfg, rd)


def _evaluate(cfg: Config, rd: RunDir) -> dict:
    from xelm.experts.store import load_causal_lm
    from xelm.infer.mixture import score_targets, target_logprobs

    streams = _test_streams(cfg, rd)
    scores = {}
    for key, folder in (("seed", rd.seed), ("dense", rd.dense)):
        def single(folder=folder, key=key):
            model = load_causal_lm(folder)
            return _score_languages(cfg, streams, lambda lang: lambda ids: target_logprobs(model, ids), key)
        scores[key] = _cached(rd, key, single)
    expert_set = None
    for method in cfg.eval.methods:
        def mixed(method=method):
            nonlocal expert_set
            if expert_set is None:
                from xelm.experts.manifest import ExpertSet

                expert_set = ExpertSet.load(rd.root)
            return _score_languages(
                cfg, streams,
                lambda lang: lambda ids: score_targets(expert_set, ids, method, lang=lang),
                f"xelm_{method}")
        scores[f"xelm_{method}"] = _cached(rd, f"xelm_{method}", mixed)
    return write_results(cfg, rd, scores)


def budget(rd: RunDir) -> dict:
    def tokens(folder):
        path = folder / "train_state.json"
        return read_json(path)["tokens"] if path.is_file() else None

    manifest = read_json(rd.root / "xelm.json")
    return {"dense_tokens": tokens(rd.dense), "seed_tokens": tokens(rd.seed),
            "expert_tokens": {e["name"]: e["tokens"] for e in manifest["experts"]}}


def write_results(cfg: Config, rd: RunDir, scores: dict) -> dict:
    languages = read_json(rd.data / "prepare.json")["languages"]
    results = {"languages": languages, "budget": budget(rd),
               "perplexity": {k: {lang: v[lang]["perplexity"] for lang in languages}
                              for k, v in scores.items()},
               "bits_per_byte": {k: {lang: v[lang]["bits_per_byte"] for lang in languages}
                                 for k, v in scores.items()},
               "eval_tokens": {lang: scores["dense"][lang]["tokens"] for lang in languages},
               "timing": rd.timing()}
    write_json(rd.results, results)
    return results
