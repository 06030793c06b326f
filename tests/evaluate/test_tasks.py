"""The offline continuation-choice task builder (``xelm tasks build``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from xelm.cli import main
from xelm.evaluate.tasks import (build_language, build_tasks, context_and_continuation,
                                 read_heldout, split_sentences)

WORDS = {"en": "the a cat dog sat ran saw big small red blue house tree river".split(),
         "de": "der die das katze hund sass lief sah gross klein rot blau haus".split()}


def _docs(lang: str, count: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"{lang}{seed}")
    words = WORDS[lang]
    return [" ".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))).capitalize() + "."
                     for _ in range(rng.randint(3, 6))) + f" Nr {lang}{i}." for i in range(count)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    for lang in WORDS:
        (d / f"{lang}.test.txt").write_text("\n".join(_docs(lang, 30)) + "\n", encoding="utf-8")
    (d / "en.train.txt").write_text("not held out\n", encoding="utf-8")
    return d


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_sentences_in_many_scripts():
    assert split_sentences('One. Two? "Three!" 3.5 stays  four') == \
        ["One.", "Two?", '"Three!"', "3.5 stays  four"]
    assert split_sentences("起初神創造天地。地是空虛混沌．淵面黑暗") == ["起初神創造天地。", "地是空虛混沌．", "淵面黑暗"]
    assert len(split_sentences("परमेश्वर ने सृष्टि की। पृथ्वी सुनसान थी। तब")) == 3
    assert len(split_sentences("Լըբիվի նե նըդուսի։ Դիմը ւե մաը։")) == 2
    assert len(split_sentences("هل أنت بخير؟ نعم")) == 2


def test_context_is_the_start_and_the_continuation_follows():
    doc = "A b. C d. E f. G h. I j."
    assert context_and_continuation(doc, 3) == ("A b. C d. E f.", "G h.")
    assert context_and_continuation("A b. C d.", 3) == ("A b.", "C d.")
    # no sentence ends: the first half of the words, then the next segment
    assert context_and_continuation("a b c d e f g h") == ("a b c d", "e f g h")
    assert context_and_continuation("没有标点的中文文本啊") == ("没有标点的", "中文文本啊")
    assert context_and_continuation("too short") is None


def test_true_continuation_is_among_the_choices_and_distractors_share_the_language(corpus):
    docs = read_heldout(corpus)["en"]
    out = build_language(docs, "en", choices=4, fewshot_docs=6, seed=3)
    de_text = " ".join(read_heldout(corpus)["de"])
    for split in ("test", "fewshot"):
        for ex in out[split]:
            doc = docs[ex["doc_index"]]
            true = ex["choices"][ex["label"]]
            assert doc.startswith(ex["context"])
            assert doc[len(ex["context"]):].lstrip().startswith(true)
            assert len(set(ex["choices"])) == 4
            for i, choice in enumerate(ex["choices"]):
                if i != ex["label"]:
                    assert choice not in doc          # from another document ...
                    assert any(choice in d for d in docs)  # ... of the same language
                    assert choice not in de_text


def test_fewshot_split_is_disjoint_from_test(corpus):
    out = build_language(read_heldout(corpus)["de"], "de", choices=3, fewshot_docs=8, seed=0)
    test_docs = {ex["doc_index"] for ex in out["test"]}
    few_docs = {ex["doc_index"] for ex in out["fewshot"]}
    assert len(few_docs) == 7 and len(test_docs) == 30 - 7 and not test_docs & few_docs
    test_text = {c for ex in out["test"] for c in ex["choices"]} | {ex["context"] for ex in out["test"]}
    few_text = {c for ex in out["fewshot"] for c in ex["choices"]} | {ex["context"] for ex in out["fewshot"]}
    assert not test_text & few_text


def test_build_is_deterministic_and_seeded(corpus, tmp_path):
    a = build_tasks(corpus, tmp_path / "a", choices=4, n=10, seed=5)
    b = build_tasks(corpus, tmp_path / "b", choices=4, n=10, seed=5)
    c = build_tasks(corpus, tmp_path / "c", choices=4, n=10, seed=6)
    assert a["n_examples"] == b["n_examples"] == {"en": 10, "de": 10}
    for lang in ("en", "de"):
        for split in ("test", "fewshot"):
            name = f"data/{lang}.{split}.jsonl"
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert _rows(tmp_path / "a" / f"data/{lang}.test.jsonl") != \
            _rows(tmp_path / "c" / f"data/{lang}.test.jsonl")
    labels = [r["label"] for r in _rows(tmp_path / "a" / "data/en.test.jsonl")]
    assert len(set(labels)) > 1  # the answer is not always in the same place
    assert c["seed"] == 6


def test_task_yamls_are_lm_eval_multiple_choice_over_local_json(corpus, tmp_path):
    summary = build_tasks(corpus, tmp_path / "t", languages=["de"], choices=2)
    task = _task_yaml(tmp_path / "t" / "xelm_cloze_de.yaml")
    assert task["task"] == "xelm_cloze_de" and task["output_type"] == "multiple_choice"
    assert task["dataset_path"] == "json"
    assert task["custom_dataset"] == "xelm_cloze_data.load"
    files = task["dataset_kwargs"]["data_files"]  # relative to the task folder
    assert not Path(files["test"]).is_absolute() and (tmp_path / "t" / files["test"]).is_file()
    assert task["fewshot_split"] == "fewshot" and task["test_split"] == "test"
    assert {m["metric"] for m in task["metric_list"]} == {"acc", "acc_norm"}
    group = yaml.safe_load((tmp_path / "t" / "_xelm_cloze.yaml").read_text())
    assert group["group"] == "xelm_cloze" and group["task"] == ["xelm_cloze_de"]
    assert summary["tasks"] == {"de": "xelm_cloze_de"}
    # a rebuild with other languages leaves no stale task behind
    build_tasks(corpus, tmp_path / "t", languages=["en"], choices=2)
    assert not (tmp_path / "t" / "xelm_cloze_de.yaml").exists()


def _task_yaml(path: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load(path.read_text(), Loader=Loader)


def test_a_moved_task_folder_still_loads_in_lm_eval(corpus, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    build_tasks(corpus, tmp_path / "t", languages=["de"], choices=2, n=5)
    moved = tmp_path / "elsewhere" / "tasks"
    moved.parent.mkdir()
    (tmp_path / "t").rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")  # data paths must not depend on the cwd either
    tm = TaskManager(include_path=str(moved), include_defaults=False)
    task = tm.load(["xelm_cloze_de"])["tasks"]["xelm_cloze_de"]
    docs = list(task.test_docs())
    assert len(docs) == 5 and docs == _rows(moved / "data" / "de.test.jsonl")


def test_too_few_documents_say_which_choices_would_work(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "en.txt").write_text("\n".join(_docs("en", 7)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"--choices 3 would work"):
        build_tasks(d, tmp_path / "out", choices=4)


def test_too_few_documents_skip_a_language_or_fail(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "en.txt").write_text("\n".join(_docs("en", 20)), encoding="utf-8")
    (d / "de.txt").write_text("\n".join(_docs("de", 5)), encoding="utf-8")
    summary = build_tasks(d, tmp_path / "out", choices=4)
    assert list(summary["tasks"]) == ["en"] and "de" in summary["skipped"]
    with pytest.raises(ValueError, match="no language has enough"):
        build_tasks(d, tmp_path / "out2", languages=["de"], choices=4)
    with pytest.raises(ValueError, match="no held-out text for"):
        read_heldout(d, ["fr"])


def test_reads_a_run_directory_and_filters_long_continuations(tmp_path, corpus):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (corpus / "en.train.txt").unlink()
    corpus.rename(run / "data" / "text")
    assert sorted(read_heldout(run)) == ["de", "en"]
    fits_all = build_tasks(run, tmp_path / "x", choices=2, tokenizer=_CharTokenizer(),
                           max_continuation_tokens=10_000)
    short = build_tasks(run, tmp_path / "y", choices=2, tokenizer=_CharTokenizer(),
                        max_continuation_tokens=30)
    assert sum(short["n_examples"].values()) < sum(fits_all["n_examples"].values())
    for row in _rows(tmp_path / "y" / "data" / "en.test.jsonl"):
        assert all(len(" " + c) <= 30 for c in row["choices"])


class _CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return list(text)


def test_cli_tasks_build(corpus, tmp_path, capsys):
    assert main(["tasks", "build", "--corpus", str(corpus), "--out", str(tmp_path / "cli"),
                 "--languages", "en", "--choices", "2", "--n", "5"]) == 0
    out = capsys.readouterr().out
    assert "xelm_cloze_en: 5 examples" in out and "--include_path" in out
    assert len(_rows(tmp_path / "cli" / "data" / "en.test.jsonl")) == 5
