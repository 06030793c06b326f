"""The ``eval`` stage: every model and inference method on every language's test split.

Results per (model or method) are cached in ``eval/<name>.json`` so an interrupted
evaluation resumes; ``results.json`` (schema in DESIGN.md) is rebuilt from the cache. Each
cached score is keyed on everything that can change it (:func:`score_key`: the eval
settings the method uses, the SHA-256 of the weights and of the test shards); a cache made
from another key is scored again.
"""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.io import cached_json, fingerprint, read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def _test_streams(cfg: Config, rd: RunDir) -> dict:
    from xelm.data.packing import Shard, shard_path

    info = read_json(rd.data / "prepare.json")
    return {lang: Shard(shard_path(rd.data, lang, "test"), info["dtype"]).head(
        cfg.eval.max_tokens_per_language) for lang in info["languages"]}


def score_languages(cfg: Config, streams: dict, scorer_for, desc: str) -> dict:
    """``{lang: metrics}`` of ``streams`` (``{lang: (tokens, bytes)}``);
    ``scorer_for(lang)(ids, rows)`` gives the target log-probs of a batch of blocks."""
    import torch
    from xelm.evaluate.perplexity import metrics, stream_nll
    from xelm.io import progress

    out = {}
    with torch.inference_mode():
        for lang, (tokens, nbytes) in progress(streams.items(), desc=desc, unit="lang", leave=False):
            nll, count = stream_nll(scorer_for(lang), tokens, cfg.model.context,
                                    cfg.eval.batch_size)
            out[lang] = metrics(nll, count, nbytes)
    return out


# The eval.* options each method reads besides the test streams and the batch size.
METHOD_OPTIONS = {"ensemble_posterior": ("top_k",), "ensemble_posterior_context": ("top_k",),
                  "ensemble_tfidf": ("top_k", "temperature"), "top1_tfidf": ("temperature",)}


def weight_hashes(folder) -> dict[str, str]:
    """SHA-256 of every ``*.safetensors`` file in ``folder``."""
    from xelm.experts.store import sha256_file, weight_files

    return {p.name: sha256_file(p) for p in weight_files(folder)}


def expert_set_hash(rd: RunDir) -> str:
    """What an expert-set score depends on in ``xelm.json``: every expert's pinned weight
    hashes and languages, the language map, the prior and the tokenizer."""
    m = read_json(rd.root / "xelm.json")
    return fingerprint({"experts": [(e["name"], e["files"], e["languages"]) for e in m["experts"]],
                        "language_to_expert": m["language_to_expert"], "prior": m.get("prior"),
                        "tokenizer": m.get("tokenizer_sha256"), "tfidf": m.get("tfidf")})


def stream_hashes(streams: dict) -> dict[str, str]:
    """A hash of each language's scored tokens and byte count."""
    import hashlib

    return {lang: hashlib.sha256(tokens.tobytes()).hexdigest()[:16] + f":{nbytes}"
            for lang, (tokens, nbytes) in streams.items()}


def score_key(cfg: Config, rd: RunDir, model: str, streams: dict, folder=None) -> dict:
    """Everything a cached score of ``model`` (a folder's model, or ``xelm_<method>``)
    depends on. ``folder``: the single model scored; else the run's expert set."""
    key = {"model": model, "context": cfg.model.context, "batch_size": cfg.eval.batch_size,
           "test": stream_hashes(streams)}
    if folder is not None:
        key["weights"] = weight_hashes(folder)
        return key
    method = model.removeprefix("xelm_")
    key["options"] = {o: getattr(cfg.eval, o) for o in METHOD_OPTIONS.get(method, ())}
    key["experts"] = expert_set_hash(rd)
    if method.endswith("_tfidf"):
        from xelm.experts.store import check_inside, sha256_file

        router = check_inside(rd.root, read_json(rd.allocation)["router"])  # a folder
        key["router"] = {p.relative_to(router).as_posix(): sha256_file(p)
                         for p in sorted(router.rglob("*")) if p.is_file()}
    return key


def _cached(cfg: Config, rd: RunDir, name: str, streams: dict, compute, folder=None) -> dict:
    return cached_json(rd.eval_cache / f"{name}.json", compute,
                       key=score_key(cfg, rd, name, streams, folder))


def evaluate(cfg: Config, rd: RunDir) -> dict:
    """Score seed, dense and the expert set (each method in ``eval.methods``)."""
    import torch

    with torch.inference_mode():
        return _evaluate(cfg, rd)


