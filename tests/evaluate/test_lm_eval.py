"""The ``xelm`` lm-eval model: accuracies through ``lm_eval.simple_evaluate`` equal direct
scoring with the inference API; rolling log-likelihoods, generation and errors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("lm_eval")


from xelm_tiny import make_run  # noqa: E402

from xelm.evaluate.lm_eval_model import XelmLM, continuation_scores  # noqa: E402
from xelm.evaluate.tasks import build_tasks  # noqa: E402
from xelm.experts.manifest import ExpertSet  # noqa: E402
from xelm.infer.generation import generate  # noqa: E402
from xelm.infer.mixture import score_targets  # noqa: E402


def _doc(rng: random.Random) -> str:
    return " ".join(" ".join(f"w{rng.randrange(1, 64)}" for _ in range(rng.randint(2, 5))) + " ."
                    for _ in range(rng.randint(3, 5)))


def _give_eos(run: Path) -> None:
    """The tiny tokenizer has no EOS, which lm-eval uses as the empty-context prefix."""
    from transformers import AutoTokenizer

    from xelm.experts.manifest import read_manifest, write_manifest

    tok = AutoTokenizer.from_pretrained(run / "data" / "tokenizer")
    tok.eos_token = "w63"
    tok.save_pretrained(run / "data" / "tokenizer")
    write_manifest(run, read_manifest(run)["experts"], "data/tokenizer")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A run with two random experts (qa0 -> e0, qa1 -> e1) and a 3-choice task family."""
    root = tmp_path_factory.mktemp("lmeval")
    run = root / "run"
    make_run(run)
    _give_eos(run)
    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for lang in ("qa0", "qa1"):
        docs = [_doc(rng) for _ in range(14)]
        (corpus / f"{lang}.test.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    summary = build_tasks(corpus, root / "tasks", choices=3, fewshot_docs=4, seed=1)
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(root / "tasks"), include_defaults=False)
    return SimpleNamespace(run=run, tasks=root / "tasks", summary=summary, tm=tm,
                           experts=ExpertSet.load(run))


def _evaluate(setup, model: str, model_args: str, task: str, shots: int) -> dict:
    import lm_eval

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task],
                                   task_manager=setup.tm, num_fewshot=shots,
                                   bootstrap_iters=0, batch_size=4, device="cpu")


def _direct_accuracy(experts, tokenizer, samples: list[dict], method: str, lang) -> float:
    """Pick, for each logged sample, the choice whose continuation tokens have the largest
    summed log-prob under ``score_targets`` (encoding as lm-eval's hf model does)."""
    correct = []
    for sample in samples:
        scores = []
        for context, continuation in sample["arguments"]:
            ctx = tokenizer.encode(context)
            whole = tokenizer.encode(context + continuation)
            n = len(whole) - len(ctx)
            lp = score_targets(experts, torch.tensor([whole]), method, lang=lang)
            scores.append(float(lp[0, -n:].sum()))
        correct.append(max(range(len(scores)), key=scores.__getitem__) == int(sample["target"]))
    return sum(correct) / len(correct)


@pytest.mark.parametrize("method,lang,shots", [("top1", "qa0", 0),
                                               ("ensemble_posterior", None, 2),
                                               ("product_of_experts", None, 0)])
def test_simple_evaluate_matches_direct_scoring(setup, method, lang, shots):
    args = f"run={setup.run},method={method}" + (f",lang={lang}" if lang else "")
    out = _evaluate(setup, "xelm", args, "xelm_cloze_qa0", shots)
    result = out["results"]["xelm_cloze_qa0"]
    samples = out["samples"]["xelm_cloze_qa0"]
    assert len(samples) == setup.summary["n_examples"]["qa0"] > 0
    if shots:  # the few-shot examples really are in the prompt
        assert samples[0]["arguments"][0][0].count(" .") > 6
    expected = _direct_accuracy(setup.experts, setup.experts.tokenizer, samples, method, lang)
    assert result["acc,none"] == pytest.approx(expected)


