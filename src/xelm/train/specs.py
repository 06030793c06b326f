"""A training job as a file, and running one in this process: what every launcher's
worker does (a local subprocess, a Ray task, a Slurm task), below the launchers."""

from __future__ import annotations

import dataclasses
import socket
import traceback
from pathlib import Path

from xelm.io import write_json
from xelm.train.budget import annotate
from xelm.train.loop import TrainJob, run_job

SPEC = "job.json"


def job_to_dict(job: TrainJob) -> dict:
    """JSON-safe form of ``job`` (paths as strings)."""
    data = dataclasses.asdict(job)
    for key, value in data.items():
        if isinstance(value, Path):
            data[key] = str(value)
    data["shards"] = [[str(path), dtype] for path, dtype in job.shards]
    data["valid_shards"] = [[str(path), dtype] for path, dtype in job.valid_shards]
    return data


def job_from_dict(data: dict) -> TrainJob:
    data = dict(data)
    for key in ("out_dir", "init_dir", "tensorboard_dir", "tokenizer_dir"):
        if data.get(key) is not None:
            data[key] = Path(data[key])
    data["shards"] = [(Path(path), dtype) for path, dtype in data["shards"]]
    data["valid_shards"] = [(Path(path), dtype) for path, dtype in data.get("valid_shards", [])]
    data["betas"] = tuple(data["betas"])
    return TrainJob(**data)


def write_spec(job: TrainJob) -> Path:
    path = Path(job.out_dir) / SPEC
    write_json(path, job_to_dict(job))
    return path


def run_here(job: TrainJob, threads: int | None, progress: bool, launcher: str = "local",
              **extra) -> dict:
    """Train ``job`` in this process; an exception becomes ``{"error": ..., "traceback": ...}``."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        ledger = run_job(job, progress=progress)
    except Exception as exc:  # noqa: BLE001 - one job failing must not stop the others
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return annotate(job.out_dir, ledger, launcher=launcher, host=socket.gethostname(),
                    threads=torch.get_num_threads(), **extra)
