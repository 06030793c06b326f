"""Label-free routing on realistic streams: per-document scores of every method.

The evaluation stream of a language is its test documents concatenated, so the block
before a block is always in the same language and routing by it (``*_context``, TF-IDF,
language identification) is as good as knowing the label. Two harder settings:

* ``reset`` -- every document alone: its blocks never span documents, and its first block
  has no evidence from the document before it (uniform prior / uniform weights).
* ``interleaved`` -- ONE stream of the documents of all languages in a seeded shuffled
  order; a document's first block is routed by the last block of the document before
  it, whatever its language. Blocks still do not span documents (so top-1 by label scores
  exactly as in ``reset``); with ``span_documents`` the stream is cut into blocks as one
  text, so a block may change language half way.

Each document is scored after an end-of-document token (the separator a real stream has,
carrying no language), so every one of its tokens is predicted exactly once. All methods
come from one pass of every expert: each expert's log-prob of every target is kept and
the methods are mixtures of those (:mod:`xelm.infer.routers`), so ``stream`` (the
evaluation's own layout, batched as ``xelm eval`` batches it) reproduces ``xelm eval``.

Input: ``docs = {lang: (tokens, ends)}`` -- each language's test tokens and its documents'
end offsets (``perplexity.stream_document_ends``). Output: ``{setting: {method: {lang:
{"nll": [per document], "tokens": [per document]}}}}``; :func:`language_metrics` sums them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from xelm.methods import METHODS as REGISTRY

SETTINGS = ("stream", "reset", "interleaved")
# The registry's methods scored here (``streams``): those weighed by the text of the block
# before (a weigher each) last, each group in the registry's order.
ROUTED = tuple(name for name, m in REGISTRY.items() if m.streams and m.by_text)
METHODS = (*(name for name, m in REGISTRY.items() if m.streams and not m.by_text), *ROUTED)
BLIND = ("label", "prior", "posterior")  # routes that ignore the block before

# weigh(texts, expert_set) -> log-weights [k, len(texts)] (evaluate.scoring's weighers)
Weigher = Callable[[list, object], object]


class StreamError(ValueError):
    """A stream setting or method that cannot be scored as asked."""


@dataclass
class BlockSet:
    """Blocks to score once with every model, and the document of each target."""

    blocks: list[np.ndarray]       # int64 ids, 2..context+1 long
    batches: list[list[int]]       # blocks scored together (one length per batch)
    target_doc: list[np.ndarray]   # per block: the global document of each of its targets

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(b) - 1 for b in self.blocks])])


@dataclass
class Corpus:
    """The documents of all languages, numbered globally in language order."""

    langs: list[str]               # languages in input order
    doc_lang: np.ndarray           # per global document: index into langs
    docs: list[np.ndarray]         # per global document: its tokens

    @classmethod
    def from_streams(cls, docs: dict) -> "Corpus":
        from xelm.evaluate.perplexity import document_of_positions

        langs, doc_lang, out = list(docs), [], []
        for i, (lang, (tokens, ends)) in enumerate(docs.items()):
            ends = np.asarray(ends, dtype=np.int64)
            if len(tokens) == 0 or len(ends) == 0 or ends[-1] != len(tokens):
                raise StreamError(f"{lang}: the document ends must cover its {len(tokens)} "
                                  "test tokens exactly (the last end = the stream length)")
            document_of_positions(np.zeros(0), ends)  # checks they increase
            starts = np.concatenate([[0], ends[:-1]])
            out += [np.asarray(tokens[a:b], dtype=np.int64) for a, b in zip(starts, ends)]
            doc_lang += [i] * len(ends)
        return cls(langs, np.asarray(doc_lang), out)


def _by_length(blocks: list[np.ndarray], batch_size: int) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for i, b in enumerate(blocks):
        groups.setdefault(len(b), []).append(i)
    return [g[s:s + batch_size] for g in groups.values() for s in range(0, len(g), batch_size)]


def document_blocks(corpus: Corpus, context: int, batch_size: int, eos: int):
    """Each document after ``eos``, in blocks that stay inside it; also the index of each
    document's first and last block."""
    from xelm.evaluate.perplexity import stream_blocks

    blocks, target_doc, first, last = [], [], [], []
    for d, doc in enumerate(corpus.docs):
        own = stream_blocks(np.concatenate([[eos], doc]), context)
        first.append(len(blocks))
        blocks += own
        target_doc += [np.full(len(b) - 1, d) for b in own]
        last.append(len(blocks) - 1)
    return (BlockSet(blocks, _by_length(blocks, batch_size), target_doc),
            np.asarray(first), np.asarray(last))


