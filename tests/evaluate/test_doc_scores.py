"""Per-token and per-document NLL (evaluate/perplexity.py): the same blocks and batches
as the per-language totals, cut at document boundaries, with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xelm.data.packing import Shard, write_tokens
from xelm.evaluate.perplexity import (DocumentError, document_nll, document_of_positions,
                                      stream_document_ends, stream_nll, stream_token_nll)
from xelm.infer.mixture import target_logprobs


def minus_tenth(ids: torch.Tensor, rows: list) -> torch.Tensor:
    """logp of target t is -t/10, so the NLL of token t is t/10."""
    return -ids[:, 1:].to(torch.float32) / 10


def test_token_nll_is_each_target_once_in_stream_order():
    # context 4, batch 1: blocks [0..4], [4..8], [8, 9]; batch 2 reorders nothing
    for batch in (1, 2, 5):
        got = stream_token_nll(minus_tenth, np.arange(10), context=4, batch_size=batch)
        assert np.allclose(got, np.arange(1, 10) / 10, atol=1e-7)


def test_document_sums_by_hand():
    token_nll = np.arange(1, 10) / 10          # tokens 1..9 of a 10-token stream
    nll, count = document_nll(token_nll, np.array([3, 7, 10]))
    # doc 0 = positions 0-2 (0 is never predicted): 0.1 + 0.2; doc 1 = 3..6; doc 2 = 7..9
    assert np.allclose(nll, [0.3, 1.8, 2.4])
    assert count.tolist() == [2, 4, 3]
    assert nll.sum() == pytest.approx(stream_nll(minus_tenth, np.arange(10), 4, 2)[0])


def test_a_one_token_first_document_predicts_nothing():
    nll, count = document_nll(np.array([0.5, 0.25]), np.array([1, 3]))
    assert count.tolist() == [0, 2] and nll.tolist() == [0.0, 0.75]


def test_tiny_model_documents_add_up_to_the_stream_total():
    from xelm_tiny import tiny_model

    model = tiny_model(seed=3)
    tokens = np.random.default_rng(1).integers(1, 60, size=53)
    score = lambda ids, rows: target_logprobs(model, ids)  # noqa: E731
    with torch.inference_mode():
        per_token = stream_token_nll(score, tokens, context=8, batch_size=3)
        total, n = stream_nll(score, tokens, 8, 3)
        whole = -target_logprobs(model, torch.from_numpy(tokens[:9].astype(np.int64))[None])[0]
    assert len(per_token) == n == 52
    assert per_token.sum() == pytest.approx(total, rel=1e-9)
    assert np.allclose(per_token[:8], whole.double().numpy(), atol=1e-6)  # first block alone
    nll, count = document_nll(per_token, np.array([5, 20, 21, 53]))
    assert count.tolist() == [4, 15, 1, 32] and nll.sum() == pytest.approx(total, rel=1e-9)


def test_document_ends_of_a_shard_head(tmp_path):
    docs = [np.array([5, 6, 0]), np.array([7, 0]), np.array([8, 9, 10, 0])]
    write_tokens(tmp_path / "x.bin", docs, [4, 3, 5], "uint16")
    shard = Shard(tmp_path / "x.bin", "uint16")
    tokens, _ = shard.head(6)                     # the first two documents (5 tokens)
    assert stream_document_ends(shard.documents, len(tokens)).tolist() == [3, 5]
    full, _ = shard.head(None)
    assert stream_document_ends(shard.documents, len(full)).tolist() == [3, 5, 9]
    with pytest.raises(DocumentError, match="document boundary"):
        stream_document_ends(shard.documents, 4)


def test_bad_boundaries_are_refused_in_one_message():
    with pytest.raises(DocumentError, match="cover 9 tokens but the stream has 10"):
        document_nll(np.zeros(9), np.array([4, 9]))
    with pytest.raises(DocumentError, match="strictly increasing"):
        document_of_positions(np.array([1]), np.array([4, 4, 9]))
    with pytest.raises(DocumentError, match="outside"):
        document_of_positions(np.array([9]), np.array([4, 9]))
    assert issubclass(DocumentError, ValueError)


# ------------------------------------------- the intervals of bench/evidence_report.py
def _report():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    return importlib.import_module("evidence_report")


def _scores(per_token: list[float], tokens: list[int]) -> dict:
    return {"xx": {"nll": [c * n for c, n in zip(per_token, tokens)], "tokens": tokens}}


def test_paired_change_by_hand():
    r = _report()
    # 2 ln 2 nats more over 4 tokens: perplexity x 2^(1/2)
    assert r.paired_change(np.array([2 * np.log(2), 0.0]), np.array([2, 2])) == pytest.approx(
        np.sqrt(2) - 1)


def test_intervals_collapse_when_every_document_changes_alike():
    r = _report()
    tokens = [3, 7, 5, 9]
    ref = _scores([2.0] * 4, tokens)
    out = r.compare([_scores([1.9] * 4, tokens)], [ref], ["0"], 200, np.random.default_rng(0))
    lang = out["per_language"]["xx"]
    want = np.expm1(-0.1)                          # -0.1 nats per token, in every document
    assert lang["mean"] == pytest.approx(want) and lang["seed_sd"] is None
    assert lang["ci95"] == pytest.approx([want, want])
    assert lang["seeds"]["0"]["ci95"] == pytest.approx([want, want])
    assert lang["win"] and out["wins"] == 1 and out["overall"]["mean"] == pytest.approx(want)


def test_hierarchical_interval_spans_the_seeds():
    """Seed a: -0.1 nats/token, seed b: +0.05. Drawing 2 seeds with replacement puts 1/4
    of the replicates at a alone and 1/4 at b alone, so the 95% interval is [a, b]: no win,
    although the mean change is negative."""
    r = _report()
    tokens = [4, 4, 4]
    ref = _scores([2.0] * 3, tokens)
    out = r.compare([_scores([1.9] * 3, tokens), _scores([2.05] * 3, tokens)], [ref, ref],
                    ["a", "b"], 2000, np.random.default_rng(1))
    lang = out["per_language"]["xx"]
    a, b = np.expm1(-0.1), np.expm1(0.05)
    assert lang["ci95"] == pytest.approx([a, b])
    assert lang["mean"] == pytest.approx((a + b) / 2) and lang["mean"] < 0
    assert lang["seed_sd"] == pytest.approx(np.std([a, b], ddof=1))
    assert not lang["win"] and not lang["loss"] and out["wins_point"] == 1


def test_compare_refuses_scores_of_other_documents():
    r = _report()
    with pytest.raises(ValueError, match="not on the same documents"):
        r.compare([_scores([1.0], [3])], [_scores([1.0], [4])], ["0"], 10,
                  np.random.default_rng(0))


def test_overall_is_the_mean_over_languages():
    r = _report()
    tokens = [5, 6]
    ref = {**_scores([2.0] * 2, tokens), "yy": _scores([2.0] * 2, tokens)["xx"]}
    method = {**_scores([1.8] * 2, tokens), "yy": _scores([2.2] * 2, tokens)["xx"]}
    out = r.compare([method], [ref], ["0"], 100, np.random.default_rng(0))
    want = (np.expm1(-0.2) + np.expm1(0.2)) / 2
    assert out["overall"]["mean"] == pytest.approx(want)
    assert out["overall"]["ci95"] == pytest.approx([want, want])
    assert out["overall"]["seeds"]["0"]["ci95"] == pytest.approx([want, want])
    assert (out["wins"], out["losses"]) == (1, 1)
