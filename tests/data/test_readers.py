"""Tests for xelm.data.readers: per-language files, HF datasets (local files), splits."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xelm.config import CorpusConfig
from xelm.data.readers import (CorpusError, corpus_stats, normalize_language, read_corpus,
                               split_documents)


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path: Path, texts: list, column: str = "text") -> Path:
    pq.write_table(pa.table({column: texts}), path)
    return path


def dir_cfg(path: Path, **kwargs) -> CorpusConfig:
    return CorpusConfig(source="dir", path=str(path), **kwargs)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """en.txt, deu.jsonl, fr.parquet (three languages, three formats, 3-letter code)."""
    (tmp_path / "en.txt").write_text("first doc\n\n  \nsecond doc\r\nthird doc\n", "utf-8")
    write_jsonl(tmp_path / "deu.jsonl", [{"text": "erstes", "id": 1}, {"text": "zwei\nzeilen"},
                                         {"text": None}, {"text": ""}])
    write_parquet(tmp_path / "fr.parquet", ["premier", None, "deuxième", "  "])
    return tmp_path


# --------------------------------------------------------------------------- languages

@pytest.mark.parametrize("code, tag", [("en", "en"), ("eng", "en"), ("EN", "en"), ("deu", "de"),
                                       ("zho", "zh"), ("swa", "sw"), ("ceb", "ceb"),
                                       ("qaa", "qaa"), ("qtz", "qtz"), (" fr ", "fr"),
                                       ("en_US", "en-US")])
def test_normalize_language(code, tag):
    assert normalize_language(code) == tag


@pytest.mark.parametrize("code", ["xx", "zz1", "und", "x-foo", "", "en-"])
def test_normalize_language_rejects_unknown(code):
    with pytest.raises(CorpusError, match=f"unknown language code '{code}'.*ISO 639"):
        normalize_language(code)


@pytest.mark.parametrize("name, tag", [("english", "en"), ("German", "de"), ("englsh", "en")])
def test_normalize_language_suggests_code_for_name(name, tag):
    with pytest.raises(CorpusError, match=f"did you mean '{tag}'"):
        normalize_language(name)


# --------------------------------------------------------------------------- directories

def test_reads_txt_jsonl_parquet(corpus_dir):
    corpus = read_corpus(dir_cfg(corpus_dir))
    assert corpus == {"de": ["erstes", "zwei zeilen"],
                      "en": ["first doc", "second doc", "third doc"],
                      "fr": ["premier", "deuxième"]}


def test_documents_are_single_lines(tmp_path):
    write_jsonl(tmp_path / "en.jsonl", [{"text": "a\r\nb\u2028c \n\n d\x85e"}])
    (tmp_path / "de.txt").write_bytes("\ufeffmit BOM\rnoch\n".encode())
    corpus = read_corpus(dir_cfg(tmp_path))
    assert corpus == {"de": ["mit BOM noch"], "en": ["a b c d e"]}
    assert all(len(d.splitlines()) == 1 for docs in corpus.values() for d in docs)


def test_languages_select_and_order_normalised(corpus_dir):
    corpus = read_corpus(dir_cfg(corpus_dir, languages=["fra", "EN"]))
    assert list(corpus) == ["fr", "en"]


def test_ignores_other_and_hidden_files(corpus_dir):
    (corpus_dir / "README.md").write_text("notes", "utf-8")
    (corpus_dir / ".sw.txt").write_text("hidden", "utf-8")
    (corpus_dir / "sub").mkdir()
    assert list(read_corpus(dir_cfg(corpus_dir))) == ["de", "en", "fr"]


def test_synthetic_reads_given_directory(corpus_dir):
    cfg = CorpusConfig(source="synthetic", languages=["en"])
    assert read_corpus(cfg, synthetic_dir=corpus_dir) == {
        "en": ["first doc", "second doc", "third doc"]}
    with pytest.raises(CorpusError, match="no synthetic_dir was given"):
        read_corpus(cfg)


def test_byte_cap_keeps_whole_documents(tmp_path):
    (tmp_path / "en.txt").write_text("aaaa\nbbbb\nccé\n", "utf-8")
    assert read_corpus(dir_cfg(tmp_path, max_bytes_per_language=9))["en"] == ["aaaa", "bbbb"]
    assert read_corpus(dir_cfg(tmp_path, max_bytes_per_language=13))["en"] == [
        "aaaa", "bbbb", "ccé"]  # 'é' is 2 bytes: 4 + 4 + 4 = 12
    with pytest.raises(CorpusError, match="first document is larger than.*3 bytes"):
        read_corpus(dir_cfg(tmp_path, max_bytes_per_language=3))


def test_byte_cap_stops_reading(tmp_path):
    """Reading stops once the cap is full: the broken tail is never read."""
    (tmp_path / "en.txt").write_bytes(b"aaaa\nbbbb\n\xff\x00 broken\n")
    (tmp_path / "de.jsonl").write_text('{"text": "eins"}\n{"text": "vier"}\nnot json\n', "utf-8")
    corpus = read_corpus(dir_cfg(tmp_path, max_bytes_per_language=8))
    assert corpus == {"de": ["eins", "vier"], "en": ["aaaa", "bbbb"]}


def test_byte_cap_parquet(tmp_path):
    write_parquet(tmp_path / "fr.parquet", ["x" * 10] * 5000)
    assert len(read_corpus(dir_cfg(tmp_path, max_bytes_per_language=105))["fr"]) == 10


# --------------------------------------------------------------------------- errors

def test_missing_directory(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus directory .*nope does not exist"):
        read_corpus(dir_cfg(tmp_path / "nope"))
    (tmp_path / "file").write_text("x", "utf-8")
    with pytest.raises(CorpusError, match=r"file is not a directory"):
        read_corpus(dir_cfg(tmp_path / "file"))


def test_directory_without_corpus_files(tmp_path):
    (tmp_path / "notes.md").write_text("x", "utf-8")
    with pytest.raises(CorpusError, match=r"holds no corpus files .*found: notes\.md"):
        read_corpus(dir_cfg(tmp_path))


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"])
def test_empty_file(tmp_path, content):
    (tmp_path / "en.txt").write_text(content, "utf-8")
    with pytest.raises(CorpusError, match=r"en\.txt is empty"):
        read_corpus(dir_cfg(tmp_path))


def test_empty_parquet_and_jsonl(tmp_path):
    write_jsonl(tmp_path / "en.jsonl", [{"text": ""}, {"text": None}])
    with pytest.raises(CorpusError, match=r"en\.jsonl is empty"):
        read_corpus(dir_cfg(tmp_path))


def test_non_utf8_file_names_byte_and_line(tmp_path):
    (tmp_path / "en.txt").write_bytes(b"ok\ncaf\xe9 au lait\n")
    with pytest.raises(CorpusError, match=r"en\.txt: not valid UTF-8 at byte 6 \(line 2\)"):
        read_corpus(dir_cfg(tmp_path))


def test_binary_file(tmp_path):
    (tmp_path / "en.txt").write_bytes("hé".encode("utf-16"))
    with pytest.raises(CorpusError, match=r"en\.txt: NUL byte at byte \d+ \(line 1\).*binary"):
        read_corpus(dir_cfg(tmp_path))


def test_jsonl_line_not_json(tmp_path):
    (tmp_path / "en.jsonl").write_text('{"text": "a"}\n\n{"text": oops}\n', "utf-8")
    with pytest.raises(CorpusError, match=r"en\.jsonl: line 3 is not valid JSON"):
        read_corpus(dir_cfg(tmp_path))


@pytest.mark.parametrize("record", [{"body": "a"}, ["a"], "a"])
def test_jsonl_line_without_text_field(tmp_path, record):
    write_jsonl(tmp_path / "en.jsonl", [{"text": "a"}, record])
    with pytest.raises(CorpusError, match=r"en\.jsonl: line 2 has no 'text' field"):
        read_corpus(dir_cfg(tmp_path))


def test_jsonl_text_not_string(tmp_path):
    write_jsonl(tmp_path / "en.jsonl", [{"text": 3}])
    with pytest.raises(CorpusError, match=r"en\.jsonl: line 1: 'text' is a int"):
        read_corpus(dir_cfg(tmp_path))


def test_parquet_without_text_column(tmp_path):
    write_parquet(tmp_path / "en.parquet", ["a"], column="body")
    with pytest.raises(CorpusError, match=r"en\.parquet: no 'text' column \(columns: body\)"):
        read_corpus(dir_cfg(tmp_path))


def test_parquet_unreadable(tmp_path):
    (tmp_path / "en.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match=r"en\.parquet: not a readable Parquet file"):
        read_corpus(dir_cfg(tmp_path))


def test_two_files_for_one_language(corpus_dir):
    (corpus_dir / "eng.jsonl").write_text('{"text": "x"}\n', "utf-8")
    with pytest.raises(CorpusError, match=r"two files for language 'en'.*en\.txt and eng\.jsonl"):
        read_corpus(dir_cfg(corpus_dir))


@pytest.mark.parametrize("stem, hint", [("xx", ""), ("english", r" \(did you mean 'en'\?\)")])
def test_unknown_code_in_file_name(tmp_path, stem, hint):
    (tmp_path / f"{stem}.txt").write_text("a\n", "utf-8")
    with pytest.raises(CorpusError, match=rf"{stem}\.txt: unknown language code '{stem}'"
                                          rf"{hint}.*; name each file <code>\.txt"):
        read_corpus(dir_cfg(tmp_path))


def test_unknown_code_in_languages(corpus_dir):
    with pytest.raises(CorpusError, match=r"corpus\.languages: unknown language code 'zz1'"):
        read_corpus(dir_cfg(corpus_dir, languages=["en", "zz1"]))


def test_requested_language_missing(corpus_dir):
    with pytest.raises(CorpusError, match=r"asks for sw but .* available: de, en, fr"):
        read_corpus(dir_cfg(corpus_dir, languages=["en", "swa"]))


def test_language_requested_twice(corpus_dir):
    with pytest.raises(CorpusError, match=r"lists language 'en' twice \('en' and 'eng'\)"):
        read_corpus(dir_cfg(corpus_dir, languages=["en", "eng"]))


# --------------------------------------------------------------------------- Hugging Face

@pytest.fixture
def hf_files(tmp_path, monkeypatch) -> dict[str, str]:
    """Local jsonl per language; the datasets cache under tmp_path."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    files = {}
    for lang, words in {"en": ["one", "two", "three"], "de": ["eins", "zwei\ndrei", ""]}.items():
        files[lang] = str(write_jsonl(tmp_path / f"{lang}.jsonl",
                                      [{"content": w, "n": i} for i, w in enumerate(words)]))
    return files


