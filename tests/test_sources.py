"""The prepare stage on each corpus source: a directory of files and `datasets` (local files)."""

from __future__ import annotations

import json

import numpy as np

from xelm_testing import tiny_args
from xelm.cli import main
from xelm.data.packing import Shard


def _prepared(out):
    return json.loads((out / "data" / "prepare.json").read_text())


def test_directory_source_with_mixed_formats(tmp_path, corpus_dir):
    rows = [{"text": f"el gato se sento en la alfombra {i}"} for i in range(40)]
    (corpus_dir / "spa.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["prepare", *tiny_args(out, "corpus.source=dir", f"corpus.path={corpus_dir}")]) == 0
    info = _prepared(out)
    assert info["languages"] == ["de", "en", "es", "fr"]  # 'spa' normalised to 'es'
    for lang in info["languages"]:
        stats = info["stats"][lang]
        assert sum(stats[s]["docs"] for s in ("train", "valid", "test")) in (40, 60)
        assert stats["test"]["docs"] >= 1
        shard = Shard(out / "data" / "tokens" / f"{lang}.train.bin", info["dtype"])
        assert len(shard.tokens) == stats["train"]["tokens"]
        assert int(shard.documents[-1, 0]) == len(shard.tokens)


def test_language_selection_and_byte_cap(tmp_path, corpus_dir):
    out = tmp_path / "run"
    args = tiny_args(out, "corpus.source=dir", f"corpus.path={corpus_dir}",
                     "corpus.languages=[fra, en]", "corpus.max_bytes_per_language=1000")
    assert main(["prepare", *args]) == 0
    info = _prepared(out)
    assert info["languages"] == ["fr", "en"]
    assert all(sum(info["stats"][l][s]["bytes"] for s in ("train", "valid", "test")) <= 1000 + 30
               for l in info["languages"])


def test_hf_datasets_source_from_local_jsonl(tmp_path, corpus_dir):
    files = {}
    for lang in ("en", "de"):
        lines = (corpus_dir / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        path = tmp_path / f"{lang}.jsonl"
        path.write_text("\n".join(json.dumps({"text": t}) for t in lines), encoding="utf-8")
        files[lang] = str(path)
    out = tmp_path / "run"
    args = tiny_args(out, "corpus.source=hf", "corpus.languages=[en, de]", "corpus.hf.name=json",
                     "corpus.hf.config=null", f"corpus.hf.data_files={json.dumps(files)}")
    assert main(["prepare", *args]) == 0
    info = _prepared(out)
    assert info["languages"] == ["en", "de"]
    test_text = (out / "data" / "text" / "en.test.txt").read_text(encoding="utf-8").splitlines()
    assert test_text and all(t.startswith("the cat") for t in test_text)


def test_splits_are_deterministic_and_disjoint(tmp_path, corpus_dir):
    texts = {}
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["prepare", *tiny_args(out, "corpus.source=dir", f"corpus.path={corpus_dir}")]) == 0
        texts[run] = {s: (out / "data" / "text" / f"en.{s}.txt").read_text() for s in ("train", "valid", "test")}
    assert texts["a"] == texts["b"]
    sets = [set(texts["a"][s].splitlines()) for s in ("train", "valid", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert np.sum([len(s) for s in sets]) == 60
