"""Cross-lingual prompting: demonstrations from the source language's few-shot split, the
test item in the target language, and route=target|source|ensemble scoring the whole
prompt with the expert of the test item's language, of the demonstrations' language, or
the posterior mixture."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import yaml

pytest.importorskip("lm_eval")

from xelm_tiny import make_run  # noqa: E402

from xelm.evaluate.crosslingual import resolve_route  # noqa: E402
from xelm.evaluate.lm_eval_model import XelmLM  # noqa: E402
from xelm.evaluate.tasks import build_tasks  # noqa: E402
from xelm.experts.manifest import ExpertSet  # noqa: E402
from xelm.infer.mixture import score_targets  # noqa: E402

WORDS = {"qa0": [f"w{i}" for i in range(1, 31)], "qa1": [f"w{i}" for i in range(31, 63)]}


def _doc(rng: random.Random, words: list[str]) -> str:
    return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 4))) + " ."
                    for _ in range(rng.randint(3, 5)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Experts e0 (qa0) and e1 (qa1); qa0 and qa1 text use disjoint words."""
    from transformers import AutoTokenizer

    from xelm.experts.manifest import read_manifest, write_manifest

    root = tmp_path_factory.mktemp("xling")
    run = make_run(root / "run").parent
    tok = AutoTokenizer.from_pretrained(run / "data" / "tokenizer")
    tok.eos_token = "w63"  # lm-eval's empty-context prefix; no text uses it
    tok.save_pretrained(run / "data" / "tokenizer")
    write_manifest(run, read_manifest(run)["experts"], "data/tokenizer")
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for lang, words in WORDS.items():
        docs = [_doc(rng, words) for _ in range(16)]
        (corpus / f"{lang}.test.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    summary = build_tasks(corpus, root / "tasks", choices=2, fewshot_docs=4, seed=1,
                          source_lang="qa0")
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(root / "tasks"), include_defaults=False)
    return SimpleNamespace(run=run, root=root, summary=summary, tm=tm,
                           experts=ExpertSet.load(run))


def test_cross_lingual_task_reads_the_source_few_shot_split(setup):
    cross = setup.summary["crosslingual"]
    assert cross == {"source": "qa0", "group": "xelm_cloze_x_qa0",
                     "tasks": {"qa1": "xelm_cloze_x_qa0_qa1"}}
    text = (setup.root / "tasks" / "xelm_cloze_x_qa0_qa1.yaml").read_text()
    task = yaml.safe_load(text.replace("!function", ""))
    assert task["dataset_kwargs"]["data_files"] == {"test": "data/qa1.test.jsonl",
                                                    "fewshot": "data/qa0.fewshot.jsonl"}
    assert task["metadata"]["source_lang"] == "qa0"
    with pytest.raises(ValueError, match="source language 'xx' has no few-shot split"):
        build_tasks(setup.root / "corpus", setup.root / "t2", choices=2, fewshot_docs=4,
                    source_lang="xx")


def _words(text: str) -> set[str]:
    return {w for w in text.split() if w.startswith("w")}


def _evaluate(setup, model_args: str) -> list[dict]:
    import lm_eval

    out = lm_eval.simple_evaluate(model="xelm", model_args=f"run={setup.run},{model_args}",
                                  tasks=["xelm_cloze_x_qa0_qa1"], task_manager=setup.tm,
                                  num_fewshot=2, bootstrap_iters=0, batch_size=4,
                                  device="cpu", log_samples=True)
    return out["samples"]["xelm_cloze_x_qa0_qa1"]


def _direct(setup, sample: dict, **route) -> list[float]:
    tok, scores = setup.experts.tokenizer, []
    for context, continuation in sample["arguments"]:
        ctx, whole = tok.encode(context), tok.encode(context + continuation)
        lp = score_targets(setup.experts, torch.tensor([whole]), **route)
        scores.append(float(lp[0, len(ctx) - len(whole):].sum()))
    return scores


@pytest.mark.parametrize("route,expected", [
    ("target", {"method": "top1", "expert": "e1"}),
    ("source", {"method": "top1", "expert": "e0"}),
    ("ensemble", {"method": "ensemble_posterior"}),
])
def test_each_route_scores_the_prompt_with_its_expert(setup, route, expected):
    samples = _evaluate(setup, f"route={route},source_lang=qa0,lang=qa1")
    assert len(samples) == setup.summary["n_examples"]["qa1"]
    for sample in samples:
        context = sample["arguments"][0][0]
        demos, item = context.rsplit("\n\n", 1)
        assert _words(demos) and _words(demos) <= set(WORDS["qa0"])  # demonstrations: source
        assert _words(item) <= set(WORDS["qa1"])                       # test item: target
        got = [resp[0] for resp in sample["filtered_resps"]]
        assert got == pytest.approx(_direct(setup, sample, **expected), abs=1e-4)
    other = {"method": "top1", "expert": "e0" if expected.get("expert") == "e1" else "e1"}
    assert [r[0] for r in samples[0]["filtered_resps"]] != \
        pytest.approx(_direct(setup, samples[0], **other), abs=1e-4)


