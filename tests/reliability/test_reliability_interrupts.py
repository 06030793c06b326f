"""A run SIGKILLed at several points resumes to the results of an uninterrupted run, and
every run writes its own ``xelm.log``.

One uninterrupted tiny run (in-process) is the reference. A second run directory is
killed four times, each time by starting ``python -m xelm run`` and SIGKILLing it when
a marker file of the next phase appears: token shards being packed, the seed's first
checkpoint, expert e1's first checkpoint, the first evaluation cache. The killed run
checkpoints every step (``train.save_every`` may change on a run directory and does not
change results), so each training window is wide enough to hit. A phase that finished
before the poll saw its marker is killed at the next thing it does, which is still an
interruption; the test then checks only what holds wherever the kill landed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from xelm_testing import tiny_args

from xelm.cli import main

pytestmark = pytest.mark.slow

KILL_POINTS = [  # (phase, marker file or folder, markers that mean the phase is over)
    ("data packing", "data/tokens", ["data/prepare.json"]),
    ("seed training", "seed/_checkpoints/latest.json", ["seed/train_state.json"]),
    ("expert training", "experts/e1/_checkpoints/latest.json", ["experts/e1/train_state.json"]),
    ("evaluation", "eval/seed.json", ["results.json"]),
]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *tiny_args(out)]) == 0
    return out


def _kill_at(out: Path, args: list[str], marker: str, over: list[str],
             timeout: float = 300) -> str:
    """Start ``xelm run``, SIGKILL it once ``marker`` (or a later marker) exists; return
    which marker it was killed at."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stderr = out.parent / f"{out.name}.stderr"  # a file: a full pipe would stall the run
    with stderr.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "xelm", "run", *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + timeout
    try:
        while True:
            seen = next((m for m in [marker, *over] if (out / m).exists()), None)
            if seen is not None:
                break
            if proc.poll() is not None:
                pytest.fail(f"xelm run exited ({proc.returncode}) before {marker}: "
                            f"{stderr.read_text(errors='replace')[-2000:]}")
            assert time.monotonic() < deadline, f"no {marker} after {timeout} s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return seen


def test_sigkill_at_every_phase_then_rerun_gives_the_same_results(reference_run, tmp_path):
    out = tmp_path / "killed"
    args = tiny_args(out, "train.save_every=1")
    killed_at = []
    for phase, marker, over in KILL_POINTS:
        killed_at.append(_kill_at(out, args, marker, over))
        assert not (out / "results.json").exists(), f"killed during {phase}, yet finished"
        if (out / "data" / "prepare.json").is_file():  # what prepare vouches for is whole
            info = json.loads((out / "data" / "prepare.json").read_text())
            for lang, splits in info["stats"].items():
                for split, stats in splits.items():
                    shard = out / "data" / "tokens" / f"{lang}.{split}.bin"
                    width = 2 if stats["dtype"] == "uint16" else 4
                    assert shard.stat().st_size == stats["tokens"] * width, shard
    assert main(["run", *args]) == 0
    got = json.loads((out / "results.json").read_text())
    want = json.loads((reference_run / "results.json").read_text())
    assert got["perplexity"] == want["perplexity"]
    assert got["bits_per_byte"] == want["bits_per_byte"]
    assert got["budget"] == want["budget"]
    assert not list(out.rglob("_checkpoints"))
    # one log, appended by every attempt; finished work was never redone
    log = (out / "xelm.log").read_text(encoding="utf-8")
    assert log.count("prepared 3 languages") == 1
    if any(m.endswith("_checkpoints/latest.json") for m in killed_at):
        assert "resumed" in log, killed_at  # a job killed mid-training restarted from its checkpoint


def test_the_run_log_records_every_stage(reference_run):
    log = (reference_run / "xelm.log").read_text(encoding="utf-8")
    for message in ("corpus qaa:", "trained byte-level BPE", "prepared 3 languages",
                    "expert e0:", "expert e1:", "training 3 job(s)", "training compute",
                    "loaded 2 experts"):
        assert message in log, message
    assert "killed" not in log  # another run in this process logs to its own file
