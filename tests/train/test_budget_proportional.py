"""``train.expert_budget: proportional``: the experts split the equal-budget total in
proportion to their share of dense training (train/plan.py, xelm.train.jobs.training_plan)."""

from __future__ import annotations

import math

import pytest

from xelm.config import ConfigError, load
from xelm.train.jobs import expert_budget, language_weights, training_plan
from xelm.train.plan import PlanError, group_shares, proportional_tokens

STEP = 8 * 32  # train.batch_size x model.context below
COUNTS = {"a": 10_000, "b": 30_000, "c": 60_000, "d": 7_000}   # training tokens
TYPOLOGY = {"method": "typology", "tree": None,
            "experts": {"e0": {"languages": ["a", "b"]}, "e1": {"languages": ["c"]},
                        "e2": {"languages": ["d"]}}}
TFIDF = {"method": "tfidf", "tree": None,
         "experts": {"e0": {"languages": ["c", "a"], "tokens": 50_000},
                     "e1": {"languages": ["b", "c", "d"], "tokens": 42_000},
                     "e2": {"languages": ["b"], "tokens": 15_000}}}
INFO = {"stats": {lang: {"train": {"tokens": n}} for lang, n in COUNTS.items()}}


def _cfg(*extra: str):
    return load(None, ["train.batch_size=8", "model.context=32", "train.tokens=200000", *extra])


def test_largest_remainder_by_hand():
    assert proportional_tokens({"x": 0.5, "y": 0.3, "z": 0.2}, 10, 4) == {"x": 20, "y": 12, "z": 8}
    # 10 steps in thirds: 3.33 each; the one left over goes to the first
    assert proportional_tokens({"x": 1, "y": 1, "z": 1}, 10, 1) == {"x": 4, "y": 3, "z": 3}
    # 7 steps at 0.45/0.45/0.1: 3.15, 3.15, 0.7 -> floors 3, 3, 0, the spare step to z
    assert proportional_tokens({"x": .45, "y": .45, "z": .1}, 7, 1) == {"x": 3, "y": 3, "z": 1}


def test_group_shares_by_hand():
    total = sum(COUNTS.values())
    shares = group_shares(TYPOLOGY, language_weights(COUNTS, 1.0))
    assert shares == pytest.approx({"e0": 40_000 / total, "e1": 60_000 / total, "e2": 7_000 / total})
    # alpha 0.5: the dense sampling probabilities sqrt(share), normalised
    root = {lang: math.sqrt(n) for lang, n in COUNTS.items()}
    norm = sum(root.values())
    half = group_shares(TYPOLOGY, language_weights(COUNTS, 0.5))
    assert half["e0"] == pytest.approx((root["a"] + root["b"]) / norm)
    assert group_shares(TFIDF, {}) == pytest.approx({"e0": 50 / 107, "e1": 42 / 107, "e2": 15 / 107})


@pytest.mark.parametrize("alloc", [TYPOLOGY, TFIDF], ids=["typology", "tfidf"])
def test_each_expert_gets_its_share_of_the_same_total(alloc):
    equal = training_plan(_cfg(), alloc, INFO)
    prop = training_plan(_cfg("train.expert_budget=proportional"), alloc, INFO)
    per_expert = expert_budget(_cfg(), 3)
    assert [e.tokens for e in equal.final] == [per_expert] * 3
    assert prop.dense_tokens == equal.dense_tokens == 3 * per_expert  # 780 steps of 256
    total = prop.dense_tokens
    shares = group_shares(alloc, language_weights(COUNTS, 1.0))
    for e in prop.final:
        assert e.tokens % STEP == 0
        assert abs(e.tokens / total - shares[e.name]) <= STEP / total
    assert [e.tokens for e in prop.final] != [per_expert] * 3


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_every_language_sees_as_many_tokens_from_its_expert_as_from_dense(alpha):
    plan = training_plan(_cfg("train.expert_budget=proportional", f"train.alpha={alpha}"),
                          TYPOLOGY, INFO)
    dense = language_weights(COUNTS, alpha)
    for e in plan.final:
        within = language_weights({lang: COUNTS[lang] for lang in e.languages}, alpha)
        for lang in e.languages:
            assert abs(e.tokens * within[lang] - plan.dense_tokens * dense[lang]) <= STEP


def test_refusals():
    with pytest.raises(PlanError, match="e2 .* less than one batch"):
        proportional_tokens({"e0": 0.9, "e1": 0.099, "e2": 0.001}, 100, STEP)
    with pytest.raises(PlanError, match="for flat x-BTM"):
        training_plan(_cfg("train.expert_budget=proportional", "hmr.rounds=[2,3]", "allocate.experts=3"), TYPOLOGY,
                       INFO)
    with pytest.raises(PlanError, match="no token count for TF-IDF experts"):
        group_shares({"method": "tfidf", "experts": {"e0": {"languages": ["a"]}}}, {})
    with pytest.raises(ConfigError, match="expert_budget"):
        _cfg("train.expert_budget=fair")


def test_status_shows_the_proportional_budgets_a_run_trains(tmp_path):
    from xelm_testing import tiny_args

    from xelm.cli import main
    from xelm.train.status import job_states

    out = tmp_path / "run"
    args = tiny_args(out, "train.expert_budget=proportional")
    for stage in ("prepare", "seed", "allocate"):
        assert main([stage, *args]) == 0
    planned = {row["job"]: row["budget"] for row in job_states(out)}
    assert main(["train", *args]) == 0
    import json

    for row in job_states(out):
        state = json.loads((out / ("experts/" if row["job"].startswith("e") else "")
                            / row["job"] / "train_state.json").read_text())
        assert planned[row["job"]] == row["budget"] == state["budget_tokens"], row
    assert planned["e0"] != planned["e1"]
