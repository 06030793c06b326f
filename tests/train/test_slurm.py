"""The SLURM launcher, through submitit itself: the sbatch script it would submit, and its
local executor (real subprocesses, pickles, signals and requeueing; no cluster needed)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from test_loop import tiny_job, token_shard, torch_threads
from xelm.config import ConfigError, load
from xelm.io import read_json
from xelm.train.launch import run_jobs
from xelm.train.loop import run_job

submitit = pytest.importorskip("submitit")
from xelm.train import slurm  # noqa: E402  (needs submitit)

LOCAL = {"cluster": "local", "cpus_per_job": 1}


def test_slurm_settings_are_validated():
    cfg = load("configs/tiny.yaml", ["train.launcher=slurm", "train.slurm.partition=gpu"])
    assert cfg.train.launcher == "slurm" and cfg.train.slurm.partition == "gpu"
    assert cfg.train.slurm.time_min == 1440 and cfg.train.slurm.max_requeues == 3
    with pytest.raises(ConfigError, match="partition"):
        load("configs/tiny.yaml", ["train.slurm.partiton=gpu"])


def test_without_sbatch_the_slurm_cluster_is_refused_with_a_way_out(tmp_path):
    if shutil.which("sbatch"):
        pytest.skip("this machine has sbatch")
    with pytest.raises(slurm.SlurmError, match="cluster=local"):
        slurm.make_executor({}, tmp_path)
    assert issubclass(slurm.SlurmError, ValueError)


def test_the_sbatch_script_carries_the_configured_resources(tmp_path, monkeypatch):
    """submitit's own sbatch text (nothing is submitted; ``srun``/``sbatch`` on PATH are
    stand-ins that only let submitit believe it is on a login node)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = {"partition": "gpu", "account": "lm", "qos": "high", "time_min": 90,
                "gpus_per_job": 4, "cpus_per_job": 32, "mem_gb": 200, "constraint": "h100",
                "setup": ["module load cuda"], "extra": {"exclude": "node07"},
                "array_parallelism": 2}
    executor = slurm.make_executor(settings, tmp_path / "logs", name="xelm-round1")
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--account=lm", "--qos=high", "--time=90",
                 "--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8",
                 "--mem=200GB", "--constraint=h100", "--exclude=node07", "--nodes=1",
                 "--job-name=xelm-round1", "--signal=USR2@"):
        assert line in script, line
    assert "module load cuda" in script and "srun" in script


def _task_pid(controller_pid: int) -> int:
    """The task process the local controller started (submitit's one-task job)."""
    children = Path(f"/proc/{controller_pid}/task/{controller_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _wait_for(path: Path, job, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert job.state == "RUNNING", f"the job ended first:\n{job.stderr()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    """SIGUSR2 is submitit's preemption / time-out signal (SLURM sends it ahead of the
    kill): the task is checkpointed (requeued as it is), starts again and resumes from the
    job's own last checkpoint, ending with bitwise the weights of an uninterrupted run."""
    shard = token_shard(tmp_path / "a.bin")
    long = tiny_job(tmp_path / "run" / "e0", shard, steps=300, save_every=10, report_to="none")
    short = tiny_job(tmp_path / "run" / "e1", shard, steps=3, report_to="none")
    submitted = slurm.submit([long, short], LOCAL, threads=1)
    assert (tmp_path / "run" / "slurm").is_dir()                 # beside the jobs
    latest = long.out_dir / "_checkpoints" / "latest.json"
    _wait_for(latest, submitted["e0"])
    os.kill(_task_pid(submitted["e0"]._process.pid), signal.SIGUSR2)
    outcomes = slurm.collect(submitted)
    assert "error" not in outcomes["e0"] and "error" not in outcomes["e1"], outcomes
    ledger = read_json(long.out_dir / "train_state.json")
    assert ledger["launcher"] == "slurm" and ledger["steps"] == 300
    assert ledger["slurm_job_id"] == submitted["e0"].job_id
    log = submitted["e0"].stdout() + submitted["e0"].stderr()
    assert "Requeued job" in log and "resumed" in log and "from step" in log
    whole = tiny_job(tmp_path / "whole" / "e0", shard, steps=300, save_every=10, report_to="none")
    with torch_threads(1):
        run_job(whole, progress=False)
    assert ((long.out_dir / "model.safetensors").read_bytes()
            == (whole.out_dir / "model.safetensors").read_bytes())


@pytest.mark.slow
def test_a_killed_job_is_reported_and_resubmitted_by_running_again(tmp_path):
    """SIGKILL (a lost node) gives no warning: the round reports the job as failed, and
    the same command submits it again; it resumes from its checkpoint."""
    shard = token_shard(tmp_path / "a.bin")
    job = tiny_job(tmp_path / "run" / "e0", shard, steps=300, save_every=10, report_to="none")
    submitted = slurm.submit([job], LOCAL, threads=1)
    latest = job.out_dir / "_checkpoints" / "latest.json"
    _wait_for(latest, submitted["e0"])
    os.kill(_task_pid(submitted["e0"]._process.pid), signal.SIGKILL)
    outcomes = slurm.collect(submitted)
    assert "error" in outcomes["e0"] and "log:" in outcomes["e0"]["error"]
    step = read_json(latest)["step"]
    assert 0 < step < 300
    ledgers, failed = run_jobs([job], launcher="slurm", slurm=LOCAL, threads=1)
    assert not failed and ledgers["e0"]["steps"] == 300
    assert ledgers["e0"]["launcher"] == "slurm"
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "slurm").rglob("*.err"))
    assert f"from step {step}" in logs                         # resumed, not restarted


@pytest.mark.slow
def test_two_processes_per_job_train_with_ddp(tmp_path):
    """``processes_per_job: 2``: submitit starts two tasks, which find each other through
    the torch.distributed variables; the job keeps its budget in half the steps."""
    job = tiny_job(tmp_path / "run" / "e0", token_shard(tmp_path / "a.bin"), steps=12,
                   report_to="none")
    ledgers, failed = run_jobs([job], launcher="slurm", threads=1,
                               slurm={**LOCAL, "processes_per_job": 2, "cpus_per_job": 2})
    assert not failed, failed
    state = read_json(job.out_dir / "train_state.json")
    assert state["processes"] == 2 and state["steps"] == 6 and state["sharding"] == "ddp"
    assert state["tokens"] == state["budget_tokens"] == 12 * 64


@pytest.mark.slow
def test_xelm_train_runs_each_round_as_one_array_job(tmp_path):
    from xelm.cli import main
    from xelm_testing import tiny_args

    out = tmp_path / "run"
    args = tiny_args(out, "train.launcher=slurm", "train.slurm.cluster=local",
                     "train.slurm.cpus_per_job=1")
    for stage in ("prepare", "seed", "allocate", "train"):
        assert main([stage, *args]) == 0, stage
    ids = set()
    for job in ("dense", "experts/e0", "experts/e1"):
        state = read_json(out / job / "train_state.json")
        assert state["launcher"] == "slurm" and state["threads"] == 1
        ids.add(state["slurm_job_id"])
    assert len(ids) == 3 and (out / "slurm").is_dir()          # logs in RUN/slurm
    assert [e["name"] for e in read_json(out / "xelm.json")["experts"]] == ["e0", "e1"]
