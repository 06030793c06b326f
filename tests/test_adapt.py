"""``xelm adapt``: a new language joins a finished expert set; nothing old changes."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter

import pytest

from xelm_testing import tiny_args
from xelm.allocate.parents import choose_parents
from xelm.evaluate.adapt import expert_perplexities
from xelm.pipeline.adapt import AdaptError, adapt, lapt_budget, new_languages
from xelm.cli import main
from xelm.config import load
from xelm.experts.store import sha256_file
from xelm.rundir import RunDir

# Four synthetic languages in two families (qaa qab | qac qad); the run trains on three.
RUN = ["corpus.synthetic.languages=4", "corpus.languages=[qaa, qab, qac]"]


# --------------------------------------------------------------------------- units
def test_typology_parent_is_the_expert_of_the_nearest_language():
    distances = {"pl": {"ru": 0.3, "de": 0.2, "fr": 0.25}, "sv": {"ru": 0.4, "de": 0.1, "fr": 0.4}}
    owner = {"ru": "e0", "de": "e1", "fr": "e2"}
    got = choose_parents(distances, owner)
    assert got["pl"] == {"parent": "e1", "via": "de", "value": 0.2}
    assert got["sv"]["parent"] == "e1"


def test_perplexity_parent_is_the_lowest_and_ties_are_stable():
    assert choose_parents({"pl": {"e0": 40.0, "e1": 35.5}})["pl"]["parent"] == "e1"
    assert choose_parents({"pl": {"e1": 7.0, "e0": 7.0}})["pl"]["parent"] == "e0"


def test_languages_are_normalised_sorted_and_distinct():
    assert new_languages(["swe", "PL"]) == ["pl", "sv"]
    with pytest.raises(AdaptError, match="twice"):
        new_languages(["pl", "pol"])


def test_budget_defaults_to_the_experts_and_rounds_to_whole_steps(tmp_path):
    cfg = load(None, ["train.batch_size=8", "model.context=32"])  # 256 tokens a step
    manifest = {"experts": [{"tokens": 1024}, {"tokens": 1024},
                            {"tokens": 99, "adapted_language": "x"}]}
    assert lapt_budget(cfg, manifest, None) == 1024
    assert lapt_budget(cfg, manifest, 1000) == 768
    with pytest.raises(AdaptError, match="less than one batch"):
        lapt_budget(cfg, manifest, 100)


def test_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(AdaptError, match="not a finished xelm run"):
        adapt(tmp_path, ["qad"], tmp_path)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A finished tiny run, snapshotted, then adapted to ``qad`` through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["run", *tiny_args(out, *RUN)]) == 0
    shutil.copytree(out, out.with_name("finished"))  # for adapting it another way
    before = {"manifest": json.loads((out / "xelm.json").read_text()),
              "prepare": (out / "data" / "prepare.json").read_text(),
              "results": json.loads((out / "results.json").read_text())}
    assert main(["adapt", str(out), "--languages", "qad", "--corpus",
                 str(out / "data" / "synthetic")]) == 0
    return out, before


slow = pytest.mark.slow


@slow
def test_old_experts_are_byte_identical(adapted):
    out, before = adapted
    manifest = json.loads((out / "xelm.json").read_text())
    old = before["manifest"]["experts"]
    assert manifest["experts"][:len(old)] == old  # entries (tokens, parents, hashes) kept
    for e in old:
        for name, sha in e["files"].items():
            assert sha256_file(out / e["path"] / name) == sha
    res = json.loads((out / "results.json").read_text())["adapt"]
    assert res["old_experts_unchanged"] is True
    assert res["old_expert_hashes"] == {e["name"]: e["files"] for e in old}
    assert (out / "data" / "prepare.json").read_text() == before["prepare"]


@slow
def test_new_expert_branches_from_the_related_language(adapted):
    out, before = adapted
    manifest = json.loads((out / "xelm.json").read_text())
    parent = before["manifest"]["language_to_expert"]["qac"]  # qad's family sister
    new = manifest["experts"][-1]
    assert (new["name"], new["parent"], new["languages"]) == (f"{parent}+qad", parent, ["qad"])
    assert manifest["language_to_expert"]["qad"] == new["name"]
    res = json.loads((out / "results.json").read_text())["adapt"]
    assert res["parents"]["qad"]["via"] == "qac"
    assert set(res["scores"]["qad"]) == {"qaa", "qab", "qac"}
    tokens = res["budget"]["tokens_per_language"]
    assert new["tokens"] == tokens
    assert res["budget"]["dense_lapt_tokens"] == res["budget"]["seed_lapt_tokens"] == tokens


@slow
def test_tfidf_routing_reaches_the_new_expert(adapted):
    """The new expert gets a TF-IDF centre (in adapt/qad/router; the run's router stays as
    it was), and c-BTM's top-1 sends qad's held-out documents to it."""
    from types import SimpleNamespace

    import numpy as np

    from xelm.allocate.fit import load_expert_router
    from xelm.evaluate.scoring import tfidf_weigher
    from xelm.pipeline.adapt import load_run

    out, before = adapted
    manifest = json.loads((out / "xelm.json").read_text())
    assert before["manifest"]["tfidf"] == "router" and manifest["tfidf"] == "adapt/qad/router"
    for path in (out.with_name("finished") / "router").iterdir():  # untouched
        assert (out / "router" / path.name).read_bytes() == path.read_bytes()
    rd = RunDir(out)
    router, names = load_expert_router(rd)
    new = manifest["language_to_expert"]["qad"]
    old = [e["name"] for e in before["manifest"]["experts"]]
    assert names == [*old, new] and router.k == len(names)
    own, _ = load_expert_router(RunDir(out.with_name("finished")))
    assert np.array_equal(router.centroids[:-1], own.centroids)  # old centres kept
    docs = rd.text("qad", "test").read_text(encoding="utf-8").splitlines()
    log_w = tfidf_weigher(load_run(rd), rd, "top1_tfidf")(docs, SimpleNamespace(names=names))
    chosen = [names[i] for i in log_w.argmax(0).tolist()]
    assert chosen.count(new) / len(docs) > 0.9, Counter(chosen)


@slow
def test_new_language_is_learned_and_only_dense_forgets(adapted):
    out, before = adapted
    results = json.loads((out / "results.json").read_text())
    assert {k: results[k] for k in before["results"]} == before["results"]  # nothing dropped
    res = results["adapt"]
    ppl = res["perplexity"]
    assert set(ppl) == {"seed", "dense", "seed_lapt", "dense_lapt", "xelm_top1", "xelm_posterior"}
    assert ppl["xelm_top1"]["qad"] < ppl["seed"]["qad"]
    # the unlabelled posterior ensemble finds the new expert: far closer to it than to the seed
    assert abs(math.log(ppl["xelm_posterior"]["qad"] / ppl["xelm_top1"]["qad"])) < \
        abs(math.log(ppl["seed"]["qad"] / ppl["xelm_top1"]["qad"])) / 2
    assert ppl["dense_lapt"]["qad"] < ppl["dense"]["qad"]
    forget = res["forgetting"]["perplexity"]
    assert all(forget["dense_lapt"][l] > forget["dense"][l] for l in ("qaa", "qab"))
    assert forget["xelm_top1"] == before["results"]["perplexity"]["xelm_top1"]  # exactly
    assert res["summary"]["old_max_abs_ppl_change_xelm"] == 0.0
    assert res["summary"]["old_mean_ppl_change_dense_lapt"] > 0
    assert 0 < res["tokens_per_byte"]["qad"] < 1
    report = (out / "report.md").read_text()
    assert report.count("## Adding languages") == 1 and "| qad |" in report


@slow
def test_adapting_again_is_a_no_op_that_restores_what_a_rerun_replaced(adapted):
    out, before = adapted
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    manifest = (out / "xelm.json").read_text()
    # what `xelm run` again would leave: the train stage's manifest, eval's results.json
    (out / "xelm.json").write_text(json.dumps(before["manifest"]))
    (out / "results.json").write_text(json.dumps(before["results"]))
    start = time.perf_counter()
    res = adapt(out, ["qad"], out / "data" / "synthetic")
    assert time.perf_counter() - start < 10
    assert json.loads((out / "xelm.json").read_text()) == json.loads(manifest)
    assert res == json.loads((out / "results.json").read_text())["adapt"]
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert (out / "report.md").read_text().count("## Adding languages") == 1


@slow
def test_changed_eval_settings_rescore_a_finished_call(adapted, tmp_path):
    out, _ = adapted
    run = tmp_path / "run"
    shutil.copytree(out, run)
    first = json.loads((run / "results.json").read_text())["adapt"]
    assert first["eval_settings"]["max_tokens_per_language"] == 1500
    assert main(["eval", *tiny_args(run, *RUN, "eval.max_tokens_per_language=500")]) == 0
    assert "adapt" not in json.loads((run / "results.json").read_text())  # other settings
    assert main(["adapt", str(run), "--languages", "qad", "--corpus",
                 str(run / "data" / "synthetic")]) == 0  # trains nothing, rescores
    again = json.loads((run / "results.json").read_text())["adapt"]
    assert again["eval_settings"]["max_tokens_per_language"] == 500
    assert again["perplexity"]["dense_lapt"] != first["perplexity"]["dense_lapt"]
    assert again["experts"] == first["experts"]


@slow
def test_clear_errors_for_present_and_missing_languages(adapted, capsys):
    out, _ = adapted
    corpus = str(out / "data" / "synthetic")
    assert main(["adapt", str(out), "--languages", "qac", "--corpus", corpus]) == 2
    assert "'qac' is already in the expert set" in capsys.readouterr().err
    assert main(["adapt", str(out), "--languages", "qad,qae", "--corpus", corpus]) == 2
    assert "'qad' is already in the expert set" in capsys.readouterr().err
    assert main(["adapt", str(out), "--languages", "qae", "--corpus", corpus]) == 2
    err = capsys.readouterr().err
    assert "no file for qae" in err and "qad" in err
    assert not (out / "data" / "text" / "qae.train.txt").exists()


@slow
def test_perplexity_selection_scores_every_expert(adapted):
    out, _ = adapted
    cfg = load(str(out / "config.yaml"))
    table = expert_perplexities(cfg, RunDir(out), ["qad"])
    assert set(table["qad"]) == {"e0", "e1", "e1+qad"}
    assert choose_parents(table)["qad"]["parent"] == "e1+qad"  # the adapted expert knows qad best


@slow
def test_an_interrupted_call_resumes_without_retraining(adapted):
    out, _ = adapted
    want = json.loads((out / "results.json").read_text())["adapt"]
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    record = json.loads((out / "data" / "adapt.json").read_text())
    record["calls"]["qad"]["done"] = False  # as if killed while evaluating
    (out / "data" / "adapt.json").write_text(json.dumps(record))
    for path in ("results.json", "eval/xelm_top1.json", "eval/dense_lapt.json"):
        (out / "adapt" / "qad" / path).unlink()
    got = adapt(out, ["qad"], out / "data" / "synthetic")
    assert got["perplexity"] == want["perplexity"] and got["forgetting"] == want["forgetting"]
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert json.loads((out / "data" / "adapt.json").read_text())["calls"]["qad"]["done"]


@slow
def test_perplexity_selection_and_an_explicit_budget(adapted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(adapted[0].with_name("finished"), out)
    res = adapt(out, ["qad"], out / "data" / "synthetic", tokens=2100, select="ppl")
    scores = res["scores"]["qad"]
    assert set(scores) == {"e0", "e1"} and all(v > 1 for v in scores.values())
    assert res["parents"]["qad"]["parent"] == min(scores, key=scores.get)
    assert res["budget"]["expert_tokens"] == {res["experts"]["qad"]: 2048}  # 8 steps of 256
    assert res["budget"]["dense_lapt_tokens"] == 2048
    assert res["old_experts_unchanged"]


@slow
def test_lapt_baselines_give_every_new_language_the_experts_budget(adapted):
    """Dense and seed LAPT sample the new languages uniformly (not by data share), so each
    language gets in expectation the tokens its new expert trains on."""
    from xelm.pipeline.adapt import call_jobs, load_run
    from xelm.experts.manifest import read_manifest

    out, _ = adapted
    rd = RunDir(out)
    manifest = read_manifest(out)
    parent = manifest["experts"][0]["name"]
    langs = ["qad", "qae", "qaf"]
    call = {"languages": langs, "tokens": 4096,
            "experts": {lang: f"{parent}+{lang}" for lang in langs},
            "parents": {lang: {"parent": parent} for lang in langs}}
    jobs = call_jobs(load_run(rd), rd, "+".join(langs), call, manifest)
    baselines = [j for j in jobs if j.name.split(".")[0] in ("dense-lapt", "seed-lapt")]
    assert len(baselines) == 2
    for job in baselines:
        assert job.weights == pytest.approx([1 / 3] * 3)
        assert job.tokens == 3 * 4096


@slow
def test_average_selection_branches_from_the_mean_of_all_experts(adapted, tmp_path):
    from safetensors.torch import load_file

    from xelm.pipeline.adapt import call_jobs, load_run, read_record
    from xelm.experts.manifest import ExpertSet, read_manifest
    from xelm.report.adapt import markdown_section

    out = tmp_path / "run"
    shutil.copytree(adapted[0].with_name("finished"), out)
    res = adapt(out, ["qad"], out / "data" / "synthetic", tokens=2100, select="average")
    assert res["parents"]["qad"]["parent"] == "average"
    assert res["experts"]["qad"] == "average+qad" and res["old_experts_unchanged"]
    old = ["e0", "e1"]
    average = load_file(out / "adapt" / "qad" / "average" / "model.safetensors")
    states = [load_file(out / "experts" / name / "model.safetensors") for name in old]
    assert states[0].keys() == average.keys()
    for key, tensor in average.items():
        assert torch_close((states[0][key] + states[1][key]) / 2, tensor), key
    assert any(not torch_close(states[0][k], states[1][k]) for k in average)  # a real average
    manifest = read_manifest(out)
    entry = manifest["experts"][-1]
    assert (entry["parent"], entry["averaged"], entry["round"]) == ("average", old, 2)
    assert manifest["language_to_expert"]["qad"] == "average+qad"
    assert "average+qad" in ExpertSet.load(out).names
    rd = RunDir(out)
    call = read_record(rd)["calls"]["qad"]
    job = call_jobs(load_run(rd), rd, "qad", call, manifest)[0]
    assert (job.name, job.init_dir) == ("average+qad", out / "adapt" / "qad" / "average")
    assert "parameter average of all experts" in markdown_section(res)
    # results of an earlier version, without the posterior-ensemble score, still render
    earlier = {**res, "perplexity": {k: v for k, v in res["perplexity"].items()
                                     if k != "xelm_posterior"}}
    row = next(line for line in markdown_section(earlier).splitlines()
               if line.startswith("| qad |"))
    assert row.count(" - |") == 2


def torch_close(a, b) -> bool:
    import torch

    return torch.allclose(a.float(), b.float(), atol=1e-6)


@slow
def test_a_later_average_also_averages_the_experts_added_before(adapted, tmp_path):
    from xelm.experts.manifest import read_manifest

    out = tmp_path / "run"
    shutil.copytree(adapted[0], out)
    added = read_manifest(out)["language_to_expert"]["qad"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(out / "data" / "synthetic" / "qad.txt", corpus / "sv.txt")
    res = adapt(out, ["sv"], corpus, tokens=2100, select="average")
    assert list(res["scores"]["sv"]) == ["e0", "e1", added]  # BTM: every expert of the set
    entry = read_manifest(out)["experts"][-1]
    assert (entry["name"], entry["averaged"], entry["round"]) == ("average+sv", ["e0", "e1", added], 3)
    assert res["old_experts_unchanged"] and added in res["old_expert_hashes"]
