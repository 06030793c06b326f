"""Running stages over a run directory: open it (checked, locked; created for ``run`` and
``prepare``), check that the stages a stage reads have finished, run a stage timed."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from xelm.config import Config
from xelm.pipeline import missing, stage_function
from xelm.rundir import RunDir


class StageOrderError(ValueError):
    """A stage was asked for before the stages it reads; the message says what to run."""


def check_started(cfg: Config, name: str) -> None:
    """Every stage but ``run``/``prepare`` needs a run directory that ``prepare`` made."""
    root = Path(cfg.out_dir)
    if name not in ("run", "prepare") and not RunDir(root).config_yaml.is_file():
        raise StageOrderError(f"no run in {root}: stage '{name}' needs 'prepare' first: run "
                              "`xelm prepare CONFIG` (same --out/--set), or `xelm run CONFIG` "
                              "for everything")


@contextmanager
def open_run(cfg: Config, name: str, force: bool = False):
    """Lock the run directory for ``name`` and open it (creating it for run/prepare);
    yield its :class:`RunDir`. Checked before anything is created."""
    from xelm.extras import check_config
    from xelm.rundir import refuse_foreign, run_lock

    check_started(cfg, name)
    root = Path(cfg.out_dir)
    check_config(cfg)
    refuse_foreign(root)
    if name in ("run", "prepare"):
        root.mkdir(parents=True, exist_ok=True)
    with run_lock(root, name):
        rd = RunDir.open(cfg, force=force)
        if rd.moved_aside is None:
            yield rd
            return
        with run_lock(root, name):  # the held lock moved aside with the old run: lock anew
            yield rd


def require(rd: RunDir, stage: str) -> None:
    """Refuse ``stage`` while an artifact it reads (:data:`xelm.pipeline.NEEDS`) is missing;
    the message names the artifact and the stage that writes it."""
    gaps = missing(rd, stage)
    if gaps:
        path, before = gaps[0]
        raise StageOrderError(f"stage '{stage}' needs '{before}' first ({path.relative_to(rd.root)}"
                              f" is missing): run `xelm {before} CONFIG` (same --out/--set), or "
                              "`xelm run CONFIG` for everything")


def run_stage(name: str, cfg: Config, rd: RunDir):
    """Run one stage, adding its wall time to ``timing.json``; return its result."""
    with rd.timed(name):
        return stage_function(name)(cfg, rd)
