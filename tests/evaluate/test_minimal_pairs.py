"""Minimal-pair task folders and their scores through lm-eval: a model is right on a pair
exactly when its log-probability of the good sentence (after the empty-context prefix
token) beats the bad one's, for lm-eval's hf model and for the xelm model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

pytest.importorskip("lm_eval")

from xelm_tiny import make_run, tiny_model  # noqa: E402

from xelm.data.synthetic import write_corpus  # noqa: E402
from xelm.evaluate.minimal_pairs import build_minimal_pairs, format_pairs_summary  # noqa: E402
from xelm.evaluate.pairs_score import (accuracy_table, best_label_free, correlation,  # noqa: E402
                                       paired_difference, score_pairs, wilson)
from xelm.experts.manifest import ExpertSet, read_manifest, write_manifest  # noqa: E402

SYLLABLES = [c + v for c in "kltmnspdr" for v in "aeiouyw"][:61]  # 61 letter-only words


def _letters_tokenizer():
    """Word-level, 64 ids: <unk>, '.', 61 words of letters, </s> (EOS and BOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, ".": 1, **{w: i + 2 for i, w in enumerate(SYLLABLES)}, "</s>": 63}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>",
                                   bos_token="</s>")


def _doc(rng: random.Random, words: list[str]) -> str:
    return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 9))) + " ."
                    for _ in range(rng.randint(3, 5)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two random experts (qa0 -> e0, qa1 -> e1), random seed and dense models, a letters
    tokenizer, and held-out text of qa0 and qa1 (different halves of the words)."""
    root = tmp_path_factory.mktemp("pairs")
    run = root / "run"
    make_run(run)
    _letters_tokenizer().save_pretrained(run / "data" / "tokenizer")
    write_manifest(run, read_manifest(run)["experts"], "data/tokenizer")
    for name, seed in (("seed", 7), ("dense", 8)):
        tiny_model(seed=seed).save_pretrained(run / name)
    text = run / "data" / "text"
    text.mkdir(parents=True)
    rng = random.Random(0)
    for lang, words in (("qa0", SYLLABLES[:40]), ("qa1", SYLLABLES[21:])):
        docs = [_doc(rng, words) for _ in range(40)]
        (text / f"{lang}.test.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    summary = build_minimal_pairs(run, root / "tasks", n=12, max_tokens=30)
    return SimpleNamespace(run=run, root=root, summary=summary, experts=ExpertSet.load(run))


def _logprob(model, tokenizer, sentence: str) -> float:
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(sentence)]])
    with torch.no_grad():
        logp = model(input_ids=ids).logits.log_softmax(-1)
    return float(logp[0, :-1].gather(-1, ids[0, 1:, None]).sum())


def _direct(model, tokenizer, rows: list[dict]) -> list[int]:
    return [int(_logprob(model, tokenizer, r["good"]) > _logprob(model, tokenizer, r["bad"]))
            for r in rows]


def _rows(setup, lang: str, phenomenon: str) -> list[dict]:
    path = setup.root / "tasks" / "data" / f"{lang}.{phenomenon}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_text_pairs_from_a_run_make_one_task_per_language_and_perturbation(setup):
    s = setup.summary
    assert s["pairs"] == "text" and set(s["tasks"]) == {"qa0", "qa1"}
    # the two languages share the script: foreign words are possible both ways
    assert set(s["tasks"]["qa0"]) == {"swap_adjacent", "foreign_word"}
    assert s["skipped"]["qa0"] == {"affix_swap": "no held-out sentence gave a pair"}
    task = yaml.safe_load((setup.root / "tasks" / "xelm_pairs_qa0_swap_adjacent.yaml")
                          .read_text().replace("!function", ""))
    assert task["output_type"] == "multiple_choice" and task["doc_to_choice"] == "{{[good, bad]}}"
    assert task["doc_to_target"] == 0 and task["doc_to_text"] == "" and \
        task["target_delimiter"] == ""
    assert task["dataset_kwargs"]["data_files"] == {"test": "data/qa0.swap_adjacent.jsonl"}
    groups = yaml.safe_load((setup.root / "tasks" / "_xelm_pairs.yaml").read_text())
    assert len(groups["task"]) == sum(len(v) for v in s["tasks"].values())
    assert "xelm_pairs_qa1" in format_pairs_summary(s)
    for r in _rows(setup, "qa1", "foreign_word"):  # a qa0-only word in qa1's sentence
        assert r["replacement"] in SYLLABLES[:21]


@pytest.mark.parametrize("model", ["dense", "xelm_top1", "xelm_ensemble_posterior"])
def test_lm_eval_accuracy_is_the_direct_comparison(setup, model):
    got = score_pairs(setup.run, setup.summary, model, batch_size=4, expert_set=setup.experts)
    tok = setup.experts.tokenizer
    for lang, per in setup.summary["tasks"].items():
        for phenomenon in per:
            rows = _rows(setup, lang, phenomenon)
            if model == "dense":
                from transformers import AutoModelForCausalLM

                expected = _direct(AutoModelForCausalLM.from_pretrained(setup.run / "dense"),
                                   tok, rows)
            elif model == "xelm_top1":
                expert = setup.experts.models[setup.experts.expert_for_language(lang)]
                expected = _direct(expert, tok, rows)
            else:
                from xelm.infer.mixture import score_targets

                def lp(s):
                    ids = torch.tensor([[tok.bos_token_id, *tok.encode(s)]])
                    return float(score_targets(setup.experts, ids, "ensemble_posterior").sum())
                expected = [int(lp(r["good"]) > lp(r["bad"])) for r in rows]
            assert got[lang][phenomenon] == expected, (model, lang, phenomenon)
    every = [h for per in got.values() for v in per.values() for h in v]
    assert 0 < sum(every) < len(every)  # random models: neither always right nor wrong
    table = accuracy_table(got)
    assert 0 <= table["qa0"]["all"]["acc"] <= 1 and table["qa0"]["all"]["n"] == \
        sum(len(v) for v in got["qa0"].values())


def test_grammar_pairs_from_a_synthetic_corpus(tmp_path):
    write_corpus(tmp_path / "syn", n_languages=4, bytes_per_language=2_000, seed=0)
    s = build_minimal_pairs(tmp_path / "syn", tmp_path / "t", n=20)
    assert s["pairs"] == "grammar" and set(s["tasks"]) == {"qaa", "qab", "qac", "qad"}
    assert all(n == 20 for per in s["n_pairs"].values() for n in per.values())
    assert s["skipped"]  # e.g. agreement in an isolating language, with the reason
    again = build_minimal_pairs(tmp_path / "syn", tmp_path / "t", n=20, languages=["qab"])
    assert set(again["tasks"]) == {"qab"}  # the earlier languages' files are gone
    assert not list((tmp_path / "t").glob("xelm_pairs_qaa_*.yaml"))
    assert not list((tmp_path / "t" / "data").glob("qaa.*.jsonl"))
    with pytest.raises(ValueError, match="not a synthetic corpus"):
        build_minimal_pairs(tmp_path / "t", tmp_path / "u", pairs="grammar")
    with pytest.raises(ValueError, match="choose from auto, grammar, text"):
        build_minimal_pairs(tmp_path / "syn", tmp_path / "u", pairs="both")


def test_a_runs_context_bounds_the_sentences(setup, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(setup.run / "data", run / "data")
    (run / "config.yaml").write_text("model: {context: 8}\n", encoding="utf-8")
    s = build_minimal_pairs(run, tmp_path / "t", n=50)
    assert s["max_tokens"] == 6
    tok = setup.experts.tokenizer
    for lang, per in s["tasks"].items():
        for phenomenon in per:
            for line in (tmp_path / "t" / "data" / f"{lang}.{phenomenon}.jsonl").read_text(
                    encoding="utf-8").splitlines():
                row = json.loads(line)
                assert len(tok.encode(row["good"])) <= 6 and len(tok.encode(row["bad"])) <= 6


def test_intervals_and_correlation():
    lo, hi = wilson(80, 100)
    assert lo == pytest.approx(0.7112, abs=1e-3) and hi == pytest.approx(0.8667, abs=1e-3)
    mean, lo, hi = paired_difference([1, 1, 1, 0], [0, 1, 1, 0])
    assert mean == 0.25 and lo < 0 < hi
    with pytest.raises(ValueError, match="equal length"):
        paired_difference([1], [1, 0])
    c = correlation([1, 2, 3, 4, 5, 6], [2, 4, 5, 4, 6, 7])
    assert 0.8 < c["pearson"] < 1 and c["pearson_ci"][0] < c["pearson"] < c["pearson_ci"][1]
    assert c["spearman_ci"] is not None and c["n"] == 6
    results = {"bits_per_byte": {"xelm_top1": {"a": 1.0}, "xelm_ensemble": {"a": 3.0},
                                 "xelm_ensemble_posterior_context": {"a": 1.2},
                                 "xelm_ensemble_tfidf": {"a": 1.1}}}
    assert best_label_free(results) == ("xelm_ensemble_posterior_context", "ensemble_posterior")
