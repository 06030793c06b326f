"""``xelm adapt`` on a ``corpus.split: by_key`` run: a new language holds out the run's keys.

The parallel files are shifted against each other the way ../shared/corpus is (KEYS.md):
line N is not the same chapter in every file, so only the keys align the held-out
documents. A new language split on its own (by its text, as adapt did before) would put in
its test split chapters whose translations the experts trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from xelm_testing import tiny_args
from xelm.cli import main
from xelm.config import from_dict
from xelm.data.split import split_documents
from xelm.pipeline.adapt import AdaptError, prepare_new, read_record
from xelm.pipeline.prepare import split_seed
from xelm.rundir import RunDir

CHAPTERS = [f"GEN.{i}" for i in range(1, 31)] + [f"MAT.{i}" for i in range(1, 21)]
SPLITS = ("train", "valid", "test")
WORDS = "light water earth stone river house tree word king land day night".split()


def write_keyed(folder: Path, lang: str, keys: list[str] | None, n: int = 0) -> dict[str, str]:
    """``<lang>.txt`` (+ ``<lang>.keys`` unless ``keys`` is None); returns text -> key."""
    rng = random.Random(lang)
    keys_or_none = keys if keys is not None else [None] * n
    texts = [f"{lang} {key or i} " + " ".join(rng.choices(WORDS, k=40))
             for i, key in enumerate(keys_or_none)]
    (folder / f"{lang}.txt").write_text("".join(t + "\n" for t in texts), "utf-8")
    if keys is not None:
        (folder / f"{lang}.keys").write_text("".join(k + "\n" for k in keys), "utf-8")
    return dict(zip(texts, keys_or_none))


@pytest.fixture
def prepared(tmp_path):
    """A by_key run prepared on en (every chapter in order) and de (two chapters missing,
    GEN.5 on two lines: one line off from en after line 5); ru (lines reversed, two
    chapters no other file has) and th (no keys) are in the corpus for adapt."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text_key = {}
    for lang, keys in (("en", CHAPTERS),
                       ("de", [k for k in CHAPTERS if k not in {"GEN.9", "MAT.3"}]),
                       ("ru", list(reversed(CHAPTERS + ["SUS.1", "BEL.1"])))):
        if lang == "de":
            keys = keys[:5] + ["GEN.5"] + keys[5:]
        text_key[lang] = write_keyed(corpus, lang, keys)
    text_key["th"] = write_keyed(corpus, "th", None, n=40)
    run = tmp_path / "run"
    args = tiny_args(run, "corpus.source=dir", f"corpus.path={corpus}",
                     "corpus.languages=[en, de]", "corpus.split=by_key",
                     "corpus.valid_fraction=0.1", "corpus.test_fraction=0.1")
    assert main(["prepare", *args]) == 0
    rd = RunDir(run)
    cfg = from_dict(yaml.safe_load(rd.config_yaml.read_text(encoding="utf-8")))
    return cfg, rd, corpus, text_key


def split_keys(rd: RunDir, lang: str, text_key: dict[str, str]) -> dict[str, list]:
    """split -> the keys of ``lang``'s documents there (read back from data/text)."""
    return {s: [text_key[lang][line] for line in
                rd.text(lang, s).read_text("utf-8").splitlines()] for s in SPLITS}


def test_a_new_language_holds_out_the_runs_keys(prepared):
    cfg, rd, corpus, text_key = prepared
    held = json.loads(rd.held_out_keys.read_text())
    before = {p: p.read_bytes() for p in (rd.prepare_json, rd.held_out_keys)}
    ru_docs = list(text_key["ru"])
    by_text = split_documents(ru_docs, 0.1, 0.1, split_seed(cfg), "by_key", language="ru")
    alone = {text_key["ru"][ru_docs[i]] for i in by_text["test"]}
    assert alone != set(held["test"])  # split on its own, ru would test other chapters
    record = read_record(rd)
    prepare_new(cfg, rd, ["ru", "th"], corpus, record, "ru+th")

    ru = split_keys(rd, "ru", text_key)
    assert sorted(ru["test"]) == held["test"] and sorted(ru["valid"]) == held["valid"]
    trained = {k for lang in ("en", "de") for k in split_keys(rd, lang, text_key)["train"]}
    assert trained and not trained & {*ru["test"], *ru["valid"]}  # no translation trained on
    assert {"SUS.1", "BEL.1"} <= set(ru["train"])  # chapters the run never saw: train
    th = rd.text("th", "test").read_text("utf-8").splitlines()  # no keys: split by its text
    th_docs = list(text_key["th"])
    assert th == [th_docs[i] for i in split_documents(th_docs, 0.1, 0.1, split_seed(cfg),
                                                      "by_key", language="th")["test"]]
    assert record["languages"]["ru"]["stats"]["test"]["docs"] == len(held["test"])
    assert {p: p.read_bytes() for p in before} == before


def test_a_by_key_run_without_its_held_out_keys_is_refused(prepared):
    cfg, rd, corpus, _ = prepared
    rd.held_out_keys.unlink()
    with pytest.raises(AdaptError, match="held_out_keys.json"):
        prepare_new(cfg, rd, ["ru"], corpus, read_record(rd), "ru")
    assert not rd.text("ru", "test").exists()