def test_route_arguments():
    assert resolve_route("source", None, "de", "en", None) == ("top1", "en")
    assert resolve_route("target", "top1", "de", "en", None) == ("top1", "de")
    assert resolve_route("ensemble", None, "de", "en", None) == ("ensemble_posterior", "de")
    assert resolve_route(None, None, None, None, None) == ("ensemble_posterior", None)
    for args, message in [(("source", None, "de", None, None), "source_lang="),
                          (("target", None, None, "en", None), "lang=<the test item"),
                          (("sideways", None, "de", "en", None), "choose from target"),
                          (("source", "ensemble", "de", "en", None), "contradicts"),
                          (("ensemble", "top1", "de", "en", None), "needs an ensemble method"),
                          (("target", None, "de", "en", "e0"), "give one of them"),
                          ((None, None, "de", "en", None), "only chooses the expert")]:
        with pytest.raises(ValueError, match=message):
            resolve_route(*args)


def test_model_info_records_the_prompt(setup):
    lm = XelmLM(run=str(setup.run), expert_set=setup.experts, route="source",
                source_lang="qa0", lang="qa1")
    info = lm.get_model_info()
    assert info["xelm_method"] == "top1" and info["xelm_lang"] == "qa0"
    assert info["xelm_route"] == "source" and info["xelm_test_lang"] == "qa1"
    with pytest.raises(ValueError, match="route=source needs source_lang"):
        XelmLM(run=str(setup.run), expert_set=setup.experts, route="source", lang="qa1")


def test_hub_task_families_get_source_language_demonstrations(setup, tmp_path):
    """write_hub_crosslingual_tasks on lm-eval's own xnli/xstorycloze YAMLs (written, not
    loaded: that needs the hub), and end to end on local stand-ins of the same layout."""
    from lm_eval.tasks import TaskManager

    from xelm.evaluate.crosslingual import write_hub_crosslingual_tasks

    hub = tmp_path / "hub"
    hub.mkdir()
    got = write_hub_crosslingual_tasks(hub, "xnli", "en", ["en", "de", "sw"])
    assert got == {"group": "xnli_x_en", "tasks": {"de": "xnli_x_en_de", "sw": "xnli_x_en_sw"}}
    config = yaml.safe_load((hub / "xnli_x_en_de.yaml").read_text().replace("!function", ""))
    assert config["include"].endswith("xnli/xnli_de.yaml")
    assert config["dataset_kwargs"]["source"] == {"path": "facebook/xnli", "name": "en",
                                                  "data_files": None, "split": "train"}
    assert config["dataset_kwargs"]["target"]["split"] == "validation"
    with pytest.raises(ValueError, match="no xstorycloze task for 'xx'"):
        write_hub_crosslingual_tasks(hub, "xstorycloze", "en", ["xx"])

    templates, out = tmp_path / "templates", tmp_path / "out"
    templates.mkdir()
    out.mkdir()
    data = setup.root / "tasks" / "data"
    for lang, train, held in (("qa0", "qa0.fewshot", "qa0.test"), ("qa1", "qa1.fewshot",
                                                                     "qa1.test")):
        (templates / f"default_{lang}.yaml").write_text(yaml.safe_dump({
            "task": f"xstorycloze_{lang}", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"train": str(data / f"{train}.jsonl"),
                                              "eval": str(data / f"{held}.jsonl")}},
            "output_type": "multiple_choice", "training_split": "train",
            "validation_split": "eval", "doc_to_text": "{{context}}",
            "doc_to_target": "label", "doc_to_choice": "{{choices}}",
            "metric_list": [{"metric": "acc"}]}))
    write_hub_crosslingual_tasks(out, "xstorycloze", "qa0", ["qa1"], templates=templates)
    import lm_eval

    res = lm_eval.simple_evaluate(
        model="xelm", model_args=f"run={setup.run},route=source,source_lang=qa0,lang=qa1",
        tasks=["xstorycloze_x_qa0_qa1"], num_fewshot=2, bootstrap_iters=0, batch_size=4,
        task_manager=TaskManager(include_path=str(out), include_defaults=False),
        device="cpu", log_samples=True)
    samples = res["samples"]["xstorycloze_x_qa0_qa1"]
    assert len(samples) == setup.summary["n_examples"]["qa1"]
    for sample in samples:
        demos, item = sample["arguments"][0][0].rsplit("\n\n", 1)
        assert _words(demos) and _words(demos) <= set(WORDS["qa0"])
        assert _words(item) <= set(WORDS["qa1"])
        got = [resp[0] for resp in sample["filtered_resps"]]
        assert got == pytest.approx(_direct(setup, sample, method="top1", expert="e0"),
                                    abs=1e-4)
