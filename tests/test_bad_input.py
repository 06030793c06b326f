"""Bad input fails early, with a clear message, and leaves nothing half-written."""

from __future__ import annotations

from pathlib import Path


from xelm_testing import cli_fails, dir_prepare_args, tiny_args
from xelm.cli import main




def _nothing_prepared(out: Path) -> None:
    assert not (out / "data" / "prepare.json").exists()
    assert not (out / "data" / "tokens").exists()


def test_missing_corpus_directory(tmp_path, capsys):
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", tmp_path / "nowhere"), "nowhere", "does not exist")
    _nothing_prepared(tmp_path / "run")


def test_empty_language_file(tmp_path, corpus_dir, capsys):
    (corpus_dir / "es.txt").write_text("\n\n", encoding="utf-8")
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", corpus_dir), "es.txt", "empty")
    _nothing_prepared(tmp_path / "run")


def test_non_utf8_file(tmp_path, corpus_dir, capsys):
    (corpus_dir / "es.txt").write_bytes("hola señor\n".encode("latin-1"))
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", corpus_dir), "es.txt", "UTF-8")
    _nothing_prepared(tmp_path / "run")


def test_unknown_language_code_in_config(tmp_path, corpus_dir, capsys):
    cli_fails(capsys, dir_prepare_args(tmp_path / "run", corpus_dir, "corpus.languages=[en, english2]"),
           "english2")
    _nothing_prepared(tmp_path / "run")


def test_unknown_config_key_with_suggestion(tmp_path, capsys):
    cli_fails(capsys, ["run", *tiny_args(tmp_path / "run", "seed.tokes=5")],
           "seed.tokes", "Did you mean 'seed.tokens'")
    assert not (tmp_path / "run").exists()


def test_budget_too_small_for_one_batch(tmp_path, capsys):
    cli_fails(capsys, ["run", *tiny_args(tmp_path / "run", "seed.tokens=10")],
           "smaller than one batch")
    assert not (tmp_path / "run" / "seed" / "model.safetensors").exists()


def test_expert_budget_too_small_for_one_batch(tmp_path, capsys):
    args = tiny_args(tmp_path / "run", "train.tokens=300")
    for stage in ("prepare", "seed", "allocate"):
        assert main([stage, *args]) == 0
    cli_fails(capsys, ["train", *args], "less than one batch", "train.tokens")
    assert not (tmp_path / "run" / "dense" / "model.safetensors").exists()


def test_too_many_typology_experts(tmp_path, capsys):
    args = tiny_args(tmp_path / "run", "allocate.experts=5")
    cli_fails(capsys, ["run", *args], "k=5")
    assert not (tmp_path / "run" / "allocation.json").exists()