def test_group_and_hf_model_on_an_expert_folder(setup):
    """lm-eval's own `hf` model on expert e0's folder scores exactly like xelm top1 -> e0."""
    hf = _evaluate(setup, "hf", f"pretrained={setup.run}/experts/e0,"
                   f"tokenizer={setup.run}/data/tokenizer", "xelm_cloze", 0)
    ours = _evaluate(setup, "xelm", f"run={setup.run},method=top1,expert=e0", "xelm_cloze", 0)
    for task in ("xelm_cloze", "xelm_cloze_qa0", "xelm_cloze_qa1"):
        assert hf["results"][task]["acc,none"] == pytest.approx(ours["results"][task]["acc,none"])
    assert ours["results"]["xelm_cloze"]["sample_len"] == sum(setup.summary["n_examples"].values())


def test_continuation_scores_match_score_targets(setup):
    rng = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (3, 9), generator=rng)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0                     # row 1 is 6 tokens long, right-padded
    conts = [2, 3, 1]
    for method in ("top1", "ensemble", "ensemble_posterior", "product_of_experts"):
        got, greedy = continuation_scores(setup.experts, ids, mask, conts, method, lang="qa1")
        for b, c in enumerate(conts):
            n = int(mask[b].sum())
            lp = score_targets(setup.experts, ids[b:b + 1, :n], method, lang="qa1")
            assert float(got[b]) == pytest.approx(float(lp[0, -c:].sum()), abs=1e-4), method
        assert greedy.dtype == torch.bool


def test_is_greedy_is_true_for_the_models_own_argmax(setup):
    ids = torch.tensor([[5, 9, 11]])
    for _ in range(3):  # extend greedily with e0
        logits = setup.experts.models["e0"](input_ids=ids).logits[0, -1]
        ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    _, greedy = continuation_scores(setup.experts, ids, torch.ones_like(ids), [3], "top1",
                                    expert="e0")
    assert bool(greedy[0])


def _requests(*args):
    return [SimpleNamespace(args=a) for a in args]


def test_rolling_and_generation(setup):
    lm = XelmLM(run=str(setup.run), method="ensemble_posterior", batch_size=2)
    text = " ".join(f"w{i}" for i in range(1, 30))
    ids = [lm.prefix_token_id, *lm.tok_encode(text)]
    full, = lm.loglikelihood_rolling(_requests((text,)), disable_tqdm=True)
    expected = float(score_targets(setup.experts, torch.tensor([ids]), "ensemble_posterior").sum())
    assert full == pytest.approx(expected, abs=1e-4)

    short = XelmLM(run=str(setup.run), method="ensemble_posterior", max_length=8)
    windows, = short.loglikelihood_rolling(_requests((text,)), disable_tqdm=True)
    assert windows < 0 and windows != pytest.approx(full)  # truncated contexts differ

    prompt = "w3 w4 w5"
    out = lm.generate_until(_requests((prompt, {"until": ["\n"], "max_gen_toks": 5}),
                                      (prompt, {"until": ["\n"], "max_gen_toks": 5})),
                            disable_tqdm=True)
    direct = generate(setup.experts, torch.tensor([lm.tok_encode(prompt)]),
                      "ensemble_posterior", max_new_tokens=5)
    assert out[0] == out[1] == lm.tok_decode(direct[0, 3:].tolist())
    stop = out[0].split(" ")[1]
    cut, = lm.generate_until(_requests((prompt, {"until": [stop], "max_gen_toks": 5})),
                             disable_tqdm=True)
    assert cut == out[0][:out[0].find(stop)]


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "top1"}, "lang="),
    ({"method": "top1", "foo": 1}, "does not support"),
    ({"method": "nope"}, "inference method"),
    ({"batch_size": "auto"}, "auto"),
    ({}, None),
])
def test_clear_errors(setup, kwargs, message):
    if message is None:
        with pytest.raises(ValueError, match="run=RUN_DIR"):
            XelmLM()
        return
    with pytest.raises(ValueError, match=message):
        XelmLM(run=str(setup.run), **kwargs)
    lm = XelmLM(run=str(setup.run), method="ensemble")
    with pytest.raises(ValueError, match="not supported"):
        lm.generate_until(_requests(("w1", {"until": ["\n"], "top_p": 0.9})))