def stream_blockset(corpus: Corpus, context: int, batch_size: int):
    """The evaluation's layout: each language's documents concatenated, batched as
    ``xelm eval`` does; a block's evidence is the block before it in its language."""
    from xelm.evaluate.perplexity import block_batches, stream_blocks

    blocks, batches, target_doc, evidence = [], [], [], []
    for i in range(len(corpus.langs)):
        ids = np.flatnonzero(corpus.doc_lang == i)
        doc_of = np.concatenate([np.full(len(corpus.docs[d]), d) for d in ids])
        own = stream_blocks(np.concatenate([corpus.docs[d] for d in ids]), context)
        base = len(blocks)
        batches += [[base + r for r in rows] for rows in block_batches(own, context, batch_size)]
        target_doc += [doc_of[r * context + 1: r * context + len(b)] for r, b in enumerate(own)]
        evidence += [-1] + [base + r - 1 for r in range(1, len(own))]
        blocks += own
    return BlockSet(blocks, batches, target_doc), np.asarray(evidence)


def spanning_blockset(corpus: Corpus, order: np.ndarray, context: int, batch_size: int,
                      eos: int):
    """One text of the documents in ``order`` (after one ``eos``) cut into blocks that may
    span documents; a block's evidence is the block before it."""
    from xelm.evaluate.perplexity import block_batches, stream_blocks

    tokens = np.concatenate([[eos], *[corpus.docs[d] for d in order]])
    doc_of = np.concatenate([[-1], *[np.full(len(corpus.docs[d]), d) for d in order]])
    blocks = stream_blocks(tokens, context)
    target_doc = [doc_of[r * context + 1: r * context + len(b)] for r, b in enumerate(blocks)]
    return (BlockSet(blocks, block_batches(blocks, context, batch_size), target_doc),
            np.arange(len(blocks)) - 1)


