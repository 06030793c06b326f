"""corpus.split: by_key — the same document keys held out in every language.

The corpus below is shifted the way ../shared/corpus is (see its KEYS.md): line N is not
the same chapter in every file, so only the keys can align the held-out documents.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xelm.config import CorpusConfig
from xelm.data.readers import CorpusError, read_keyed_corpus, split_documents
from xelm.data.split import held_out_keys, split_by_key

CHAPTERS = [f"GEN.{i}" for i in range(1, 31)] + [f"MAT.{i}" for i in range(1, 21)]
SPLITS = ("train", "valid", "test")


def write_keyed_txt(folder: Path, lang: str, keys: list[str], texts: list[str] | None = None):
    texts = texts or [f"{lang} text of {key} line {i}" for i, key in enumerate(keys)]
    (folder / f"{lang}.txt").write_text("".join(t + "\n" for t in texts), "utf-8")
    (folder / f"{lang}.keys").write_text("".join(k + "\n" for k in keys), "utf-8")


@pytest.fixture
def parallel(tmp_path) -> Path:
    """en: every chapter in order. de: some chapters missing and GEN.5 on two lines (so
    its lines are one off from en after line 5). ru: two extra chapters and the lines in
    reverse order. th: no keys (social-media text, no translation in the corpus)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_keyed_txt(folder, "en", CHAPTERS)
    de = [k for k in CHAPTERS if k not in {"GEN.9", "MAT.3", "MAT.20"}]
    write_keyed_txt(folder, "de", de[:5] + ["GEN.5"] + de[5:])
    write_keyed_txt(folder, "ru", list(reversed(CHAPTERS + ["SUS.1", "BEL.1"])))
    (folder / "th.txt").write_text("".join(f"post number {i}\n" for i in range(40)), "utf-8")
    return folder


def dir_cfg(path: Path, **kwargs) -> CorpusConfig:
    return CorpusConfig(source="dir", path=str(path), split="by_key", **kwargs)


def split_keys(corpus, keys, idx) -> dict[str, dict[str, list[str]]]:
    """language -> split -> the keys of its documents there."""
    return {lang: {s: [keys[lang][i] for i in idx[lang][s]] for s in SPLITS}
            for lang in corpus if keys[lang] is not None}


def by_key(folder: Path, seed: int = 0, valid=0.1, test=0.1, **cfg):
    corpus, keys = read_keyed_corpus(dir_cfg(folder, **cfg))
    idx, record = split_by_key(corpus, keys, valid, test, seed)
    return corpus, keys, idx, record


# --------------------------------------------------------------------------- alignment

def test_same_keys_held_out_in_every_language(parallel):
    corpus, keys, idx, record = by_key(parallel)
    assert keys["th"] is None and record["by_text"] == ["th"]
    union = set(CHAPTERS) | {"SUS.1", "BEL.1"}
    assert record["keys"] == len(union) == 52
    assert len(record["test"]) == len(record["valid"]) == 5  # 10 % of the key union
    parts = split_keys(corpus, keys, idx)
    for split in ("valid", "test"):
        held = set(record[split])
        for lang, own in parts.items():
            assert set(own[split]) == held & set(keys[lang]), (lang, split)
        # en and ru hold every en chapter: their held-out chapters are the same set
        assert set(parts["en"][split]) == set(parts["ru"][split]) - {"SUS.1", "BEL.1"}
    held_anywhere = {k for own in parts.values() for s in ("valid", "test") for k in own[s]}
    for lang, own in parts.items():
        assert not held_anywhere & set(own["train"]), lang
    for lang, docs in corpus.items():  # a partition of every language's documents
        assert sorted(i for s in SPLITS for i in idx[lang][s]) == list(range(len(docs)))
        assert all(idx[lang][s] and idx[lang][s] == sorted(idx[lang][s]) for s in SPLITS)