def test_unknown_language_lists_the_known_ones(setup):
    with pytest.raises(KeyError, match="qa0"):
        XelmLM(run=str(setup.run), method="top1", lang="xx")


def test_tasks_summary_is_json(setup):
    data = json.loads((setup.tasks / "tasks.json").read_text())
    assert data["tasks"] == {"qa0": "xelm_cloze_qa0", "qa1": "xelm_cloze_qa1"}


def test_downstream_adds_results_and_report(setup, tmp_path):
    """`xelm eval --downstream` on a run whose dense model is a copy of expert e0."""
    import shutil

    from xelm.cli.parser import build_parser
    from xelm.config import Config
    from xelm.pipeline.downstream import downstream
    from xelm.rundir import RunDir

    assert build_parser().parse_args(["eval", "c.yaml", "--downstream"]).downstream
    run = tmp_path / "run"
    shutil.copytree(setup.run, run)
    shutil.copytree(run / "experts" / "e0", run / "dense")
    shutil.copytree(setup.tasks.parent / "corpus", run / "data" / "text")
    (run / "results.json").write_text(json.dumps({"languages": ["qa0", "qa1"], "keep": 1}))
    (run / "report.md").write_text("# x-ELM run\n\n## Perplexity\n\ntable\n")
    rd = RunDir(run)
    entry = downstream(Config(), rd, shots=(0, 1), choices=3)
    results = json.loads((run / "results.json").read_text())
    assert results["keep"] == 1 and results["downstream"] == entry
    assert set(entry["accuracy"]) == {"dense", "xelm_top1", "xelm_ensemble_posterior"}
    assert set(entry["accuracy"]["dense"]) == {"0", "1"}
    assert entry["n_examples"] == setup.summary["n_examples"]
    # qa0 is routed to e0, which is also the "dense" model here
    for shots in ("0", "1"):
        assert entry["accuracy"]["dense"][shots]["qa0"] == \
            pytest.approx(entry["accuracy"]["xelm_top1"][shots]["qa0"])
    report = (run / "report.md").read_text()
    assert report.startswith("# x-ELM run") and report.count("## Downstream") == 1
    assert "| qa0 | " in report and "xelm_top1 1-shot" in report
    cached = sorted(p.name for p in (run / "downstream").glob("*.json"))
    assert len(cached) == 6
    before = {p: p.stat().st_mtime_ns for p in (run / "downstream").glob("*.json")}
    assert downstream(Config(), rd, shots=(0, 1), choices=3) == entry  # resumed from the cache
    assert before == {p: p.stat().st_mtime_ns for p in (run / "downstream").glob("*.json")}
    assert (run / "report.md").read_text().count("## Downstream") == 1
    # other weights are rescored: dense becomes a copy of e1, the expert set is unchanged
    shutil.copy(run / "experts" / "e1" / "model.safetensors", run / "dense" / "model.safetensors")
    again = downstream(Config(), rd, shots=(0, 1), choices=3)
    changed = {p.name for p in before if p.stat().st_mtime_ns != before[p]}
    assert changed == {"dense.0shot.json", "dense.1shot.json"}
    for shots in ("0", "1"):
        assert again["accuracy"]["dense"][shots]["qa1"] == \
            pytest.approx(again["accuracy"]["xelm_top1"][shots]["qa1"])
    # so are other eval settings that reach the models (the batch size)
    downstream(Config(eval={"batch_size": 3}), rd, shots=(0,), choices=3)
    assert all(p.stat().st_mtime_ns != before[p] for p in before if ".0shot" in p.name)
