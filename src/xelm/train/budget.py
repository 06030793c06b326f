"""The compute ledger of training jobs: tokens, FLOPs, wall time, device, where it ran.

``run_job`` writes each job's ledger to ``<job>/train_state.json`` (tokens, FLOPs by
6·N·tokens plus attention, wall seconds, device, processes). The launcher adds where and
how the job ran (launcher, host, torch threads); :func:`format_ledgers` prints a set.
The equal-budget check of dense against the experts is in the report (``budget_line``).
"""

from __future__ import annotations

import os
from pathlib import Path

from xelm.io import read_json, write_json
from xelm.rundir import TRAIN_STATE

# BENCHMARKS.md, "Regime map": no mean gain of x-ELM-8 over dense below this many total
# training tokens (seed + x-BTM phase) per parameter; 16/16 languages from about 41.
REGIME_MIN_TOKENS_PER_PARAMETER = 13


def annotate(out_dir: str | Path, ledger: dict, **extra) -> dict:
    """Add ``extra`` keys to a finished job's ledger (file and dict); existing keys win.

    Only the process that trained the job adds them, once: a job skipped because it was
    already done keeps the record of the run that actually trained it.
    """
    path = Path(out_dir) / TRAIN_STATE
    if not path.is_file() or not _is_main_process():
        return ledger
    stored = read_json(path)
    missing = {k: v for k, v in extra.items() if k not in stored}
    if missing:
        stored.update(missing)
        write_json(path, stored)
    return {**ledger, **{k: stored[k] for k in extra}}


def _is_main_process() -> bool:
    """Rank 0 under ``accelerate launch``/``torchrun``; True in a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def format_ledgers(ledgers: dict[str, dict]) -> str:
    """One line per job: tokens, GFLOPs, wall seconds, device, launcher."""
    lines = [f"{'job':<10} {'tokens':>12} {'GFLOPs':>10} {'wall s':>8}  device / launcher"]
    for name, led in ledgers.items():
        lines.append(f"{name:<10} {led.get('tokens') or 0:>12,} {(led.get('flops') or 0) / 1e9:>10.2f} "
                     f"{led.get('wall_s') or 0:>8.1f}  {led.get('device', '-')} / {led.get('launcher', '-')}")
    return "\n".join(lines)
