"""Training jobs on SLURM through submitit: one array job per round of experts.

Every job of a round becomes one task of one array job (``sbatch --array``), with the
resources of ``train.slurm`` (partition, account, time, GPUs, CPUs, memory, ...). A job
that SLURM preempts or that reaches its time limit gets submitit's signal, is requeued
(at most ``max_requeues`` times) and, when it starts again, resumes from its own last
checkpoint: nothing beyond the steps since that checkpoint is lost. Like every launcher,
:func:`run_slurm` returns each job's ledger or its error once all of them have ended.

``train.slurm.cluster: local`` runs the very same tasks through submitit's local executor
(subprocesses of this machine, the same pickles, signals and requeueing), which is how
the tests exercise this module without a cluster. submitit is optional:
``pip install 'xelm[slurm]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
from pathlib import Path

from xelm.config import SlurmConfig

log = logging.getLogger(__name__)

PATH_FIELDS = ("out_dir", "init_dir", "tensorboard_dir", "tokenizer_dir")


class SlurmError(ValueError):
    """The SLURM launcher cannot submit: there is no sbatch on this machine."""


class TrainTask:
    """One training job as a submitit task; requeued as it is when preempted or timed out
    (the job itself resumes from its checkpoint)."""

    def __init__(self, spec: dict, threads: int):
        self.spec, self.threads = spec, threads

    def __call__(self) -> dict:
        import submitit

        from xelm.train.specs import job_from_dict, run_here

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one process per GPU: the variables torch.distributed reads
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        job = job_from_dict(self.spec)
        log.info("%s: task %s on %s, %d threads", job.name, env.job_id, socket.gethostname(),
                 self.threads)
        return run_here(job, self.threads, progress=False, launcher="slurm",
                         slurm_job_id=env.job_id)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on preemption or time-out: requeue the same task."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _settings(slurm) -> SlurmConfig:
    return slurm if isinstance(slurm, SlurmConfig) else SlurmConfig.model_validate(slurm or {})


def _processes(s: SlurmConfig) -> int:
    return s.processes_per_job or max(1, s.gpus_per_job)


def default_folder(jobs) -> Path:
    """``slurm/`` beside the jobs' folders' common parent (the run directory for a run)."""
    parents = [str(Path(job.out_dir).resolve().parent) for job in jobs]
    return Path(os.path.commonpath(parents)) / "slurm"


def make_executor(slurm, folder: Path, name: str = "xelm"):
    """A submitit executor with the resources of ``train.slurm``."""
    from xelm.extras import require

    require("submitit", "train.launcher: slurm")
    import submitit

    s = _settings(slurm)
    if s.cluster == "slurm" and shutil.which("sbatch") is None:
        raise SlurmError("train.launcher=slurm but this machine has no sbatch: run xelm on a "
                         "SLURM login node, or set train.slurm.cluster=local to run the same "
                         "tasks here through submitit's local executor")
    processes = _processes(s)
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=s.cluster,
                                     slurm_max_num_timeout=s.max_requeues,
                                     local_max_num_timeout=s.max_requeues)
    params = {"name": name, "timeout_min": s.time_min, "tasks_per_node": processes,
              "cpus_per_task": max(1, s.cpus_per_job // processes), "nodes": 1}
    if s.gpus_per_job:
        params["gpus_per_node"] = s.gpus_per_job
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    if s.cluster == "slurm":
        specific = {"partition": s.partition, "account": s.account, "qos": s.qos,
                    "constraint": s.constraint, "array_parallelism": s.array_parallelism,
                    "setup": list(s.setup) or None,
                    "additional_parameters": dict(s.extra) or None}
        params.update({f"slurm_{k}": v for k, v in specific.items() if v is not None})
    executor.update_parameters(**params)
    return executor


def submit(jobs, slurm=None, folder: Path | None = None, threads: int | None = None) -> dict:
    """Submit ``jobs`` as one array job; return ``{name: submitit.Job}`` (see :func:`collect`)."""
    from xelm.train.specs import job_to_dict

    s = _settings(slurm)
    folder = Path(s.folder) if s.folder else (folder or default_folder(jobs))
    executor = make_executor(s, folder, name=f"xelm-{jobs[0].name}" if len(jobs) == 1 else "xelm")
    per_process = threads or max(1, s.cpus_per_job // _processes(s))
    tasks = [TrainTask(job_to_dict(_absolute(job)), per_process) for job in jobs]
    submitted = executor.submit_array(tasks)
    log.info("submitted %d job(s) as SLURM array %s (%s executor; logs in %s)", len(jobs),
             submitted[0].job_id.split("_")[0], s.cluster, folder)
    return {job.name: sj for job, sj in zip(jobs, submitted)}


def collect(submitted: dict) -> dict:
    """Wait for every submitted job; ``{name: ledger}`` or ``{name: {"error": ...}}``."""
    outcomes = {}
    for name, sj in submitted.items():
        try:
            outcomes[name] = sj.results()[0]  # every process returns the same ledger
        except Exception as exc:  # noqa: BLE001 - failed, cancelled, requeued too often
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            outcomes[name] = {"error": f"{type(exc).__name__} in SLURM job {sj.job_id}: {first} "
                                       f"(log: {sj.paths.stderr})"}
        log.info("job %s ended (%s)", name, "failed" if "error" in outcomes[name] else "done")
    return outcomes


def run_slurm(jobs, slurm=None, folder: Path | None = None, threads: int | None = None) -> dict:
    """Run ``jobs`` as one array job and wait for all of them."""
    return collect(submit(jobs, slurm, folder, threads))


def _absolute(job):
    """The job with absolute paths: a SLURM task may start in another directory."""
    changes = {key: Path(getattr(job, key)).resolve() for key in PATH_FIELDS
               if getattr(job, key) is not None}
    changes["shards"] = [(Path(p).resolve(), d) for p, d in job.shards]
    changes["valid_shards"] = [(Path(p).resolve(), d) for p, d in job.valid_shards]
    return dataclasses.replace(job, **changes)