def test_documents_follow_their_key_not_their_line(parallel):
    corpus, keys, idx, record = by_key(parallel)
    for lang in ("en", "de", "ru"):
        for i in idx[lang]["test"]:
            assert corpus[lang][i].startswith(f"{lang} text of {keys[lang][i]} ")
            assert keys[lang][i] in record["test"]


def test_every_nth_would_leak_where_by_key_does_not(parallel):
    """The reason for by_key: the same line numbers are different chapters in ru."""
    corpus, keys, *_ = by_key(parallel)
    nth = {lang: split_documents(corpus[lang], 0.1, 0.1, 0, "every_nth") for lang in ("en", "ru")}
    en_test = {keys["en"][i] for i in nth["en"]["test"]}
    ru_train = {keys["ru"][i] for i in nth["ru"]["train"]}
    assert en_test & ru_train


def test_duplicate_keys_stay_together(parallel):
    seen_held = False
    for seed in range(40):
        corpus, keys, idx, record = by_key(parallel, seed=seed)
        lines = [i for i, k in enumerate(keys["de"]) if k == "GEN.5"]
        assert len(lines) == 2
        sides = {s for s in SPLITS for i in lines if i in idx["de"][s]}
        assert len(sides) == 1, seed
        seen_held |= sides != {"train"}
    assert seen_held  # some seed held GEN.5 out, and both lines went with it


def test_fractions_are_of_the_key_union():
    keys = {"a": [f"k{i}" for i in range(100)], "b": [f"k{i}" for i in range(50, 200)]}
    corpus = {lang: [f"{lang}{k}" for k in ks] for lang, ks in keys.items()}
    idx, record = split_by_key(corpus, keys, 0.05, 0.1, seed=1)
    assert record["keys"] == 200 and len(record["test"]) == 20 and len(record["valid"]) == 10
    assert not set(record["test"]) & set(record["valid"])


# --------------------------------------------------------------------------- determinism

def test_deterministic_and_independent_of_order(parallel):
    corpus, keys, idx, record = by_key(parallel, seed=3)
    again = by_key(parallel, seed=3)
    assert (idx, record) == (again[2], again[3])
    reordered = dict(reversed(list(corpus.items())))
    shuffled_keys = {lang: keys[lang] for lang in reordered}
    idx2, record2 = split_by_key(reordered, shuffled_keys, 0.1, 0.1, 3)
    assert idx2 == idx and record2["test"] == record["test"]
    assert by_key(parallel, seed=4)[3]["test"] != record["test"]


def test_held_out_keys_do_not_depend_on_key_order():
    keys = [f"K{i}" for i in range(60)]
    first = held_out_keys(keys, 0.1, 0.1, seed=7)
    assert first == held_out_keys(list(reversed(keys)) + keys[:5], 0.1, 0.1, seed=7)
    assert first["test"] == sorted(first["test"]) and len(first["test"]) == 6


def test_language_without_keys_splits_by_text(parallel, caplog):
    with caplog.at_level(logging.WARNING, logger="xelm.data.readers"):
        corpus, keys, idx, _ = by_key(parallel)
    assert any("th.txt has no document keys" in r.message and "th.keys" in r.message
               for r in caplog.records)
    th = idx["th"]
    assert sorted(i for s in SPLITS for i in th[s]) == list(range(40))
    assert len(th["test"]) == len(th["valid"]) == 4
    assert th == split_documents(corpus["th"], 0.1, 0.1, 0, "by_key", language="th")
    (parallel / "th.txt").write_text("".join(f"post number {i}\n" for i in reversed(range(40))),
                                     "utf-8")
    moved = by_key(parallel)
    assert ({moved[0]["th"][i] for i in moved[2]["th"]["test"]}
            == {corpus["th"][i] for i in th["test"]})  # chosen by text, not by line


