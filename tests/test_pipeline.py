"""End to end: the whole x-BTM pipeline on a tiny synthetic config, resumed after SIGKILL."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xelm_testing import tiny_args
from xelm.cli import main
from xelm.train.status import job_states

pytestmark = pytest.mark.slow


@pytest.fixture
def finished_run(finished_tiny_run) -> Path:
    return finished_tiny_run


def test_run_writes_the_contract(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    langs = results["languages"]
    assert langs == ["qaa", "qab", "qac"]
    for key in ("seed", "dense", "xelm_top1", "xelm_ensemble", "xelm_ensemble_tfidf"):
        assert set(results["perplexity"][key]) == set(langs)
        assert set(results["bits_per_byte"][key]) == set(langs)
        assert all(v > 1 for v in results["perplexity"][key].values())
    budget = results["budget"]
    assert budget["dense_tokens"] == sum(budget["expert_tokens"].values())
    # training happened: dense improves on the seed everywhere
    assert all(results["perplexity"]["dense"][l] < results["perplexity"]["seed"][l] for l in langs)
    for path in ("config.yaml", "xelm.json", "allocation.json", "report.md", "plots/change.png",
                 "router/router.json", "router/router.npz",
                 "plots/typology.png", "seed/model.safetensors", "dense/model.safetensors",
                 "experts/e0/model.safetensors", "experts/e1/model.safetensors", "xelm.log"):
        assert (finished_run / path).is_file(), path
    assert not list(finished_run.rglob("*.bin")) or all(
        p.parent.name == "tokens" for p in finished_run.rglob("*.bin"))  # no pickled weights
    assert not list(finished_run.rglob("_checkpoints"))
    assert "top1 vs dense" in (finished_run / "report.md").read_text()


def test_status_after_a_finished_run(finished_run, capsys):
    assert main(["status", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert out.count(" done ") == 4 and "partial" not in out
    assert "eval: 5/5 scored; results.json written; report.md written" in out
    assert main(["status", str(finished_run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [j["state"] for j in data["jobs"]] == ["done"] * 4
    assert all(data["eval"]["models"].values()) and set(data["eval"]["models"]) == \
        {"seed", "dense", "xelm_top1", "xelm_ensemble", "xelm_ensemble_tfidf"}


def test_second_run_skips_finished_work(finished_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*.safetensors")}
    start = time.perf_counter()
    assert main(["run", *tiny_args(finished_run)]) == 0
    assert time.perf_counter() - start < 30
    assert before == {p: p.stat().st_mtime_ns for p in finished_run.rglob("*.safetensors")}
    assert "qaa" in capsys.readouterr().out


def test_stage_commands_share_the_run_directory(finished_run, capsys):
    assert main(["allocate", *tiny_args(finished_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("e0:") and "e1:" in out
    assert main(["report", *tiny_args(finished_run)]) == 0
    assert "| language |" in capsys.readouterr().out


def test_stage_without_its_prerequisite_says_what_to_run(tmp_path, capsys):
    assert main(["train", *tiny_args(tmp_path / "fresh")]) == 2
    assert "needs 'prepare' first" in capsys.readouterr().err


def test_allocate_needs_only_the_prepared_data(tmp_path, capsys):
    """Neither typology nor TF-IDF allocation reads the seed: allocate runs right after
    prepare, and train still asks for the seed."""
    out = tmp_path / "run"
    assert main(["prepare", *tiny_args(out)]) == 0
    assert main(["allocate", *tiny_args(out)]) == 0
    assert capsys.readouterr().out.startswith("e0:")
    assert (out / "allocation.json").is_file() and not (out / "seed").exists()
    assert main(["train", *tiny_args(out)]) == 2
    assert ("stage 'train' needs 'seed' first (seed/train_state.json is missing)"
            in capsys.readouterr().err)


def test_each_stage_reads_artifacts_of_earlier_stages_only(tmp_path):
    """pipeline.NEEDS names RunDir artifacts; each is written by a stage before the reader."""
    from xelm.pipeline import NEEDS, STAGES, missing
    from xelm.rundir import RunDir

    rd = RunDir(tmp_path)
    assert missing(rd, "allocate") == [(rd.prepare_json, "prepare")]
    for stage in STAGES:
        assert all(STAGES.index(writer) < STAGES.index(stage) for _, writer in missing(rd, stage))
        assert len(missing(rd, stage)) == len(NEEDS[stage])


def test_changed_config_is_refused(finished_run, capsys):
    assert main(["run", *tiny_args(finished_run, "train.tokens=48000")]) == 2
    err = capsys.readouterr().err
    assert "train.tokens: 24000 -> 48000" in err and "--force" in err


def _kill_when(out: Path, marker: str, args: list[str], timeout: float = 240) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xelm", "run", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not (out / marker).exists():
        assert proc.poll() is None, "the run ended before reaching the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_during_expert_training_resumes_to_the_same_results(finished_run, tmp_path):
    out = tmp_path / "killed"
    args = tiny_args(out)
    _kill_when(out, "experts/e1/_checkpoints/latest.json", args)
    assert not (out / "results.json").exists()
    states = {row["job"]: row for row in job_states(out)}
    assert states["e0"]["state"] == "done" and states["e1"]["state"] == "partial"
    assert 0 < states["e1"]["tokens"] < states["e1"]["budget"]
    assert main(["run", *args]) == 0
    got = json.loads((out / "results.json").read_text())
    want = json.loads((finished_run / "results.json").read_text())
    assert got["perplexity"] == want["perplexity"]
    assert got["budget"] == want["budget"]


def test_tfidf_allocation_trains_cluster_experts(tmp_path):
    out = tmp_path / "tfidf"
    assert main(["run", *tiny_args(out, "allocate.method=tfidf")]) == 0
    alloc = json.loads((out / "allocation.json").read_text())
    assert alloc["method"] == "tfidf" and set(alloc["experts"]) == {"e0", "e1"}
    tokens = [spec["tokens"] for spec in alloc["experts"].values()]
    mean = sum(tokens) / len(tokens)
    assert all(abs(t / mean - 1) <= 0.05 for t in tokens)  # balanced: within 5% of equal
    assert (out / "router").is_dir()
    results = json.loads((out / "results.json").read_text())
    assert set(results["perplexity"]["xelm_top1"]) == {"qaa", "qab", "qac"}


def test_generate_and_merge_commands(finished_run, tmp_path, capsys):
    args = ["generate", str(finished_run), "--prompt", "", "--max-new-tokens", "8", "--sample"]
    assert main(args) == 0 and main(args) == 0
    first, second = capsys.readouterr().out.strip().split("\n")[-2:]
    assert first == second and first  # sampling is seeded: the same text twice
    assert main(["generate", str(finished_run), "--prompt", "x", "--method", "top1"]) == 2
    assert "--lang" in capsys.readouterr().err
    assert main(["merge", str(finished_run), "--out", str(tmp_path / "merged"),
                 "--weights", "e0=1,e1=0"]) == 0
    import torch
    from safetensors.torch import load_file

    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    e0 = load_file(str(finished_run / "experts" / "e0" / "model.safetensors"))
    assert all(torch.equal(merged[k], e0[k]) for k in e0)  # all weight on e0 gives e0


def test_dense_lr_and_split_seed(tmp_path, corpus_dir):
    """`train.dense_lr` tunes the baseline apart from the experts; `corpus.split_seed`
    keeps the held-out split while `random_seed` changes initialisation and data order."""
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 0), (b, 1)):
        args = tiny_args(out, "corpus.source=dir", f"corpus.path={corpus_dir}",
                         "train.dense_lr=0.001", "corpus.split_seed=0", f"random_seed={seed}")
        for stage in ("prepare", "seed", "allocate", "train"):
            assert main([stage, *args]) == 0
    dense = json.loads((a / "dense" / "job.json").read_text())
    expert = json.loads((a / "experts" / "e0" / "job.json").read_text())
    assert dense["lr"] == 0.001 and expert["lr"] == 3e-3
    for split in ("train", "test"):
        assert (a / "data" / "text" / f"en.{split}.txt").read_bytes() == \
            (b / "data" / "text" / f"en.{split}.txt").read_bytes()
    assert (a / "seed" / "model.safetensors").read_bytes() != \
        (b / "seed" / "model.safetensors").read_bytes()


def test_plan_trains_nothing_and_its_budgets_are_what_a_run_records(finished_run, tmp_path,
                                                                    capsys):
    new = tmp_path / "planned"
    assert main(["run", *tiny_args(new), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not new.exists()  # nothing created, nothing trained
    assert plan["stages_to_do"] == ["prepare", "seed", "allocate", "train", "eval", "report"]
    recorded = {p.parent.name: json.loads(p.read_text())
                for p in finished_run.rglob("train_state.json")}
    assert {j["job"] for j in plan["jobs"]} == set(recorded)
    for job in plan["jobs"]:
        state = recorded[job["job"]]
        assert job["tokens"] == state["tokens"] and job["steps"] == state["steps"], job["job"]
        assert job["parameters"] == state["parameters"]
        assert job["flops"] == pytest.approx(state["flops"])
        assert job["estimated_seconds"] > 0 and not job["done"]
    assert plan["regime_warning"] and "regime map" in plan["regime_warning"]
    # on the finished run: every job done, no stage left, the experts' languages known
    assert main(["plan", *tiny_args(finished_run), "--no-measure"]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith(("seed ", "dense ", "e0 ", "e1 "))]
    assert "stages to do: none" in text and len(rows) == 4
    assert all(" done" in row for row in rows) and any("qa" in row for row in rows), rows


def test_the_log_and_tensorboard_have_every_jobs_curves(finished_run):
    log = (finished_run / "xelm.log").read_text()
    for job in ("seed", "dense", "e0", "e1"):
        assert re.search(rf"{job}: step \d+/\d+, loss [\d.]+, lr [\d.e-]+, \d+ tokens/s", log), job
        assert re.search(rf"{job}: step \d+/\d+, validation loss [\d.]+", log), job
        state = json.loads((finished_run / ("experts/" if job[0] == "e" else "") / job /
                            "train_state.json").read_text())
        assert state["valid_loss"] and state["valid_loss"][-1][0] == state["tokens"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for job in ("dense", "e0"):  # one tag scheme, a folder per job: they overlay
        events = EventAccumulator(str(finished_run / "tensorboard" / job)).Reload()
        assert {"train/loss", "train/lr", "train/tokens_per_s", "valid/loss"} <= \
            set(events.Tags()["scalars"]), events.Tags()


def test_redirected_output_has_no_progress_bars(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage in ("prepare", "seed"):
        done = subprocess.run([sys.executable, "-m", "xelm", stage, *tiny_args(out)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "\r" not in done.stderr and "font cache" not in done.stderr
    assert "seed: step" in done.stderr  # the log lines say it instead


def test_the_report_has_its_sections_and_figures(finished_run):
    report = (finished_run / "report.md").read_text()
    for section in ("## Allocation", "| e0 | ", "## Figures", "plots/change.png",
                    "plots/curves.png", "plots/typology.png", "Training tokens per parameter",
                    "**Warning:**", "regime map"):
        assert section in report, section
    for name in ("change", "curves", "typology"):
        assert (finished_run / "plots" / f"{name}.png").stat().st_size > 5000
    assert not (finished_run / "plots" / "perplexity.png").exists()
    assert (finished_run / "experts" / "e0" / "README.md").is_file()  # model cards
