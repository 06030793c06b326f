"""Scoring models and inference methods on token streams, with keyed caches.

Every score is cached (``cached_json``) under a key of everything that can change it
(:func:`score_key`: the eval settings the method uses, the SHA-256 of the weights, the
test tokens); a cache made from another key is scored again. The ``eval`` stage, ``xelm
adapt`` and the benchmarks score through :func:`score_languages` and :func:`method_scorer`.
"""

from __future__ import annotations

from xelm.config import Config
from xelm.experts.manifest import LazyExperts
from xelm.io import fingerprint, read_json
from xelm.methods import METHODS
from xelm.rundir import RunDir


def language_streams(rd: RunDir, langs: list[str], split: str, max_tokens: int | None) -> dict:
    """``{lang: (tokens, bytes)}``: the first ``max_tokens`` of each language's ``split``."""
    from xelm.data.packing import Shard, shard_path

    dtype = read_json(rd.prepare_json)["dtype"]
    return {lang: Shard(shard_path(rd.data, lang, split), dtype).head(max_tokens)
            for lang in langs}


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


def expert_set_hash(rd: RunDir) -> str:
    """What an expert-set score depends on in ``xelm.json``: every expert's pinned weight
    hashes and languages, the language map, the prior and the tokenizer."""
    m = read_json(rd.manifest)
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
        from xelm.experts.store import folder_hashes

        key["weights"] = folder_hashes(folder)
        return key
    method = METHODS[model.removeprefix("xelm_")]
    key["options"] = {o: getattr(cfg.eval, o) for o in method.options}
    key["experts"] = expert_set_hash(rd)
    if method.route == "tfidf":
        from xelm.allocate.fit import expert_router_dir
        from xelm.experts.store import sha256_file

        router = expert_router_dir(rd)  # a folder
        key["router"] = {p.relative_to(router).as_posix(): sha256_file(p)
                         for p in sorted(router.rglob("*")) if p.is_file()}
    return key


def method_scorer(cfg: Config, rd: RunDir, experts: LazyExperts, method: str, streams: dict):
    """lang -> score(ids, rows) for one inference method (:data:`xelm.methods.METHODS`):
    the methods that read the preceding block route each block by it; the others score
    the block alone, as one request."""
    from xelm.infer.mixture import score_targets

    route = METHODS[method].route
    if route == "tfidf":
        return context_scorer(cfg, experts, streams, tfidf_weigher(cfg, rd, method))
    if route == "langid":
        return context_scorer(cfg, experts, streams, langid_weigher)
    if route == "posterior_context":
        return posterior_context_scorer(cfg, experts, streams)
    top_k = cfg.eval.top_k if "top_k" in METHODS[method].options else None
    return lambda lang: lambda ids, rows: score_targets(experts.get(), ids, method, lang=lang,
                                                       top_k=top_k)


def tfidf_weigher(cfg: Config, rd: RunDir, method: str):
    """c-BTM: softmax(-d²/T) over the TF-IDF distances of a text to the experts' centres."""
    import numpy as np

    from xelm.allocate.fit import load_expert_router
    from xelm.infer.routers import tfidf_log_weights

    router, centred = load_expert_router(rd)  # centre i is expert centred[i]
    top_k = cfg.eval.top_k if "top_k" in METHODS[method].options else 1  # top1_tfidf: 1

    def weigh(texts: list[str], es):
        dist = np.sqrt(np.maximum(router.distances(texts, progress=False), 0.0))
        # an expert without a centre (added by an `xelm adapt` older than centres): weight 0
        full = np.full((len(texts), len(es.names)), np.inf)
        for j, name in enumerate(es.names):
            if name in centred:
                full[:, j] = dist[:, centred.index(name)]
        return tfidf_log_weights(full, cfg.eval.temperature, top_k)
    return weigh


def langid_weigher(texts: list[str], es):
    """Top-1 by language identification: all weight on the detected language's expert,
    uniform where no language is detected."""
    import math

    import torch

    from xelm.infer.routers import langid_experts

    k = len(es.names)
    log_w = torch.full((k, len(texts)), -float("inf"))
    for j, expert in enumerate(langid_experts(es, texts)):
        if expert is None:
            log_w[:, j] = -math.log(k)
        else:
            log_w[es.index(expert), j] = 0.0
    return log_w


def context_scorer(cfg: Config, experts: LazyExperts, streams: dict, weigh):
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


def posterior_context_scorer(cfg: Config, experts: LazyExperts, streams: dict):
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


def eval_settings(cfg: Config) -> dict:
    """The ``eval`` section a result was made with (recorded beside it in results.json)."""
    return cfg.eval.model_dump(mode="json")




def single_scorer(model):
    """lang -> score(ids, rows) of one causal LM (every language alike)."""
    from xelm.infer.mixture import target_logprobs

    return lambda lang: lambda ids, *_: target_logprobs(model, ids)
