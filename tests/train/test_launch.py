"""Launchers: job specs, subprocesses, Ray (one local Ray per session), accelerate DDP."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys


import pytest
import yaml

from test_loop import tiny_job, token_shard
from xelm.cli import main
from xelm.io import read_json
from xelm_testing import tiny_args
from xelm.train.launch import JobsFailed, job_from_dict, job_to_dict, run_jobs, write_spec



@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session: starting one costs ~4 s, stopping it ~4 s."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_job_spec_round_trips_through_json_and_pickle(tmp_path):
    job = tiny_job(tmp_path / "e0", tmp_path / "a.bin", init_dir=tmp_path / "seed")
    assert job_from_dict(json.loads(json.dumps(job_to_dict(job)))) == job
    assert pickle.loads(pickle.dumps(job)) == job           # Ray ships jobs by pickle
    assert job_from_dict(read_json(write_spec(job))) == job


def test_failure_message_lists_every_failed_job():
    message = str(JobsFailed({"e1": "FileNotFoundError: x.bin", "e3": "RuntimeError: boom"}))
    assert "2 job(s)" in message and "e1: FileNotFoundError: x.bin" in message
    assert "e3: RuntimeError: boom" in message and "run again" in message
    assert isinstance(JobsFailed({}), ValueError)          # the CLI prints it without a traceback


def test_unknown_launcher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown launcher"):
        run_jobs([tiny_job(tmp_path / "e0", tmp_path / "a.bin")], launcher="pbs")


def test_cli_launcher_options_set_the_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prepare", *tiny_args(out)]) == 0
    assert main(["train", *tiny_args(out), "--launcher", "ray", "--ray-address", "10.0.0.1:6379"]) == 2
    assert "needs 'seed' first" in capsys.readouterr().err
    train = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert train["launcher"] == "ray" and train["ray_address"] == "10.0.0.1:6379"


@pytest.mark.slow
def test_parallel_subprocesses_finish_the_others_when_one_fails(tmp_path):
    shard = token_shard(tmp_path / "a.bin")
    jobs = [tiny_job(tmp_path / "e0", tmp_path / "missing.bin", steps=3),
            tiny_job(tmp_path / "e1", shard, steps=3)]
    ledgers, failed = run_jobs(jobs, parallel=2, threads=1)
    assert list(ledgers) == ["e1"] and list(failed) == ["e0"]
    assert "missing.bin" in failed["e0"]
    assert read_json(tmp_path / "e1" / "train_state.json")["launcher"] == "local-subprocess"


@pytest.mark.slow
def test_ray_reports_a_failing_job_while_the_others_finish(local_ray, tmp_path):
    shard = token_shard(tmp_path / "a.bin")
    jobs = [tiny_job(tmp_path / "e0", shard, steps=3),
            tiny_job(tmp_path / "e1", tmp_path / "missing.bin", steps=3)]
    ledgers, failed = run_jobs(jobs, launcher="ray", resources={"CPU": 1})
    assert list(ledgers) == ["e0"] and "missing.bin" in failed["e1"]
    assert ledgers["e0"]["launcher"] == "ray" and ledgers["e0"]["threads"] == 1


@pytest.mark.slow
def test_xelm_run_on_ray_gives_the_same_results_as_local(local_ray, tmp_path):
    local = tmp_path / "local"
    assert main(["run", *tiny_args(local)]) == 0
    # Same prepared data, seed and allocation; dense and experts trained again on Ray.
    on_ray = tmp_path / "ray"
    shutil.copytree(local, on_ray, ignore=shutil.ignore_patterns(
        "dense", "experts", "eval", "tensorboard", "xelm.json", "results.json"))
    assert main(["run", *tiny_args(on_ray), "--launcher", "ray"]) == 0
    want, got = (json.loads((d / "results.json").read_text()) for d in (local, on_ray))
    assert got["perplexity"] == want["perplexity"]
    assert got["budget"] == want["budget"]
    for job in ("dense", "experts/e0", "experts/e1"):
        assert read_json(on_ray / job / "train_state.json")["launcher"] == "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_one_job_under_accelerate_launch_with_two_cpu_processes(tmp_path):
    """DDP over gloo: the world is 2, so each rank does half the steps of the same budget."""
    job = tiny_job(tmp_path / "e0", token_shard(tmp_path / "a.bin"), steps=12)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "xelm.train.launch", str(write_spec(job)), "--threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = read_json(job.out_dir / "train_state.json")
    assert state["processes"] == 2 and state["steps"] == 6
    assert state["tokens"] == state["budget_tokens"] == 12 * 64     # both ranks counted
    assert (job.out_dir / "model.safetensors").is_file()
    assert not (job.out_dir / "_checkpoints").exists()
