import json

import pytest

from xelm.experts.manifest import (ExpertSet, ManifestError, UnknownLanguageError,
                                   read_manifest, write_manifest)
from xelm.experts.store import sha256_file

from xelm_tiny import make_run, tiny_model, tiny_tokenizer


def test_manifest_round_trip(run_dir):
    m = read_manifest(run_dir)
    assert m["format"] == 1 and m["tokenizer"] == "data/tokenizer"
    assert m["tokenizer_sha256"] == sha256_file(run_dir / "data/tokenizer/tokenizer.json")
    assert [e["name"] for e in m["experts"]] == ["e0", "e1"]
    e0 = m["experts"][0]
    assert e0 | {"files": None} == {"name": "e0", "path": "experts/e0", "languages": ["qa0", "qb0"],
                                    "parent": "seed", "round": 1, "tokens": 1000,
                                    "flops": 1.5e9, "files": None}
    assert e0["files"] == {"model.safetensors":
                           sha256_file(run_dir / "experts/e0/model.safetensors")}
    assert m["language_to_expert"] == {"qa0": "e0", "qb0": "e0", "qa1": "e1", "qb1": "e1"}
    assert m["prior"] is None and m["tfidf"] is None
    assert not list(run_dir.glob(".xelm.json*"))  # no temp file left behind


def test_manifest_keeps_prior_tfidf_and_explicit_map(tmp_path):
    make_run(tmp_path, prior={"e0": 0.25, "e1": 0.75}, tfidf="allocation/tfidf",
             language_to_expert={"qa0": "e1"})
    m = read_manifest(tmp_path)
    assert m["prior"] == {"e0": 0.25, "e1": 0.75}
    assert m["tfidf"] == "allocation/tfidf"
    assert m["language_to_expert"] == {"qa0": "e1"}


@pytest.mark.parametrize("key", ["format", "tokenizer", "experts", "language_to_expert"])
def test_read_manifest_names_missing_key(run_dir, key):
    path = run_dir / "xelm.json"
    data = json.loads(path.read_text())
    del data[key]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=key):
        read_manifest(run_dir)


def test_read_manifest_errors_are_clear(tmp_path, run_dir):
    with pytest.raises(ManifestError, match="no xelm.json"):
        read_manifest(tmp_path / "nowhere")
    path = run_dir / "xelm.json"
    data = json.loads(path.read_text())
    del data["experts"][1]["files"]
    data["language_to_expert"]["qa0"] = "ghost"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="lacks keys \\['files'\\]"):
        read_manifest(run_dir)


def test_write_refuses_ambiguous_languages_and_escaping_paths(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    tiny_model(0).save_pretrained(tmp_path / "a")
    tiny_model(1).save_pretrained(tmp_path / "b")
    specs = [{"name": "a", "path": "a", "languages": ["x"]},
             {"name": "b", "path": "b", "languages": ["x"]}]
    with pytest.raises(ManifestError, match="both 'a' and 'b'"):
        write_manifest(tmp_path, specs, "tok")
    with pytest.raises(ValueError, match="escapes"):
        write_manifest(tmp_path / "a", [{"name": "a", "path": ".", "languages": []}], "../tok")
    with pytest.raises(ValueError, match="escapes"):
        write_manifest(tmp_path / "a", [{"name": "b", "path": "../b", "languages": []}], "../tok")


def test_expert_set_loads_and_routes(run_dir):
    es = ExpertSet.load(run_dir)
    assert es.names == ["e0", "e1"] and set(es.models) == {"e0", "e1"}
    assert es.expert_for_language("qb1") == "e1"
    assert len(es.tokenizer) == 64 and not es.models["e0"].training
    with pytest.raises(UnknownLanguageError, match="known languages: qa0, qa1, qb0, qb1"):
        es.expert_for_language("zz")


def test_tampered_weight_file_refused(run_dir):
    weights = run_dir / "experts/e1/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="experts/e1/model.safetensors"):
        ExpertSet.load(run_dir)
    ExpertSet.load(run_dir, verify=False)  # the user can opt out knowingly


def test_unlisted_weight_file_refused(run_dir):
    (run_dir / "experts/e0/extra.safetensors").write_bytes(b"x")
    with pytest.raises(ManifestError, match="not listed"):
        ExpertSet.load(run_dir)


def test_changed_tokenizer_refused(run_dir):
    tiny_tokenizer(vocab=32).save_pretrained(run_dir / "data/tokenizer")
    with pytest.raises(ManifestError, match="tokenizer"):
        ExpertSet.load(run_dir)


def test_path_escaping_run_dir_refused(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    tiny_model(5).save_pretrained(tmp_path / "outside")
    path = run / "xelm.json"
    data = json.loads(path.read_text())
    data["experts"][0]["path"] = "../outside"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="escapes the run directory"):
        ExpertSet.load(run, verify=False)


def test_vocab_mismatch_refused(tmp_path):
    make_run(tmp_path)
    tiny_model(7, vocab=80).save_pretrained(tmp_path / "experts/e1")  # overwrite e1
    m = read_manifest(tmp_path)
    write_manifest(tmp_path, m["experts"], "data/tokenizer")  # re-hash: only vocab is wrong
    with pytest.raises(ManifestError, match="disagree on vocab_size"):
        ExpertSet.load(tmp_path)
    with pytest.raises(ManifestError, match="tokenizer has 64 tokens"):
        ExpertSet.from_models({"a": tiny_model(0, vocab=48)}, tokenizer=tiny_tokenizer())
    # an embedding table padded past the tokenizer is fine
    assert len(ExpertSet.from_models({"a": tiny_model(0, vocab=80)}, tokenizer=tiny_tokenizer())) == 1


def test_tokenizer_vocab_mismatch_refused(tmp_path):
    make_run(tmp_path, vocab=48)
    tiny_tokenizer(vocab=64).save_pretrained(tmp_path / "data/tokenizer")
    m = read_manifest(tmp_path)
    write_manifest(tmp_path, m["experts"], "data/tokenizer")
    with pytest.raises(ManifestError, match="tokenizer has 64 tokens but .* 48"):
        ExpertSet.load(tmp_path)


def test_weight_file_symlinked_outside_refused(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    weights = run / "experts/e0/model.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    weights.rename(outside)
    weights.symlink_to(outside)
    with pytest.raises(ValueError, match="escapes the run directory"):
        ExpertSet.load(run, verify=False)
