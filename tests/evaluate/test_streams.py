"""Label-free routing on realistic streams (evaluate/streams.py), on two tiny random
experts (conftest's ``run_dir``: qa0, qb0 -> e0; qa1, qb1 -> e1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xelm.config import load
from xelm.evaluate.perplexity import stream_blocks
from xelm.evaluate.scoring import PRIOR_FLOOR, LazyExperts, method_scorer, score_languages
from xelm.evaluate.streams import (StreamError, gaps_to, interleaved_order, label_free_scores,
                                   language_metrics, language_switches, stream_scores)
from xelm.experts.manifest import ExpertSet
from xelm.infer.mixture import score_targets, target_logprobs

EOS, CONTEXT = 63, 8
# qa0: documents of 5, 20, 3, 12 tokens; qa1: 9, 17, 4 (each ending in EOS). With context
# 8 a document of <= 8 tokens (after the EOS before it) is one block, longer ones 2-3.
LENGTHS = {"qa0": [5, 20, 3, 12], "qa1": [9, 17, 4]}


def _docs() -> dict:
    rng = np.random.default_rng(7)
    out = {}
    for lang, lengths in LENGTHS.items():
        docs = [np.append(rng.integers(1, 60, size=n - 1), EOS) for n in lengths]
        out[lang] = (np.concatenate(docs), np.cumsum(lengths))
    return out


def _split(docs: dict) -> dict:
    return {lang: np.split(tokens, ends[:-1]) for lang, (tokens, ends) in docs.items()}


@pytest.fixture
def es(run_dir):
    return ExpertSet.load(run_dir)


def _nll(model_or_set, ids: np.ndarray, method=None, **kw) -> float:
    x = torch.from_numpy(np.asarray(ids, dtype=np.int64))[None]
    with torch.inference_mode():
        lp = target_logprobs(model_or_set, x) if method is None else \
            score_targets(model_or_set, x, method, **kw)
    return -float(lp.double().sum())


def _posterior_after(es, ids: np.ndarray) -> list[float]:
    """The floored posterior (uniform prior) after a block: ensemble_posterior_context's prior."""
    totals = torch.tensor([-_nll(es.models[n], ids) for n in es.names], dtype=torch.float64)
    k = len(es.names)
    return ((1 - PRIOR_FLOOR) * torch.softmax(totals, 0) + PRIOR_FLOOR / k).tolist()


def _tfidf_run(run_dir, es, docs):
    """The run's allocation.json and a TF-IDF router whose centres are the two languages."""
    from xelm.allocate.tfidf import TfidfRouter
    from xelm.io import write_json

    texts, groups = [], []
    for g, lang in enumerate(docs):
        for doc in _split(docs)[lang]:
            texts.append(es.tokenizer.decode(doc.tolist()))
            groups.append(g)
    TfidfRouter.from_groups(texts, np.asarray(groups), analyzer="word").save(run_dir / "router")
    write_json(run_dir / "allocation.json", {"method": "typology", "router": "router",
                                             "experts": {"e0": {"languages": ["qa0", "qb0"]},
                                                         "e1": {"languages": ["qa1", "qb1"]}}})


def test_stream_layout_reproduces_xelm_eval(run_dir, es):
    from xelm.evaluate.scoring import tfidf_weigher
    from xelm.rundir import RunDir

    docs = _docs()
    _tfidf_run(run_dir, es, docs)
    cfg = load(None, [f"model.context={CONTEXT}", "eval.batch_size=2"])
    rd, streams = RunDir(run_dir), {lang: (t, 100) for lang, (t, _) in docs.items()}
    methods = ["top1", "ensemble", "ensemble_posterior", "ensemble_posterior_context",
               "ensemble_tfidf", "top1_tfidf"]
    weighers = {m: tfidf_weigher(cfg, rd, m) for m in ("ensemble_tfidf", "top1_tfidf")}
    mine = stream_scores(es, docs, context=CONTEXT, batch_size=2, methods=methods,
                         weighers=weighers)["stream"]
    with torch.inference_mode():
        for m in methods:
            want = score_languages(cfg, streams, method_scorer(cfg, rd, LazyExperts(rd), m,
                                                               streams), m)
            got = language_metrics(mine[m])
            for lang in docs:
                assert got[lang]["tokens"] == want[lang]["tokens"] == len(docs[lang][0]) - 1
                assert got[lang]["nll"] == pytest.approx(want[lang]["nll"], rel=1e-7, abs=1e-9), m
    # per document: the first document loses its first token, the others keep all
    assert mine["top1"]["qa0"]["tokens"] == [4, 20, 3, 12]


def test_reset_first_block_of_every_document_has_the_uniform_prior(es):
    docs = _docs()
    got = label_free_scores(es, docs, context=CONTEXT, batch_size=3, eos=EOS,
                            methods=["ensemble_posterior", "ensemble_posterior_context"])["reset"]
    ctx, post = got["ensemble_posterior_context"], got["ensemble_posterior"]
    for lang, lengths in LENGTHS.items():
        for d, n in enumerate(lengths):
            if n <= CONTEXT:  # one block: no evidence at all, so exactly the posterior
                assert ctx[lang]["nll"][d] == pytest.approx(post[lang]["nll"][d], rel=1e-6)
    # qa0's 12-token document: [EOS, t0..t7] uniform, then [t7..t11] after that block
    doc = _split(docs)["qa0"][3]
    first, second = np.concatenate([[EOS], doc[:8]]), doc[7:]
    expected = _nll(es, first, "ensemble_posterior") + _nll(
        es, second, "ensemble_posterior", prior=_posterior_after(es, first))
    assert ctx["qa0"]["nll"][3] == pytest.approx(expected, rel=1e-5)
    assert ctx["qa0"]["nll"][3] != pytest.approx(post["qa0"]["nll"][3], rel=1e-6)


