"""Hierarchical Multi-Round training: the plan, its config, and one tiny HMR run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from xelm_testing import tiny_args

from xelm import config as cfgmod
from xelm.allocate.typology import TypologyNode, TypologyTree, cluster
from xelm.train.plan import PlanError, plan_for_run, plan_hmr


def _tree(names: list[str], merges: list[tuple[int, int]]) -> TypologyTree:
    nodes = [TypologyNode(id=i, language=n) for i, n in enumerate(names)]
    for a, b in merges:
        nodes.append(TypologyNode(id=len(nodes), children=[a, b], distance=0.1, round=1))
    return TypologyTree(nodes=nodes, k=len(names))


# a b | c d: ((a b)(c d))
FOUR = _tree(["a", "b", "c", "d"], [(0, 1), (2, 3), (4, 5)])


def test_two_rounds_branch_from_the_half_that_holds_them():
    plan = plan_hmr(FOUR, [2, 4], [0.5, 0.5], 4096, 256)
    first, final = plan.rounds
    assert [(e.name, e.languages, e.parent) for e in first] == [
        ("r1-e0", ("a", "b"), "seed"), ("r1-e1", ("c", "d"), "seed")]
    assert [(e.name, e.languages, e.parent, e.round) for e in final] == [
        ("e0", ("a",), "r1-e0", 2), ("e1", ("b",), "r1-e0", 2),
        ("e2", ("c",), "r1-e1", 2), ("e3", ("d",), "r1-e1", 2)]
    assert [e.tokens for e in first] == [1024, 1024] and [e.tokens for e in final] == [512] * 4
    assert plan.dense_tokens == 4096 == sum(plan.round_tokens().values())
    assert [a.name for a in plan.ancestors("e2")] == ["r1-e1"]
    assert final[0].path == "experts/e0" and first[1].path == "experts/r1-e1"
    assert len({e.seed_offset for e in plan.experts} | {1}) == len(plan.experts) + 1


def test_uneven_fractions_round_down_and_dense_gets_the_exact_sum():
    plan = plan_hmr(FOUR, [2, 4], [0.3, 0.7], 10_000, 256)
    assert [e.tokens for e in plan.experts] == [1280] * 2 + [1536] * 4  # 5 and 6 steps
    assert plan.round_tokens() == {1: 2560, 2: 6144}
    assert plan.dense_tokens == 8704 and all(e.tokens % 256 == 0 for e in plan.experts)


def test_three_rounds_and_a_cluster_that_does_not_split():
    plan = plan_hmr(FOUR, [1, 2, 4], [0.2, 0.3, 0.5], 20_000, 100)
    assert [e.parent for e in plan.experts] == ["seed", "r1-e0", "r1-e0",
                                                 "r2-e0", "r2-e0", "r2-e1", "r2-e1"]
    assert [a.name for a in plan.ancestors("e3")] == ["r1-e0", "r2-e1"]
    # ((a b) c): at k=3 the leaf c is the same cluster as at k=2; it still branches
    three = _tree(["a", "b", "c"], [(0, 1), (3, 2)])
    plan = plan_hmr(three, [2, 3], [0.5, 0.5], 6000, 100)
    assert [(e.name, e.parent) for e in plan.final] == [("e0", "r1-e0"), ("e1", "r1-e0"),
                                                         ("e2", "r1-e1")]


@pytest.mark.parametrize("seed", range(5))
def test_cuts_of_a_clustered_tree_nest(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 4))
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    for linkage in ("paper", "average"):
        tree = cluster(d, [f"l{i}" for i in range(9)], 4, linkage)
        plan = plan_hmr(tree, [2, 4, 9], [0.25, 0.25, 0.5], 90_000, 10)
        by_name = {e.name: e for e in plan.experts}
        for e in plan.experts:
            if e.parent != "seed":
                assert set(e.languages) <= set(by_name[e.parent].languages)
        assert sorted(lang for e in plan.final for lang in e.languages) == sorted(tree.leaves())


def test_final_round_takes_the_allocation_names():
    alloc = {"method": "typology", "tree": FOUR.to_dict(),
             "experts": {"x0": {"languages": ["c"]}, "x1": {"languages": ["a"]},
                         "x2": {"languages": ["b"]}, "x3": {"languages": ["d"]}}}
    plan = plan_for_run(alloc, [2, 4], [0.5, 0.5], 4096, 256)
    assert {e.name: e.parent for e in plan.final} == {"x1": "r1-e0", "x2": "r1-e0",
                                                      "x0": "r1-e1", "x3": "r1-e1"}
    alloc["experts"] = {"x0": {"languages": ["a", "b"]}, "x1": {"languages": ["c", "d"]}}
    with pytest.raises(PlanError, match="not an expert of allocation.json"):
        plan_for_run(alloc, [2, 4], [0.5, 0.5], 4096, 256)
    with pytest.raises(PlanError, match="typology tree"):
        plan_for_run({"method": "tfidf", "tree": None, "experts": {}}, [2, 4], [0.5, 0.5],
                     4096, 256)


def test_plan_errors_say_what_to_change():
    with pytest.raises(PlanError, match="less than one batch"):
        plan_hmr(FOUR, [2, 4], [0.9, 0.1], 4096, 256)
    with pytest.raises(PlanError, match="only 4 languages"):
        plan_hmr(FOUR, [2, 5], [0.5, 0.5], 4096, 256)


@pytest.mark.parametrize("overrides, message", [
    (["hmr.rounds=[4, 2]"], "at least as many experts as the one before"),
    (["hmr.rounds=[4]"], "one round, which is flat x-BTM"),
    (["hmr.rounds=[2, 3]"], "allocate.experts=4"),
    (["hmr.rounds=[2, 4]", "hmr.budget_fractions=[0.5, 0.6]"], "sum to 1"),
    (["hmr.rounds=[2, 4]", "hmr.budget_fractions=[1.0]"], "one per round"),
    (["hmr.rounds=[2, 4]", "hmr.budget_fractions=[1.5, -0.5]"], "positive"),
    (["hmr.budget_fractions=[0.5, 0.5]"], "hmr.rounds is not"),
    (["hmr.rounds=[2, 4]", "allocate.method=tfidf"], "needs allocate.method=typology"),
    (["hmr.round=[2, 4]"], "Did you mean 'hmr.rounds'"),
])
def test_config_errors(overrides, message):
    with pytest.raises(cfgmod.ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        cfgmod.load(None, overrides)


def test_config_defaults():
    cfg = cfgmod.load(None, ["hmr.rounds=[1, 2, 4]"])
    assert cfg.hmr.fractions() == pytest.approx([1 / 3] * 3)
    assert cfgmod.load(None).hmr.rounds is None


@pytest.mark.slow
def test_tiny_hmr_run(tmp_path):
    from xelm.cli import main
    from xelm.train.status import job_states

    out = tmp_path / "hmr"
    args = tiny_args(out, "corpus.synthetic.languages=4", "allocate.experts=4",
                     "hmr.rounds=[2, 4]", "eval.methods=[top1]")
    assert main(["run", *args]) == 0
    manifest = json.loads((out / "xelm.json").read_text())
    assert [e["name"] for e in manifest["experts"]] == ["e0", "e1", "e2", "e3"]
    states = {}
    for name in ("r1-e0", "r1-e1", "e0", "e1", "e2", "e3", "dense"):
        states[name] = json.loads((out / ("dense" if name == "dense" else f"experts/{name}")
                                   / "train_state.json").read_text())
    for e in manifest["experts"]:
        assert e["round"] == 2 and e["parent"] in ("r1-e0", "r1-e1")
        assert Path(states[e["name"]]["init"]) == out / "experts" / e["parent"]
        assert set(e["languages"]) < set(e["ancestors"][0]["languages"])
    for name in ("r1-e0", "r1-e1"):
        assert Path(states[name]["init"]) == out / "seed"
    all_rounds = sum(states[n]["tokens"] for n in states if n != "dense")
    assert states["dense"]["tokens"] == all_rounds
    budget = json.loads((out / "results.json").read_text())["budget"]
    assert budget["hmr_round_tokens"] == {"1": states["r1-e0"]["tokens"] * 2}
    assert budget["dense_tokens"] == (sum(budget["expert_tokens"].values())
                                      + sum(budget["hmr_round_tokens"].values()))
    assert "(equal within 1%)" in (out / "report.md").read_text()
    rows = {row["job"]: row for row in job_states(out)}
    assert set(rows) == {"seed", "dense", "r1-e0", "r1-e1", "e0", "e1", "e2", "e3"}
    assert all(r["state"] == "done" and r["tokens"] == r["budget"]
               for n, r in rows.items() if n != "seed")