def test_identical_texts_without_keys_stay_together():
    docs = [f"doc {i % 10}" for i in range(30)]  # every text three times
    split = split_documents(docs, 0.1, 0.1, seed=0, method="by_key", language="xx")
    for s in ("valid", "test"):
        texts = {docs[i] for i in split[s]}
        assert len(split[s]) == 3 * len(texts) == 3


# --------------------------------------------------------------------------- formats

def test_jsonl_key_or_id_and_parquet_key(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    write_keyed_txt(folder, "en", CHAPTERS)
    (folder / "fr.jsonl").write_text("".join(
        json.dumps({"text": f"fr {k}", "key": k, "id": 99}) + "\n\n" for k in CHAPTERS[::2]),
        "utf-8")
    (folder / "es.jsonl").write_text("".join(
        json.dumps({"id": k, "text": f"es {k}"}) + "\n" for k in reversed(CHAPTERS)), "utf-8")
    pq.write_table(pa.table({"text": [f"de {k}" for k in CHAPTERS] + [None],
                             "key": CHAPTERS + ["GEN.1"]}), folder / "de.parquet")
    corpus, keys = read_keyed_corpus(dir_cfg(folder))
    assert keys["fr"] == CHAPTERS[::2]  # 'key' wins over 'id'; blank lines dropped
    assert keys["es"] == list(reversed(CHAPTERS)) and keys["de"] == CHAPTERS
    idx, record = split_by_key(corpus, keys, 0.1, 0.1, 0)
    for lang in corpus:
        assert {keys[lang][i] for i in idx[lang]["test"]} == set(record["test"]) & set(keys[lang])
        assert all(keys[lang][i] in corpus[lang][i].split() for i in idx[lang]["test"])


def test_numeric_ids_are_keys(tmp_path):
    for lang in ("en", "de"):
        (tmp_path / f"{lang}.jsonl").write_text("".join(
            json.dumps({"id": i, "text": f"{lang} {i}"}) + "\n" for i in range(20)), "utf-8")
    corpus, keys = read_keyed_corpus(dir_cfg(tmp_path))
    assert keys["en"] == [str(i) for i in range(20)]
    idx, _ = split_by_key(corpus, keys, 0.1, 0.1, 0)
    assert idx["en"] == idx["de"]


def test_hf_rows_give_keys(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    files = {}
    for lang in ("en", "de"):
        files[lang] = str(tmp_path / f"{lang}.jsonl")
        Path(files[lang]).write_text("".join(json.dumps({"id": k, "text": f"{lang} {k}"}) + "\n"
                                             for k in CHAPTERS[:12]), "utf-8")
    cfg = CorpusConfig(source="hf", languages=["en", "de"], split="by_key",
                       hf={"name": "json", "config": None, "data_files": files})
    corpus, keys = read_keyed_corpus(cfg)
    assert keys == {"en": CHAPTERS[:12], "de": CHAPTERS[:12]}


def test_blank_text_lines_drop_their_keys_and_the_cap_keeps_keys_aligned(tmp_path):
    write_keyed_txt(tmp_path, "en", ["A", "B", "C", "D"], ["aaa", "  ", "ccc", "ddd"])
    corpus, keys = read_keyed_corpus(dir_cfg(tmp_path))
    assert corpus["en"] == ["aaa", "ccc", "ddd"] and keys["en"] == ["A", "C", "D"]
    corpus, keys = read_keyed_corpus(dir_cfg(tmp_path, max_bytes_per_language=6))
    assert corpus["en"] == ["aaa", "ccc"] and keys["en"] == ["A", "C"]


def test_keys_are_not_read_for_other_splits(tmp_path):
    """random/every_nth never open the sidecar: a broken one does not matter to them."""
    from xelm.data.readers import read_corpus

    write_keyed_txt(tmp_path, "en", ["A", "B", "C"])
    (tmp_path / "en.keys").write_text("A\n", "utf-8")
    cfg = CorpusConfig(source="dir", path=str(tmp_path), split="random")
    assert len(read_corpus(cfg)["en"]) == 3


# --------------------------------------------------------------------------- errors

def test_mismatched_line_counts_name_both_files(tmp_path):
    write_keyed_txt(tmp_path, "en", CHAPTERS)
    (tmp_path / "en.keys").write_text("".join(k + "\n" for k in CHAPTERS[:-1]), "utf-8")
    with pytest.raises(ValueError) as caught:
        read_keyed_corpus(dir_cfg(tmp_path))
    message = str(caught.value)
    assert isinstance(caught.value, CorpusError)
    assert f"{tmp_path / 'en.txt'} has 50 lines" in message
    assert f"its keys file {tmp_path / 'en.keys'} has 49" in message


def test_blank_key_for_a_text_line(tmp_path):
    write_keyed_txt(tmp_path, "en", ["A", "", "C"], ["aaa", "bbb", "ccc"])
    with pytest.raises(CorpusError, match=r"en\.keys: line 2 is blank but line 2 of en\.txt"):
        read_keyed_corpus(dir_cfg(tmp_path))


def test_some_records_without_key(tmp_path):
    (tmp_path / "en.jsonl").write_text('{"text": "a", "id": 1}\n{"text": "b"}\n', "utf-8")
    with pytest.raises(CorpusError, match=r"en\.jsonl: 1 of 2 documents have no key \(the "
                                          r"first is document 2\)"):
        read_keyed_corpus(dir_cfg(tmp_path))


def test_language_with_no_held_out_key_is_an_error(tmp_path):
    write_keyed_txt(tmp_path, "en", CHAPTERS)
    record = held_out_keys(CHAPTERS, 0.1, 0.1, 0)
    train_only = [k for k in CHAPTERS if k not in record["test"]]
    write_keyed_txt(tmp_path, "de", train_only)
    corpus, keys = read_keyed_corpus(dir_cfg(tmp_path))
    with pytest.raises(CorpusError, match=r"language de has no test document: none of its "
                                          r"45 distinct keys is among the 5 test keys drawn "
                                          r"from the 50 keys of all languages; raise "
                                          r"corpus\.test_fraction"):
        split_by_key(corpus, keys, 0.1, 0.1, 0)


def test_too_few_keys(tmp_path):
    write_keyed_txt(tmp_path, "en", ["A", "A", "B", "B"])
    corpus, keys = read_keyed_corpus(dir_cfg(tmp_path))
    with pytest.raises(CorpusError, match="at least 3 distinct document keys.*found 2"):
        split_by_key(corpus, keys, 0.1, 0.1, 0)


# --------------------------------------------------------------------------- end to end

def test_prepare_by_key_writes_aligned_splits(tmp_path, parallel):
    """`xelm prepare` with corpus.split=by_key: each language's test file holds exactly its
    documents whose key is a test key, and the keys are recorded in the run directory."""
    from xelm.cli import main
    from xelm_testing import dir_prepare_args

    out = tmp_path / "run"
    assert main(dir_prepare_args(out, parallel, "corpus.split=by_key",
                                 "corpus.valid_fraction=0.1", "corpus.test_fraction=0.1",
                                 "tokenizer.vocab_size=300")) == 0
    record = json.loads((out / "data" / "held_out_keys.json").read_text())
    corpus, keys = read_keyed_corpus(dir_cfg(parallel))
    for lang in ("en", "de", "ru"):
        for split in SPLITS:
            written = (out / "data" / "text" / f"{lang}.{split}.txt").read_text("utf-8")
            held = set(record[split]) if split != "train" else None
            expected = [doc for doc, key in zip(corpus[lang], keys[lang])
                        if (key in held if held is not None else
                            key not in set(record["valid"]) | set(record["test"]))]
            assert written.splitlines() == expected, (lang, split)
    assert record["by_text"] == ["th"]
    prepared = json.loads((out / "data" / "prepare.json").read_text())
    assert prepared["stats"]["th"]["test"]["docs"] == 4
