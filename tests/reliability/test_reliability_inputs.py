"""Bad input: a clear message, and nothing half-written left behind.

The cases not already covered elsewhere (tests/test_bad_input.py, tests/test_config.py,
tests/data, tests/allocate, tests/experts); tests/reliability/CATALOGUE.md lists every
case and where it is tested. Everything here fails before any training, except the
save-failure tests, which train a model of a few thousand parameters for 20 steps.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from xelm_testing import cli_fails, dir_prepare_args, tiny_args

from xelm.cli import main

# What a failed stage may leave in its run directory: the resolved config, the log and
# the per-stage timing, the lock file and prepare's resume state (data/.prepare/). Anything else (data/, a *.tmp, a half-written artifact) is a bug.
HARMLESS = {"config.yaml", "xelm.log", "timing.json", ".xelm.lock"}



def _only_harmless_files(out: Path) -> None:
    left = {p.name for p in out.iterdir()}
    if "data" in left:  # prepare's resume state (data/.prepare/) and nothing a stage trusts
        scratch = out / "data" / ".prepare"
        assert all(scratch in p.parents for p in (out / "data").rglob("*") if p.is_file())
        left.discard("data")
    assert left <= HARMLESS, f"left behind in {out}: {sorted(left - HARMLESS)}"
    assert not list(out.rglob("*.tmp"))



# --------------------------------------------------------------------------- corpus files
@pytest.mark.parametrize("name, content, fragments", [
    ("es.txt", b"hola\x00\x00mundo\nadios\n", ("es.txt", "NUL byte", "line 1")),
    ("english.txt", b"one\ntwo\nthree\nfour\n", ("english.txt", "did you mean 'en'")),
    ("es.txt", b"uno\ndos\n", ("language es has 2 documents", "at least 3")),
    ("es.jsonl", b'{"text": "uno"}\n{text: dos}\n', ("es.jsonl", "line 2", "not valid JSON")),
    ("es.parquet", b"PAR1 not really parquet", ("es.parquet", "not a readable Parquet file")),
], ids=["binary", "unknown-code-in-file-name", "too-few-documents", "malformed-jsonl",
        "corrupt-parquet"])
def test_bad_corpus_file_is_named_and_nothing_is_prepared(tmp_path, corpus_dir, capsys,
                                                          name, content, fragments):
    (corpus_dir / name).write_bytes(content)
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", corpus_dir), *fragments)
    _only_harmless_files(tmp_path / "run")


def test_directory_without_corpus_files(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "README.md").write_text("not a corpus\n")
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", corpus), "holds no corpus files", "README.md")
    _only_harmless_files(tmp_path / "run")


def test_requested_language_without_a_file(tmp_path, corpus_dir, capsys):
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", corpus_dir, "corpus.languages=[en, es]"),
           "asks for es", "available: de, en, fr")
    _only_harmless_files(tmp_path / "run")


# --------------------------------------------------------------------------- config values
@pytest.mark.parametrize("override, fragments", [
    ("train.tokens=lots", ("train.tokens", "valid integer")),
    ("model.layers=2.5", ("model.layers", "fractional")),
    ("corpus.languages=en", ("corpus.languages", "a list: write [en]")),
    ("eval.methods=top1", ("eval.methods", "a list: write [top1]")),
    ("train.betas=[0.9]", ("train.betas",)),
    ("train.lr=.inf", ("train.lr", "finite")),
    ("eval.temperature=.nan", ("eval.temperature", "finite")),
    ("seed.tokens=-1", ("seed.tokens", "greater than 0")),
    ("train.tokens=0", ("train.tokens", "greater than 0")),
    ("seed.batch_size=-8", ("seed.batch_size", "greater than 0")),
    ("train.lr=-0.1", ("train.lr", "greater than 0")),
    ("eval.max_tokens_per_language=-5", ("eval.max_tokens_per_language",)),
    ("corpus.max_bytes_per_language=0", ("corpus.max_bytes_per_language",)),
])
def test_wrong_type_or_negative_value_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                            override, fragments):
    cli_fails(capsys, ["run", *tiny_args(tmp_path / "run", override)], "invalid configuration",
           *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("yaml_text, fragments", [
    ("train:\n  tokns: 5\n", ("unknown config key 'train.tokns'", "Did you mean 'train.tokens'")),
    ("alocate:\n  experts: 2\n", ("unknown config key 'alocate'", "Did you mean 'allocate'")),
    ("train: {tokens: 5\n", ("not a valid YAML file",)),
    ("- a list\n- not sections\n", ("mapping of sections",)),
], ids=["nested-key", "section", "yaml-syntax", "not-a-mapping"])
def test_bad_config_file_is_refused_before_anything_is_written(tmp_path, capsys, yaml_text,
                                                               fragments):
    path = tmp_path / "my.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    cli_fails(capsys, ["run", str(path), "--out", str(tmp_path / "run")], *fragments)
    assert not (tmp_path / "run").exists()


def test_non_utf8_config_file(tmp_path, capsys):
    path = tmp_path / "my.yaml"
    path.write_bytes("out_dir: runs/señor\n".encode("latin-1"))
    cli_fails(capsys, ["run", str(path), "--out", str(tmp_path / "run")], "my.yaml",
           "not a valid YAML file")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- allocation
def test_more_tfidf_experts_than_documents(tmp_path, corpus_dir, capsys):
    args = dir_prepare_args(tmp_path / "run", corpus_dir, "allocate.method=tfidf",
                     "allocate.experts=5000", "seed.tokens=256")[1:]  # allocate needs a seed
    assert main(["prepare", *args]) == 0 and main(["seed", *args]) == 0
    cli_fails(capsys, ["allocate", *args], "k=5000", "documents")
    out = tmp_path / "run"
    assert not (out / "allocation.json").exists()
    assert not (out / "router").exists()
    assert not list((out / "data").rglob("cluster*"))
    assert not list(out.rglob("*.tmp"))


# --------------------------------------------------------------------------- run directory
def _open(out: Path, *overrides: str, force: bool = False):
    from xelm import config
    from xelm.rundir import RunDir

    return RunDir.open(config.load(None, list(overrides), out_dir=str(out)), force=force)


def _prepared(out: Path) -> None:
    """Mark ``prepare`` finished: a folder in which no stage has finished is not a run yet."""
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "prepare.json").write_text("{}\n")


def _files(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and p.name not in ("xelm.log", ".xelm.lock")}


def test_run_directory_of_another_config_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    _open(out, "train.tokens=1000000")
    _prepared(out)
    (out / "results.json").write_text('{"precious": true}\n')
    before = _files(out)
    err = cli_fails(capsys, ["prepare", *tiny_args(out)], "was made with a different config",
                 "train.tokens: 1000000 -> 24000", "new out_dir (--out DIR)", "--force")
    assert "Traceback" not in err
    assert _files(out) == before


def test_corpus_path_spelt_another_way_resumes_but_another_folder_is_refused(tmp_path,
                                                                            monkeypatch):
    from xelm.rundir import RunDirError

    (tmp_path / "corpus").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    _open(out, "corpus.source=dir", "corpus.path=corpus")
    _prepared(out)
    _open(out, "corpus.source=dir", f"corpus.path={tmp_path / 'corpus'}")  # same folder
    _open(out, "corpus.source=dir", "corpus.path=./other/../corpus/")
    with pytest.raises(RunDirError, match="corpus.path"):
        _open(out, "corpus.source=dir", "corpus.path=other")
    assert not list(tmp_path.glob("run.old-*"))


def test_force_moves_the_old_run_aside_and_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    _open(out, "train.tokens=1000000")
    _prepared(out)
    (out / "experts" / "e0").mkdir(parents=True)
    (out / "experts" / "e0" / "model.safetensors").write_bytes(b"weights")
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _open(out, "train.tokens=2000000", force=True)
    _prepared(out)
    second = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _open(out, "train.tokens=3000000", force=True)  # twice in the same second: no clash
    asides = sorted(p for p in tmp_path.iterdir() if p.name.startswith("run.old-"))
    assert len(asides) == 2
    by_tokens = {}
    for aside in asides:
        files = {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()}
        by_tokens[files[Path("config.yaml")].count(b"tokens: 1000000")] = files
    assert by_tokens[1].keys() >= first.keys()
    assert all(by_tokens[1][k] == v for k, v in first.items() if k.name != "xelm.log")
    assert all(by_tokens[0][k] == v for k, v in second.items() if k.name != "xelm.log")
    assert b"tokens: 3000000" in (out / "config.yaml").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "xelm.log"]
    log = (out / "xelm.log").read_text()
    assert "moved the previous run to" in log and asides[-1].name in log


# --------------------------------------------------------------------------- failing saves
TINY_LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 32,
              "max_position_embeddings": 16}


def _tiny_job(out_dir: Path, shard: Path, steps: int = 20):
    from xelm.train.loop import TrainJob

    return TrainJob(name="e0", out_dir=out_dir, shards=[(shard, "uint16")], weights=[1.0],
                    tokens=steps * 4 * 16, seq_len=16, batch_size=4, lr=3e-3, seed=7,
                    model_config=TINY_LLAMA, save_every=5, log_every=5)


def _shard(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16).tofile(path)
    return path


def _model_and_optimizer(seed: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 64, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    return model, opt


def _full_disk(monkeypatch, *, when) -> None:
    """``safetensors.torch.save_file`` raises ENOSPC when ``when(filename)`` is true."""
    import safetensors.torch as st

    real = st.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if when(str(filename)):
            Path(filename).write_bytes(b"half a file")  # what a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(st, "save_file", save_file)


def _assert_restores_step_5(job_dir: Path, model) -> None:
    import torch

    from xelm.io import read_json
    from xelm.train import checkpoint as ckpt

    root = job_dir / ckpt.DIRNAME
    assert read_json(root / "latest.json") == {"step": 5, "dir": "step-00000005"}
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-00000005"]
    fresh, opt = _model_and_optimizer(seed=99)
    step, history = ckpt.restore(job_dir, fresh, opt)
    assert (step, history) == (5, {"loss": 1.0})
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("failing", ["model.safetensors", "optimizer.safetensors"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failing):
    import torch

    from xelm.train import checkpoint as ckpt

    model, opt = _model_and_optimizer(seed=0)
    ckpt.save(tmp_path, model, opt, 5, {"loss": 1.0})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _full_disk(monkeypatch, when=lambda name: name.endswith(failing))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the step-10 weights differ from the step-5 ones
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(tmp_path, model, opt, 10, {"loss": 0.5})
    model.load_state_dict(saved)
    _assert_restores_step_5(tmp_path, model)


def test_permission_error_on_the_latest_pointer_keeps_the_previous_checkpoint(tmp_path,
                                                                              monkeypatch):
    from xelm.train import checkpoint as ckpt

    model, opt = _model_and_optimizer(seed=0)
    ckpt.save(tmp_path, model, opt, 5, {"loss": 1.0})
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("latest.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        ckpt.save(tmp_path, model, opt, 10, {"loss": 0.5})
    monkeypatch.setattr(os, "replace", real)
    assert not list(tmp_path.rglob("*.tmp"))
    _assert_restores_step_5(tmp_path, model)


def test_disk_full_mid_training_then_resume_gives_the_same_weights(tmp_path, monkeypatch):
    """The job fails at its second checkpoint; run again, it resumes from the first and
    ends bitwise where an uninterrupted job ends."""
    import torch

    from xelm.io import read_json
    from xelm.train.loop import run_job

    shard = _shard(tmp_path / "a.bin")
    failing = _tiny_job(tmp_path / "failing", shard)
    saves = []

    def second_optimizer_save(name: str) -> bool:
        if name.endswith("optimizer.safetensors"):
            saves.append(name)
        return len(saves) == 2 and name.endswith("optimizer.safetensors")

    _full_disk(monkeypatch, when=second_optimizer_save)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(OSError, match="No space left"):
            run_job(failing, progress=False)
        latest = failing.out_dir / "_checkpoints" / "latest.json"
        assert read_json(latest)["step"] == 5
        assert not (failing.out_dir / "train_state.json").exists()
        monkeypatch.undo()
        resumed = run_job(failing, progress=False)
        straight = run_job(_tiny_job(tmp_path / "straight", shard), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed["tokens"] == straight["tokens"] == 20 * 64
    assert ((tmp_path / "failing" / "model.safetensors").read_bytes()
            == (tmp_path / "straight" / "model.safetensors").read_bytes())


def test_disk_full_while_writing_an_artifact_keeps_the_old_one(tmp_path, monkeypatch):
    from xelm import io

    path = tmp_path / "allocation.json"
    io.write_json(path, {"old": True})

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        io.write_json(path, {"new": True})
    assert io.read_json(path) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["allocation.json"]


# --------------------------------------------------------------------------- the catalogue
def test_catalogue_names_existing_tests():
    """Every ``tests/…py::test_name`` in CATALOGUE.md is a test function in that file."""
    import re

    root = Path(__file__).resolve().parents[2]
    table = (Path(__file__).parent / "CATALOGUE.md").read_text(encoding="utf-8")
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    assert len(refs) >= 60
    missing = [f"{path}::{name}" for path, name in refs
               if not (root / path).is_file()
               or not re.search(rf"^def {name}\(", (root / path).read_text(encoding="utf-8"),
                                re.MULTILINE)]
    assert not missing, missing
    assert len(re.findall(r"^\| \d+ \|", table, re.MULTILINE)) >= 20