def interleaved_evidence(first: np.ndarray, last: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Evidence for :func:`document_blocks` blocks read as one stream in document
    ``order``: the previous block of the document, or the last block of the document
    before it (none for the stream's first block)."""
    n_blocks = int(last.max()) + 1
    evidence = np.arange(n_blocks) - 1
    evidence[first] = -1
    evidence[first[order[1:]]] = last[order[:-1]]
    return evidence


def expert_logprobs(models: list, blockset: BlockSet) -> list:
    """Every model's log-prob of every target: per block a ``[m, len - 1]`` tensor."""
    import torch

    from xelm.infer.mixture import target_logprobs

    out: list = [None] * len(blockset.blocks)
    with torch.inference_mode():
        for rows in blockset.batches:
            ids = torch.from_numpy(np.stack([blockset.blocks[i] for i in rows]))
            lp = torch.stack([target_logprobs(m, ids) for m in models])  # [m, B, T]
            for j, r in enumerate(rows):
                out[r] = lp[:, j]
    return out


def _context_tables(expert_set, blockset: BlockSet, methods, weighers: dict) -> dict:
    """``{method: [k, n_blocks]}`` log-weights from each block's own text."""
    routed = [m for m in methods if m in ROUTED]
    if not routed:
        return {}
    missing = [m for m in routed if m not in weighers]
    if missing:
        raise StreamError(f"methods {missing} route by text and need a weigher each "
                          "(weigh(texts, expert_set) -> log-weights [k, n])")
    import torch

    texts = expert_set.tokenizer.batch_decode([b.tolist() for b in blockset.blocks])
    return {m: torch.as_tensor(weighers[m](texts, expert_set)).numpy() for m in routed}


def _posterior_priors(lp: list, k: int) -> "torch.Tensor":  # noqa: F821
    """``[k, n_blocks]``: the posterior (uniform prior) after each block, floored as in
    ``ensemble_posterior_context``."""
    import torch

    from xelm.evaluate.scoring import PRIOR_FLOOR

    totals = torch.stack([block[:k].double().sum(-1) for block in lp], 1)
    after = torch.log_softmax(totals, dim=0) + math.log1p(-PRIOR_FLOOR)
    return torch.logaddexp(after, torch.tensor(math.log(PRIOR_FLOOR / k)))


def _batch_scores(method: str, target_lp, rows, evidence, ctx) -> "torch.Tensor":  # noqa: F821
    """``[B, T]`` log-probs of one batch's targets under ``method``."""
    import torch

    from xelm.infer.routers import Fixed, Posterior, Uniform

    k, route = target_lp.shape[0], REGISTRY[method].route
    ev = None if evidence is None else evidence[rows]
    if route == "label":
        label = ctx["label"][np.stack([ctx["target_doc"][r] for r in rows])]
        return target_lp.gather(0, torch.from_numpy(label)[None]).squeeze(0)
    if route == "prior":
        router = Uniform()
    elif route == "posterior":
        router = Posterior(None, ctx["top_k"])
    elif route == "posterior_context":
        log_prior = torch.full((k, len(rows)), -math.log(k), dtype=torch.float64)
        have = np.flatnonzero(ev >= 0)
        log_prior[:, have] = ctx["priors"][:, ev[have]]
        router = Posterior.per_sequence(log_prior.float(), ctx["top_k"])
    else:  # routed by the text of the evidence block; uniform without one
        log_w = np.full((k, len(rows)), -float(np.log(k)))
        have = np.flatnonzero(ev >= 0)
        log_w[:, have] = ctx["tables"][method][:, ev[have]]
        router = Fixed(log_w)
    return torch.logsumexp(router.log_weights(target_lp) + target_lp, dim=0)


def _per_document(corpus: Corpus, flat_doc: np.ndarray, flat_nll: np.ndarray) -> dict:
    n = len(corpus.docs)
    nll = np.bincount(flat_doc, weights=flat_nll, minlength=n)
    count = np.bincount(flat_doc, minlength=n)
    return {lang: {"nll": nll[corpus.doc_lang == i].tolist(),
                   "tokens": count[corpus.doc_lang == i].astype(int).tolist()}
            for i, lang in enumerate(corpus.langs)}


def _check_methods(methods) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise StreamError(f"unknown stream methods {unknown}; choose from {', '.join(METHODS)}")


def score_blockset(expert_set, corpus: Corpus, blockset: BlockSet, evidence: dict, methods, *,
                   weighers: dict | None = None, top_k: int | None = None,
                   singles: dict | None = None) -> dict:
    """``{setting: {method or single model: {lang: per-document nll and tokens}}}`` for
    each ``evidence`` array (``{setting: the evidence block of every block, -1 none}``).

    One pass of every expert (and every single model in ``singles``, e.g. dense) over
    ``blockset``; methods that ignore the evidence are mixed once and shared by settings.
    """
    import torch

    _check_methods(methods)
    k, singles = len(expert_set.names), dict(singles or {})
    lp = expert_logprobs([expert_set.models[n] for n in expert_set.names] + list(singles.values()),
                         blockset)
    ctx = {"top_k": top_k, "target_doc": blockset.target_doc,
           "tables": _context_tables(expert_set, blockset, methods, weighers or {})}
    routes = {REGISTRY[m].route for m in methods}
    if "label" in routes:
        experts = [expert_set.index(expert_set.expert_for_language(lang)) for lang in corpus.langs]
        ctx["label"] = np.asarray(experts)[corpus.doc_lang]
    if "posterior_context" in routes:
        ctx["priors"] = _posterior_priors(lp, k)
    offsets, flat_doc = blockset.offsets, np.concatenate(blockset.target_doc)

    def flat(mix) -> dict:
        out = np.zeros(offsets[-1])
        for rows in blockset.batches:
            values = -mix(torch.stack([lp[r] for r in rows], 1), rows).double().numpy()
            for j, r in enumerate(rows):
                out[offsets[r]:offsets[r + 1]] = values[j]
        return _per_document(corpus, flat_doc, out)

    shared = {f"{name}": flat(lambda t, rows, i=k + i: t[i]) for i, name in enumerate(singles)}
    blind = {m: flat(lambda t, rows, m=m: _batch_scores(m, t[:k], rows, None, ctx))
             for m in methods if REGISTRY[m].route in BLIND}
    result = {}
    for setting, ev in evidence.items():
        ev = np.asarray(ev)
        result[setting] = {**shared, **{m: blind[m] if m in blind else flat(
            lambda t, rows, m=m, ev=ev: _batch_scores(m, t[:k], rows, ev, ctx))
            for m in methods}}
    return result


def interleaved_order(n_docs: int, seed: int) -> np.ndarray:
    """The fixed shuffled order of all documents in the interleaved stream."""
    return np.random.default_rng(seed).permutation(n_docs)


def stream_scores(expert_set, docs: dict, *, context: int, batch_size: int,
                  methods=METHODS, **options) -> dict:
    """``{"stream": ...}``: each method on the evaluation's own layout (each language's
    documents concatenated), per document; totals equal ``xelm eval``'s."""
    corpus = Corpus.from_streams(docs)
    blockset, evidence = stream_blockset(corpus, context, batch_size)
    return score_blockset(expert_set, corpus, blockset, {"stream": evidence}, methods, **options)


def label_free_scores(expert_set, docs: dict, *, context: int, batch_size: int, eos: int,
                      methods=METHODS, order_seed: int = 0, span_documents: bool = False,
                      **options) -> dict:
    """``{"reset": ..., "interleaved": ...}`` (and ``"interleaved_spanning"`` with
    ``span_documents``): per-document scores of each method in the settings of this
    module's docstring. ``eos`` is the token scored before every document."""
    corpus = Corpus.from_streams(docs)
    blockset, first, last = document_blocks(corpus, context, batch_size, eos)
    order = interleaved_order(len(corpus.docs), order_seed)
    reset = np.arange(len(blockset.blocks)) - 1
    reset[first] = -1
    evidence = {"reset": reset, "interleaved": interleaved_evidence(first, last, order)}
    out = score_blockset(expert_set, corpus, blockset, evidence, methods, **options)
    if span_documents:
        spanning, ev = spanning_blockset(corpus, order, context, batch_size, eos)
        out.update(score_blockset(expert_set, corpus, spanning, {"interleaved_spanning": ev},
                                  methods, **options))
    return out


def language_switches(docs: dict, order_seed: int = 0) -> float:
    """Share of documents in the interleaved stream that follow one of another language."""
    corpus = Corpus.from_streams(docs)
    lang = corpus.doc_lang[interleaved_order(len(corpus.docs), order_seed)]
    return float(np.mean(lang[1:] != lang[:-1])) if len(lang) > 1 else 0.0


def language_metrics(per_doc: dict) -> dict:
    """``{lang: {"nll", "tokens", "perplexity"}}`` from one method's per-document scores."""
    out = {}
    for lang, d in per_doc.items():
        nll, tokens = float(np.sum(d["nll"])), int(np.sum(d["tokens"]))
        out[lang] = {"nll": nll, "tokens": tokens, "perplexity": math.exp(nll / tokens)}
    return out


def gaps_to(setting: dict, reference: str = "top1") -> dict:
    """``{method: {lang: ppl(method) / ppl(reference) - 1}}`` within one setting."""
    ref = language_metrics(setting[reference])
    return {m: {lang: v["perplexity"] / ref[lang]["perplexity"] - 1
                for lang, v in language_metrics(per_doc).items()}
            for m, per_doc in setting.items() if m != reference}