def _evaluate(cfg: Config, rd: RunDir) -> dict:
    from xelm.experts.store import load_causal_lm
    from xelm.infer.mixture import target_logprobs

    streams = _test_streams(cfg, rd)
    scores = {}
    for key, folder in (("seed", rd.seed), ("dense", rd.dense)):
        def single(folder=folder, key=key):
            model = load_causal_lm(folder)
            return score_languages(cfg, streams, lambda lang: lambda ids, rows:
                                   target_logprobs(model, ids), key)
        scores[key] = _cached(cfg, rd, key, streams, single, folder=folder)
    experts = LazyExperts(rd)
    for method in cfg.eval.methods:
        scores[f"xelm_{method}"] = _cached(
            cfg, rd, f"xelm_{method}", streams,
            lambda method=method: score_languages(
                cfg, streams, method_scorer(cfg, rd, experts, method, streams), f"xelm_{method}"))
    return write_results(cfg, rd, scores)


class LazyExperts:
    """Load the expert set once, only if some method still needs scoring."""

    def __init__(self, rd: RunDir):
        self.rd, self._set = rd, None

    def get(self):
        if self._set is None:
            from xelm.experts.manifest import ExpertSet

            self._set = ExpertSet.load(self.rd.root)
        return self._set


def method_scorer(cfg: Config, rd: RunDir, experts: LazyExperts, method: str, streams: dict):
    """lang -> score(ids, rows) for one inference method."""
    from xelm.infer.mixture import score_targets

    if method.endswith("_tfidf"):
        return _context_scorer(cfg, experts, streams, _tfidf_weigher(cfg, rd, method))
    if method == "top1_langid":
        return _context_scorer(cfg, experts, streams, _langid_weigher)
    if method == "ensemble_posterior_context":
        return _posterior_context_scorer(cfg, experts, streams)
    return lambda lang: lambda ids, rows: score_targets(experts.get(), ids, method, lang=lang,
                                                       top_k=cfg.eval.top_k if method == "ensemble_posterior" else None)


def _tfidf_weigher(cfg: Config, rd: RunDir, method: str):
    """c-BTM: softmax(-d²/T) over the TF-IDF distances of a text to the experts' centres."""
    import numpy as np

    from xelm.allocate.tfidf import TfidfRouter
    from xelm.experts.store import check_inside
    from xelm.infer.routers import tfidf_log_weights

    allocation = read_json(rd.allocation)
    router = TfidfRouter.load(check_inside(rd.root, allocation["router"]))
    centred = list(allocation["experts"])  # centre i is the allocation's i-th expert
    top_k = 1 if method == "top1_tfidf" else cfg.eval.top_k

    def weigh(texts: list[str], es):
        dist = np.sqrt(np.maximum(router.distances(texts, progress=False), 0.0))
        # experts added later (`xelm adapt`) have no centre: infinitely far, weight 0
        full = np.full((len(texts), len(es.names)), np.inf)
        for j, name in enumerate(es.names):
            if name in centred:
                full[:, j] = dist[:, centred.index(name)]
        return tfidf_log_weights(full, cfg.eval.temperature, top_k)
    return weigh


def _langid_weigher(texts: list[str], es):
    """Top-1 by language identification: all weight on the detected language's expert,
    uniform where no language is detected."""
    import math

    import torch

    from xelm.data.langid import detector_for

    detected = detector_for(tuple(sorted(es.language_to_expert))).detect(texts)
    k = len(es.names)
    log_w = torch.full((k, len(texts)), -float("inf"))
    for j, lang in enumerate(detected):
        if lang is None:
            log_w[:, j] = -math.log(k)
        else:
            log_w[es.index(es.expert_for_language(lang)), j] = 0.0
    return log_w


def _context_scorer(cfg: Config, experts: LazyExperts, streams: dict, weigh):
    """Route each block by the text of the block before it (no look-ahead).

    ``weigh(texts, expert_set)`` gives log-weights ``[k, len(texts)]``. The first block
    of a stream has no preceding context and gets uniform weights.
    """
    import numpy as np

    from xelm.evaluate.perplexity import stream_blocks
    from xelm.infer.mixture import score_with_router
    from xelm.infer.routers import Fixed

    def for_language(lang):
        es = experts.get()
        blocks = stream_blocks(streams[lang][0], cfg.model.context)
        texts = es.tokenizer.batch_decode([b.tolist() for b in blocks[:-1]])
        table = weigh(texts, es) if texts else None
        models = [es.models[n] for n in es.names]

        def score(ids, rows):
            log_w = np.full((len(models), len(rows)), -float(np.log(len(models))))
            for j, r in enumerate(rows):
                if r > 0:  # row 0 has no context yet: uniform
                    log_w[:, j] = table[:, r - 1].numpy()
            return score_with_router(models, ids, Fixed(log_w))
        return score

    return for_language


