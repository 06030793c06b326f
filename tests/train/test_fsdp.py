"""FSDP through an accelerate config: 2 CPU processes over gloo against one process.

The config is the one docs/scale.md shows (only the process count and precision are
overridden on the command line). Tolerance: the world-2 sharded run and the single process
see exactly the same rows each step (one global batch, sliced per process), so they differ
only by float rounding in the sharded gradient reduction; losses and weights must agree to
1e-4 (measured here: 6 steps, loss 2.4e-7 apart, weights 1.2e-7; 200 steps, weights 6.1e-7).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from test_loop import torch_threads
from test_scale import _validated, pattern_shard
from xelm.io import read_json
from xelm.train.launch import write_spec
from xelm.train.loop import run_job

DOC = Path(__file__).resolve().parents[2] / "docs" / "scale.md"
TOL = 1e-4


def docs_fsdp_config() -> str:
    """The accelerate FSDP config of docs/scale.md (the yaml block after its marker)."""
    text = DOC.read_text()
    found = re.search(r"<!-- fsdp-config.*?-->\s*```yaml\n(.*?)```", text, re.S)
    assert found, "docs/scale.md lost its FSDP config block"
    return found.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, job, wait: bool = True):
    config = tmp_path / "fsdp.yaml"
    config.write_text(docs_fsdp_config())
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", str(_free_port()),
           "-m", "xelm.train.launch", str(write_spec(job)), "--threads", "1"]
    if not wait:  # its own session, so that the launcher and both workers can be killed
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _max_weight_gap(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_gives_the_single_process_loss(tmp_path):
    shard = pattern_shard(tmp_path / "a.bin")
    sharded = _validated(tmp_path, "fsdp", shard, batch_size=4, tokens=6 * 8 * 16, save_every=2,
                         grad_accum_steps=2)      # and each process accumulates 2 x 2 rows
    single = _validated(tmp_path, "single", shard, batch_size=8, tokens=6 * 8 * 16)
    _launch(tmp_path, sharded)
    with torch_threads(1):
        want = run_job(single, progress=False)
    got = read_json(sharded.out_dir / "train_state.json")
    assert got["sharding"] == "fsdp" and got["processes"] == 2
    assert got["steps"] == want["steps"] == 6 and got["tokens"] == want["tokens"]
    assert got["parameters"] == want["parameters"]              # counted unsharded
    assert got["last_loss"] == pytest.approx(want["last_loss"], abs=TOL)
    for (_, a), (_, b) in zip(got["valid_loss"], want["valid_loss"], strict=True):
        assert a == pytest.approx(b, abs=TOL)
    assert _max_weight_gap(sharded.out_dir, single.out_dir) < TOL
    assert read_json(sharded.out_dir / "config.json")["architectures"] == ["LlamaForCausalLM"]
    assert not (sharded.out_dir / "_checkpoints").exists()


@pytest.mark.slow
def test_a_killed_fsdp_job_resumes_from_its_full_state_checkpoint(tmp_path):
    shard = pattern_shard(tmp_path / "a.bin")
    steps = 60  # the resumed part runs 50 steps on 2 gloo processes: minutes on a busy machine
    killed = _validated(tmp_path, "killed", shard, batch_size=4, tokens=steps * 8 * 16,
                        save_every=10, eval_every=None)
    latest = killed.out_dir / "_checkpoints" / "latest.json"
    proc = _launch(tmp_path, killed, wait=False)
    deadline = time.monotonic() + 240
    try:
        while not latest.exists():
            assert proc.poll() is None, "the job ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    step = read_json(latest)["step"]
    assert 0 < step < steps and read_json(latest.parent / read_json(latest)["dir"] /
                                          "state.json")["layout"] == "full"
    _launch(tmp_path, killed)                                   # the same command again
    resumed = read_json(killed.out_dir / "train_state.json")
    assert resumed["steps"] == steps and resumed["sharding"] == "fsdp"
    single = _validated(tmp_path, "single", shard, batch_size=8, tokens=steps * 8 * 16,
                        eval_every=None)
    with torch_threads(1):
        want = run_job(single, progress=False)
    assert resumed["last_loss"] == pytest.approx(want["last_loss"], abs=TOL)
    assert _max_weight_gap(killed.out_dir, single.out_dir) < TOL
