"""No wrong numbers, no lost work: keyed caches, failed first attempts, overwrites, a lock
on the run directory, and one clear line (never a traceback) for every bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from xelm_testing import tiny_args

from xelm.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def finished(finished_tiny_run) -> Path:
    """The session's finished tiny run; tests that change it work on a copy (:func:`_copy`)."""
    return finished_tiny_run


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


# --------------------------------------------------------------------------- stale caches
def test_changed_eval_settings_are_scored_again(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    before = _results(run)
    assert before["eval_settings"]["max_tokens_per_language"] == 1500
    assert main(["eval", *tiny_args(run, "eval.max_tokens_per_language=500")]) == 0
    after = _results(run)
    assert after["eval_settings"]["max_tokens_per_language"] == 500
    assert all(n <= 500 for n in after["eval_tokens"].values())
    assert after["perplexity"]["dense"] != before["perplexity"]["dense"]
    assert not (run / "report.md").exists()  # made with the old settings: gone until `report`
    assert main(["report", *tiny_args(run, "eval.max_tokens_per_language=500")]) == 0
    assert (run / "report.md").is_file()
    # back to the first settings: the same numbers as the first evaluation
    assert main(["eval", *tiny_args(run)]) == 0
    assert _results(run)["perplexity"] == before["perplexity"]


def test_results_never_describe_other_eval_settings_than_config_yaml(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    assert main(["train", *tiny_args(run, "eval.methods=[top1]")]) == 0  # trains nothing
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["methods"] == ["top1"]
    assert not (run / "results.json").exists() and not (run / "report.md").exists()
    assert "eval settings changed" in (run / "xelm.log").read_text()


def test_other_weights_are_scored_again(finished, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    run = _copy(finished, tmp_path / "run")
    before = _results(run)["perplexity"]
    path = run / "dense" / "model.safetensors"
    state = load_file(str(path))
    save_file({k: v + 0.01 * torch.ones_like(v) for k, v in state.items()}, str(path),
              metadata={"format": "pt"})
    assert main(["eval", *tiny_args(run)]) == 0
    after = _results(run)["perplexity"]
    assert after["dense"] != before["dense"]
    assert after["seed"] == before["seed"] and after["xelm_top1"] == before["xelm_top1"]


def test_a_cache_without_its_key_is_not_trusted(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    cache = run / "eval" / "seed.json"
    stored = json.loads(cache.read_text())
    fake = {lang: {**m, "perplexity": 1.0} for lang, m in stored["value"].items()}
    cache.write_text(json.dumps(fake))  # the format of earlier versions: no key
    (run / "results.json").unlink()
    assert main(["eval", *tiny_args(run)]) == 0
    assert all(v > 1.0 for v in _results(run)["perplexity"]["seed"].values())


# --------------------------------------------------------------------------- first attempts
def test_a_failed_first_attempt_does_not_lock_the_folder(tmp_path, capsys):
    out = tmp_path / "e1"
    assert main(["run", *tiny_args(out, "corpus.source=dir", "corpus.path=/nonexistent")]) == 2
    assert (out / "config.yaml").is_file()
    capsys.readouterr()
    assert main(["prepare", *tiny_args(out)]) == 0  # the corrected command simply works
    corpus = yaml.safe_load((out / "config.yaml").read_text())["corpus"]
    assert corpus["source"] == "synthetic" and corpus["path"] is None
    # once a stage has finished it is a run: another config is refused again
    assert main(["prepare", *tiny_args(out, "train.tokens=48000")]) == 2
    assert "different config" in capsys.readouterr().err


def test_a_failed_first_attempt_leaves_no_data_for_the_next(tmp_path):
    out = tmp_path / "run"
    (out / "data" / "synthetic").mkdir(parents=True)  # what an attempt killed mid-prepare left
    (out / "data" / "synthetic" / "languages.json").write_text("{}")
    shutil.copy(Path(__file__).parents[2] / "configs" / "tiny.yaml", out / "config.yaml")
    assert main(["prepare", *tiny_args(out)]) == 0
    assert json.loads((out / "data" / "synthetic" / "languages.json").read_text())


def test_a_stage_on_a_new_out_creates_nothing(tmp_path, capsys):
    for verb in ("seed", "allocate", "train", "eval", "report"):
        assert main([verb, *tiny_args(tmp_path / "new")]) == 2
        assert "needs 'prepare' first" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()


def test_a_run_is_never_written_into_a_folder_of_other_files(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["prepare", *tiny_args(tmp_path / "mine")]) == 2
    assert "not an xelm run directory" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]
    (tmp_path / "mine" / "thesis.tex").unlink()
    (tmp_path / "mine" / "data").mkdir()  # a folder of that name, not a run's prepared data
    assert main(["prepare", *tiny_args(tmp_path / "mine")]) == 2


def test_a_run_can_start_from_another_runs_finished_parts(finished, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for part in ("data", "seed"):  # what the benchmarks share between runs
        shutil.copytree(finished / part, run / part)
    assert main(["prepare", *tiny_args(run)]) == 0  # finished already: nothing to do
    assert (run / "config.yaml").is_file()
    assert main(["seed", *tiny_args(run)]) == 0


# --------------------------------------------------------------------------- overwrites
def test_merge_never_overwrites_what_it_did_not_create(finished, tmp_path, capsys):
    expert = finished / "experts" / "e0" / "model.safetensors"
    sha = expert.read_bytes()
    for target in (finished / "experts" / "e0", finished / "dense", finished):
        for force in ([], ["--force"]):
            assert main(["merge", str(finished), "--out", str(target), *force]) == 2
            assert "never writes there" in capsys.readouterr().err
    assert expert.read_bytes() == sha
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["merge", str(finished), "--out", str(other)]) == 2
    assert "not empty" in capsys.readouterr().err and not (other / "model.safetensors").exists()
    assert main(["merge", str(finished), "--out", str(other), "--force"]) == 0
    assert (other / "notes.txt").read_text() == "mine" and (other / "model.safetensors").exists()
    fresh = tmp_path / "merged"
    assert main(["merge", str(finished), "--out", str(fresh)]) == 0
    assert main(["merge", str(finished), "--out", str(fresh), "--weights", "prior"]) == 0  # its own


def test_tasks_build_and_lm_eval_output_are_guarded(finished, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    args = ["tasks", "build", "--corpus", str(finished / "data" / "synthetic"), "--choices", "2",
            "--n", "3"]
    assert main([*args, "--out", str(other)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "tasks")]) == 0
    assert main([*args, "--out", str(tmp_path / "tasks")]) == 0  # rebuilding its own folder
    assert main(["lm-eval", "--model", "xelm", "--output_path",
                 str(finished / "experts" / "e1"), "--tasks", "x"]) == 2
    assert "never writes there" in capsys.readouterr().err
    assert main(["lm-eval", "--model", "xelm", "--output_path", str(other), "--tasks", "x"]) == 2
    assert "not empty" in capsys.readouterr().err


# --------------------------------------------------------------------------- the lock
HOLD = """
import sys, time
from xelm.rundir import run_lock
with run_lock(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_process_on_the_run_is_refused_until_the_first_dies(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for verb in ("train", "eval", "report"):
            assert main([verb, *tiny_args(run)]) == 2
            err = capsys.readouterr().err
            assert f"PID {holder.pid}" in err and socket.gethostname() in err, err
        assert main(["adapt", str(run), "--languages", "qad", "--corpus", str(run)]) == 2
        assert f"PID {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder must not block the next run
        holder.wait()
    assert main(["report", *tiny_args(run)]) == 0


# --------------------------------------------------------------------------- tracebacks
def _bad_inputs(run: Path, tmp: Path) -> list[list[str]]:
    cfg = [str(Path(__file__).parents[2] / "configs" / "tiny.yaml"), "--out", str(run)]
    binary = tmp / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    return [
        ["generate", str(run), "--prompt", "x", "--method", "top1", "--lang", "en"],  # unknown language
        ["generate", str(tmp / "missing"), "--prompt", "x"],                            # missing run
        ["generate", str(run), "--prompt", "x", "--method", "best"],                    # bad method
        ["merge", str(tmp / "missing"), "--out", str(tmp / "m")],
        ["merge", str(run), "--out", str(tmp / "m2"), "--weights", "e0=lots"],          # wrong type
        ["status", str(tmp / "missing")],
        ["adapt", str(tmp / "missing"), "--languages", "qad", "--corpus", str(tmp)],
        ["adapt", str(run), "--languages", "qaa", "--corpus", str(run / "data" / "synthetic")],
        ["adapt", str(run), "--languages", "klingon", "--corpus", str(tmp)],
        ["tasks", "build", "--corpus", str(tmp / "missing"), "--out", str(tmp / "t")],
        ["tasks", "build", "--corpus", str(run), "--out", str(tmp / "t2"), "--languages", "zz"],
        ["run", str(binary)],                                                           # unreadable file
        ["run", str(tmp)],                                                              # a folder as config
        *[[verb, *cfg, "--set", bad] for verb in ("run", "prepare", "eval", "report")
          for bad in ("nonsense", "train.tokens=lots", "eval.methods=[best]", "model.layers=2.5")],
        ["eval", *cfg, "--set", "eval.methods=top1"],
        ["lm-eval", "--model", "xelm", "--model_args", f"run={tmp / 'missing'}", "--tasks", "x"],
    ]


def test_no_bad_input_of_any_verb_prints_a_traceback(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    for argv in _bad_inputs(run, tmp_path):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (argv, code, err)
        assert "Traceback" not in err and err.strip(), (argv, err)
        assert err.startswith("xelm: error:") or "usage:" in err, (argv, err)


def test_the_traceback_goes_to_the_run_log(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path / "run")
    assert main(["generate", str(run), "--prompt", "x", "--method", "top1", "--lang", "en"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no expert serves language 'en'" in err
    log = (run / "xelm.log").read_text()
    assert "`xelm generate` failed" in log and "Traceback" in log and "UnknownLanguageError" in log
    # a failed stage logs its error too, even the first attempt in a new folder
    assert main(["run", *tiny_args(tmp_path / "e1", "corpus.source=dir",
                                   "corpus.path=/nonexistent")]) == 2
    assert "Traceback" in (tmp_path / "e1" / "xelm.log").read_text()


def test_a_run_written_before_a_new_config_key_resumes(finished, tmp_path):
    run = _copy(finished, tmp_path / "run")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["train"]["dense_lr"], saved["corpus"]["split_seed"]  # keys added later
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["report", *tiny_args(run)]) == 0


TRY = """
import sys
from xelm.rundir import RunLockedError, run_lock
try:
    with run_lock(sys.argv[1], "eval"):
        print("got it")
except RunLockedError:
    print("refused")
"""


def test_force_moves_the_old_run_aside_and_keeps_the_new_one_locked(tmp_path):
    from xelm.cli.commands import open_run_for
    from xelm.cli.parser import build_parser

    out = tmp_path / "run"
    assert main(["prepare", *tiny_args(out)]) == 0
    args = build_parser().parse_args(["prepare", *tiny_args(out, "train.tokens=48000"), "--force"])
    with open_run_for(args, "prepare") as (_, rd):
        assert rd.moved_aside is not None and rd.moved_aside.is_dir()
        probe = subprocess.run([sys.executable, "-c", TRY, str(out)], capture_output=True,
                               text=True, timeout=120)
        assert probe.stdout.strip() == "refused", probe.stderr