# A block's prior keeps this much weight spread evenly, so that an expert the preceding
# block ruled out can still win within the block (e.g. after a change of language).
PRIOR_FLOOR = 1e-3


def _posterior_context_scorer(cfg: Config, experts: LazyExperts, streams: dict):
    """BTM's posterior with the preceding block as evidence too.

    A block's prior is the posterior after the block before it (each expert's likelihood
    of that block, uniform prior), mixed with ``PRIOR_FLOOR`` of uniform weight; the
    stream's first block starts uniform. Within the block the weights then follow the
    prefix as in ``ensemble_posterior``. One pass of every expert: its per-token
    log-probs of every block are kept (``k x tokens`` floats) and reused for scoring.
    """
    import math

    import numpy as np
    import torch

    from xelm.evaluate.perplexity import block_batches, stream_blocks
    from xelm.infer.mixture import target_logprobs
    from xelm.infer.routers import Posterior

    def for_language(lang):
        es = experts.get()
        models = [es.models[n] for n in es.names]
        k = len(models)
        blocks = stream_blocks(streams[lang][0], cfg.model.context)
        lp: list[torch.Tensor | None] = [None] * len(blocks)  # [k, len - 1] per block
        for rows in block_batches(blocks, cfg.model.context, cfg.eval.batch_size):
            ids = torch.from_numpy(np.stack([blocks[i] for i in rows]))
            out = torch.stack([target_logprobs(m, ids) for m in models])  # [k, B, T]
            for j, r in enumerate(rows):
                lp[r] = out[:, j]
        log_prior = torch.full((k, len(blocks)), -math.log(k), dtype=torch.float64)
        if len(blocks) > 1:  # block r's evidence is block r - 1
            totals = torch.stack([lp[r].double().sum(-1) for r in range(len(blocks) - 1)], 1)
            after = torch.log_softmax(totals, dim=0) + math.log1p(-PRIOR_FLOOR)
            log_prior[:, 1:] = torch.logaddexp(after, torch.tensor(math.log(PRIOR_FLOOR / k)))

        def score(ids, rows):
            router = Posterior.per_sequence(log_prior[:, rows].float(), cfg.eval.top_k)
            target_lp = torch.stack([lp[r] for r in rows], 1)  # [k, B, T]
            return torch.logsumexp(router.log_weights(target_lp) + target_lp, dim=0)
        return score

    return for_language


def budget(rd: RunDir) -> dict:
    def tokens(folder):
        path = folder / "train_state.json"
        return read_json(path)["tokens"] if path.is_file() else None

    manifest = read_json(rd.root / "xelm.json")
    experts = [e for e in manifest["experts"] if not e.get("adapted_language")]
    state = next((f / "train_state.json" for f in (rd.seed, rd.dense)
                  if (f / "train_state.json").is_file()), None)
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


def eval_settings(cfg: Config) -> dict:
    """The ``eval`` section a result was made with (recorded beside it in results.json)."""
    return cfg.eval.model_dump(mode="json")


# Sections other commands add to results.json, each recording its own eval settings.
SECTIONS = ("adapt", "downstream")


def write_results(cfg: Config, rd: RunDir, scores: dict) -> dict:
    languages = read_json(rd.data / "prepare.json")["languages"]
    results = {"languages": languages, "eval_settings": eval_settings(cfg), "budget": budget(rd),
               "perplexity": {k: {lang: v[lang]["perplexity"] for lang in languages}
                              for k, v in scores.items()},
               "bits_per_byte": {k: {lang: v[lang]["bits_per_byte"] for lang in languages}
                                 for k, v in scores.items()},
               "eval_tokens": {lang: scores["dense"][lang]["tokens"] for lang in languages},
               "timing": rd.timing()}
    if rd.results.is_file():  # keep what other commands added under the same settings
        previous = read_json(rd.results)
        for name in SECTIONS:
            if name not in previous:
                continue
            if previous[name].get("eval_settings") == results["eval_settings"]:
                results[name] = previous[name]
            else:
                log.warning("results.json: dropped the %r section (made with other eval "
                            "settings); run its command again to rescore it", name)
    write_json(rd.results, results)
    return results