def hf_cfg(files, languages=("eng", "de"), **hf) -> CorpusConfig:
    hf = {"name": "json", "config": None, "text_field": "content", "data_files": files, **hf}
    return CorpusConfig(source="hf", languages=list(languages), hf=hf)


@pytest.mark.parametrize("streaming", [True, False])
def test_hf_local_json(hf_files, streaming):
    corpus = read_corpus(hf_cfg(hf_files, streaming=streaming))
    assert corpus == {"en": ["one", "two", "three"], "de": ["eins", "zwei drei"]}


@pytest.mark.parametrize("streaming", [True, False])
def test_hf_caps(hf_files, streaming):
    assert read_corpus(hf_cfg(hf_files, streaming=streaming, max_documents=2))["en"] == [
        "one", "two"]
    cfg = hf_cfg(hf_files, streaming=streaming).model_copy(update={"max_bytes_per_language": 6})
    assert read_corpus(cfg)["en"] == ["one", "two"]


def test_hf_call_formats_lang_and_never_trusts_remote_code(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"text": "hallo"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = CorpusConfig(source="hf", languages=["deu"],
                       hf={"name": "org/c4-{lang}", "config": "{lang}", "split": "validation"})
    assert read_corpus(cfg) == {"de": ["hallo"]}
    assert calls == [(("org/c4-deu", "deu"), {"split": "validation", "streaming": True,
                                              "data_files": None})]


def test_hf_needs_languages(hf_files):
    with pytest.raises(CorpusError, match="corpus.languages is not set"):
        read_corpus(hf_cfg(hf_files, languages=()).model_copy(update={"languages": None}))


def test_hf_local_builder_needs_data_files(hf_files):
    with pytest.raises(CorpusError, match="local builder 'json'.*needs corpus.hf.data_files"):
        read_corpus(hf_cfg(None))


def test_hf_data_files_missing_language(hf_files):
    with pytest.raises(CorpusError, match=r"data_files has no entry for language 'fr' "
                                          r"\(it has en, de\)"):
        read_corpus(hf_cfg(hf_files, languages=["en", "fr"]))


def test_hf_missing_field(hf_files):
    with pytest.raises(CorpusError, match=r"'json'.* for 'en': rows have no field 'text' "
                                          r"\(fields: content, n\)"):
        read_corpus(hf_cfg(hf_files, text_field="text"))


def test_hf_load_failure_is_corpus_error(hf_files, tmp_path):
    files = {**hf_files, "en": str(tmp_path / "missing.jsonl")}
    with pytest.raises(CorpusError, match=r"could not load HF dataset 'json'.* for 'en'.*check corpus.hf.data_files"):
        read_corpus(hf_cfg(files, streaming=False))


# --------------------------------------------------------------------------- splits and stats

def check_partition(split, count):
    parts = [split["train"], split["valid"], split["test"]]
    assert all(part == sorted(part) and part for part in parts)
    assert sorted(i for part in parts for i in part) == list(range(count))


@pytest.mark.parametrize("count", [3, 4, 10, 101, 1000])
@pytest.mark.parametrize("method", ["random", "every_nth"])
def test_split_partitions_documents(count, method):
    split = split_documents(["d"] * count, 0.1, 0.1, seed=0, method=method)
    check_partition(split, count)
    if count >= 100:
        assert abs(len(split["test"]) - count / 10) <= 1
        assert abs(len(split["valid"]) - count / 10) <= 1


def test_split_random_is_deterministic():
    docs = [f"d{i}" for i in range(200)]
    first = split_documents(docs, 0.05, 0.1, seed=3)
    assert first == split_documents(docs, 0.05, 0.1, seed=3)
    assert first != split_documents(docs, 0.05, 0.1, seed=4)
    assert len(first["test"]) == 20 and len(first["valid"]) == 10


def test_split_every_nth_aligned_across_languages():
    en = split_documents([f"en{i}" for i in range(100)], 0.05, 0.05, seed=0, method="every_nth")
    de = split_documents([f"de{i}" for i in range(100)], 0.05, 0.05, seed=9, method="every_nth")
    assert en == de
    assert en["test"] == [19, 39, 59, 79, 99]
    assert en["valid"] == [0, 20, 40, 60, 80]
    longer = split_documents(["x"] * 130, 0.05, 0.05, seed=0, method="every_nth")
    assert longer["test"][:5] == en["test"]


def test_split_needs_three_documents():
    with pytest.raises(CorpusError, match="language sw has 2 documents; the splits need at "
                                          "least 3"):
        split_documents(["a", "b"], 0.1, 0.1, seed=0, language="sw")


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown split method 'chunks'"):
        split_documents(["a"] * 5, 0.1, 0.1, seed=0, method="chunks")
    with pytest.raises(ValueError, match="test_fraction must be in"):
        split_documents(["a"] * 5, 0.1, 0.5, seed=0)


def test_corpus_stats():
    assert corpus_stats({"fr": ["é", "ab"], "en": []}) == {
        "fr": {"docs": 2, "bytes": 4}, "en": {"docs": 0, "bytes": 0}}


# --------------------------------------------------------------------------- stray files

@pytest.fixture
def folder_with_notes(tmp_path) -> Path:
    """en.txt and de.txt beside notes: .txt/.jsonl files named by no language code,
    README.md, KEYS.md and .keys sidecars (as in a downloaded Bible corpus)."""
    (tmp_path / "en.txt").write_text("one\ntwo\nthree\n", "utf-8")
    (tmp_path / "de.txt").write_text("eins\nzwei\ndrei\n", "utf-8")
    (tmp_path / "en.keys").write_text("GEN.1\nGEN.2\nGEN.3\n", "utf-8")
    (tmp_path / "SOURCES-part1.txt").write_text("where the text comes from\n", "utf-8")
    (tmp_path / "notes.jsonl").write_text('{"text": "a note"}\n', "utf-8")
    (tmp_path / "README.md").write_text("# corpus\n", "utf-8")
    (tmp_path / "KEYS.md").write_text("# keys\n", "utf-8")
    return tmp_path


def test_named_languages_read_only_their_files(folder_with_notes):
    """`xelm adapt --languages` and corpus.languages read only the named languages' files:
    a notes file named by no language code does not break the read."""
    corpus = read_corpus(dir_cfg(folder_with_notes, languages=["de", "en"]))
    assert corpus == {"de": ["eins", "zwei", "drei"], "en": ["one", "two", "three"]}


def test_named_languages_ignore_a_duplicate_of_another_language(folder_with_notes):
    (folder_with_notes / "deu.jsonl").write_text('{"text": "noch eins"}\n', "utf-8")
    assert list(read_corpus(dir_cfg(folder_with_notes, languages=["en"]))) == ["en"]
    with pytest.raises(CorpusError, match=r"two files for language 'de'.*de\.txt and deu\.jsonl"):
        read_corpus(dir_cfg(folder_with_notes, languages=["de"]))


def test_language_files_lists_languages_beside_notes(folder_with_notes):
    """What `xelm adapt` lists as a corpus folder's languages (it names the ones to add)."""
    from xelm.data.files import language_files

    files = language_files(folder_with_notes)
    assert {lang: path.name for lang, path in files.items()} == {"de": "de.txt", "en": "en.txt"}


def test_unnamed_languages_refuse_every_stray_file_at_once(folder_with_notes):
    with pytest.raises(CorpusError) as caught:
        read_corpus(dir_cfg(folder_with_notes))
    message = str(caught.value)
    assert "2 files are not named by a language code" in message
    assert f"{folder_with_notes / 'SOURCES-part1.txt'}: unknown language code 'SOURCES-part1'" \
        in message
    assert f"{folder_with_notes / 'notes.jsonl'}: unknown language code 'notes'" in message
    assert "set corpus.languages" in message and "move the other files" in message
    assert "README" not in message and "KEYS" not in message and ".keys" not in message


def test_missing_named_language_points_at_misnamed_file(folder_with_notes):
    (folder_with_notes / "polish.txt").write_text("jeden\n", "utf-8")
    with pytest.raises(CorpusError, match=r"asks for pl but .*available: de, en; files not "
                                          r"named by a language code: .*polish\.txt \(did you "
                                          r"mean 'pl'\?\)"):
        read_corpus(dir_cfg(folder_with_notes, languages=["en", "pl"]))