def test_interleaved_scores_each_token_once_for_its_language(es):
    docs, parts = _docs(), _split(_docs())
    dense = es.models["e1"]  # any single model, scored beside the experts
    got = label_free_scores(es, docs, context=CONTEXT, batch_size=4, eos=EOS,
                            methods=["top1", "ensemble_posterior_context"], order_seed=5,
                            span_documents=True, singles={"dense": dense})
    assert set(got) == {"reset", "interleaved", "interleaved_spanning"}
    for setting in got.values():
        for name in ("top1", "ensemble_posterior_context", "dense"):
            assert {lang: v["tokens"] for lang, v in setting[name].items()} == LENGTHS
    # top-1 by label ignores the evidence: identical with and without interleaving
    assert got["interleaved"]["top1"] == got["reset"]["top1"]
    assert got["interleaved"]["dense"] == got["reset"]["dense"]
    expert = {"qa0": es.models["e0"], "qa1": es.models["e1"]}
    for lang in LENGTHS:
        for d, doc in enumerate(parts[lang]):
            if len(doc) <= CONTEXT:
                ids = np.concatenate([[EOS], doc])
                assert got["reset"]["top1"][lang]["nll"][d] == pytest.approx(
                    _nll(expert[lang], ids), rel=1e-6)
                assert got["reset"]["dense"][lang]["nll"][d] == pytest.approx(
                    _nll(dense, ids), rel=1e-6)
    # spanning blocks give top-1 context from the previous document: other numbers
    assert got["interleaved_spanning"]["top1"] != got["interleaved"]["top1"]


def test_interleaved_prior_comes_from_the_previous_document(es):
    docs, parts = _docs(), _split(_docs())
    flat = [(lang, d, doc) for lang in LENGTHS for d, doc in enumerate(parts[lang])]
    order = interleaved_order(len(flat), seed=3)
    got = label_free_scores(es, docs, context=CONTEXT, batch_size=2, eos=EOS,
                            methods=["ensemble_posterior_context"], order_seed=3)
    inter = got["interleaved"]["ensemble_posterior_context"]
    reset = got["reset"]["ensemble_posterior_context"]
    lang0, d0, _ = flat[order[0]]
    assert inter[lang0]["nll"][d0] == reset[lang0]["nll"][d0]  # the stream's first document
    checked = 0
    for prev, cur in zip(order[:-1], order[1:]):
        (_, _, before), (lang, d, doc) = flat[prev], flat[cur]
        if len(doc) > CONTEXT:
            continue
        last = stream_blocks(np.concatenate([[EOS], before]), CONTEXT)[-1]
        expected = _nll(es, np.concatenate([[EOS], doc]), "ensemble_posterior",
                        prior=_posterior_after(es, last))
        assert inter[lang]["nll"][d] == pytest.approx(expected, rel=1e-5)
        checked += 1
    assert checked >= 2


def test_language_switches_and_order_are_seeded():
    docs = _docs()
    order = interleaved_order(7, seed=1)
    assert sorted(order.tolist()) == list(range(7))
    assert interleaved_order(7, seed=1).tolist() == order.tolist()
    lang = np.array([0, 0, 0, 0, 1, 1, 1])[order]
    assert language_switches(docs, order_seed=1) == pytest.approx(np.mean(lang[1:] != lang[:-1]))


def test_gaps_to_top1_by_hand():
    two, three = 2 * math.log(2), 2 * math.log(3)
    setting = {"top1": {"x": {"nll": [two / 2, two / 2], "tokens": [1, 1]}},
               "ensemble": {"x": {"nll": [three], "tokens": [2]}}}
    assert language_metrics(setting["top1"])["x"]["perplexity"] == pytest.approx(2.0)
    assert gaps_to(setting) == {"ensemble": {"x": pytest.approx(0.5)}}


def test_bad_requests_are_refused(es):
    docs = _docs()
    kw = dict(context=CONTEXT, batch_size=2, eos=EOS)
    with pytest.raises(StreamError, match="unknown stream methods"):
        label_free_scores(es, docs, methods=["top3"], **kw)
    with pytest.raises(StreamError, match="need a weigher"):
        label_free_scores(es, docs, methods=["ensemble_tfidf"], **kw)
    tokens, ends = docs["qa0"]
    with pytest.raises(StreamError, match="cover its 40 test tokens"):
        label_free_scores(es, {"qa0": (tokens, ends[:-1])}, methods=["top1"], **kw)
    with pytest.raises(ValueError, match="no expert serves language 'zz'"):
        label_free_scores(es, {"zz": docs["qa0"]}, methods=["top1"], **kw)


def test_stream_methods_are_the_registrys():
    """evaluate.streams scores the registry's ``streams`` methods, blind ones first and
    those weighed by text (a weigher each) last; bench/evidence_report seeds by this order."""
    from xelm.evaluate.streams import METHODS, ROUTED
    from xelm.methods import METHODS as REGISTRY

    assert set(METHODS) == {name for name, m in REGISTRY.items() if m.streams}
    assert METHODS == ("top1", "ensemble", "ensemble_posterior", "ensemble_posterior_context",
                       "top1_langid", "ensemble_tfidf", "top1_tfidf")
    assert ROUTED == METHODS[4:] and all(REGISTRY[m].by_text for m in ROUTED)
