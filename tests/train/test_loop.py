"""The training loop on a model of a few thousand parameters: schedule, budget, resume, failure."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from xelm.io import read_json
from xelm.train.launch import run_jobs, write_spec
from xelm.train.loop import BudgetError, MixtureSampler, TrainJob, is_done, lr_at, run_job

TINY_LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 32,
              "max_position_embeddings": 16}


def token_shard(path: Path, n: int = 5000, seed: int = 0) -> Path:
    """A uint16 token file of ``n`` random ids below the tiny vocabulary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.random.default_rng(seed).integers(0, 64, n).astype(np.uint16).tofile(path)
    return path


def tiny_job(out_dir: Path, shard: Path, steps: int = 20, name: str | None = None, **kw) -> TrainJob:
    """A job of ``steps`` optimizer steps of 4 x 16 tokens on one shard."""
    args = dict(name=name or out_dir.name, out_dir=out_dir, shards=[(shard, "uint16")],
                weights=[1.0], tokens=steps * 4 * 16, seq_len=16, batch_size=4, lr=3e-3, seed=7,
                model_config=TINY_LLAMA, save_every=5, log_every=5)
    return TrainJob(**{**args, **kw})


@contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_lr_warms_up_then_decays_to_the_floor(tmp_path):
    job = tiny_job(tmp_path, tmp_path / "x.bin", warmup_fraction=0.1, min_lr_ratio=0.1, lr=1.0)
    lrs = [lr_at(s, 100, job) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)   # 10 warmup steps
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))                  # cosine never rises
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert min(lrs) >= 0.1


def test_budget_smaller_than_one_batch_is_refused(tmp_path):
    job = tiny_job(tmp_path, tmp_path / "x.bin", tokens=63)
    with pytest.raises(BudgetError, match="smaller than one batch"):
        job.steps()
    assert tiny_job(tmp_path, tmp_path / "x.bin", tokens=128).steps(world=2) == 1


def test_batches_depend_only_on_step_and_rank(tmp_path):
    shard = token_shard(tmp_path / "a.bin")
    a = MixtureSampler([(shard, "uint16")], [1.0], 16, 4, seed=1)
    b = MixtureSampler([(shard, "uint16")], [1.0], 16, 4, seed=1)
    assert a.batch(3).equal(b.batch(3)) and not a.batch(3).equal(a.batch(4))
    other_rank = MixtureSampler([(shard, "uint16")], [1.0], 16, 4, seed=1, rank=1)
    assert not a.batch(3).equal(other_rank.batch(3))


def test_sigkill_mid_job_then_resume_gives_bitwise_the_same_weights(tmp_path):
    shard = token_shard(tmp_path / "a.bin")
    killed = tiny_job(tmp_path / "killed", shard, steps=150, name="e0")
    latest = killed.out_dir / "_checkpoints" / "latest.json"
    proc = subprocess.Popen([sys.executable, "-m", "xelm.train.launch", str(write_spec(killed)),
                             "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not latest.exists():
        assert proc.poll() is None, "the job ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not is_done(killed.out_dir)
    assert 0 < read_json(latest)["step"] < 150
    whole = tiny_job(tmp_path / "whole", shard, steps=150, name="e0")
    with torch_threads(1):
        resumed = run_job(killed, progress=False)
        straight = run_job(whole, progress=False)
    assert resumed["tokens"] == straight["tokens"] == 150 * 64
    assert ((killed.out_dir / "model.safetensors").read_bytes()
            == (whole.out_dir / "model.safetensors").read_bytes())
    assert not (killed.out_dir / "_checkpoints").exists()


def test_a_failing_job_is_reported_while_the_others_finish(tmp_path):
    shard = token_shard(tmp_path / "a.bin")
    jobs = [tiny_job(tmp_path / "e0", shard, steps=3),
            tiny_job(tmp_path / "e1", tmp_path / "missing.bin", steps=3),
            tiny_job(tmp_path / "e2", shard, steps=3)]
    with torch_threads(1):
        ledgers, failed = run_jobs(jobs, progress=False)
    assert list(ledgers) == ["e0", "e2"] and list(failed) == ["e1"]
    assert "missing.bin" in failed["e1"]
    for name in ("e0", "e2"):
        state = read_json(tmp_path / name / "train_state.json")
        assert state["tokens"] == 3 * 64 and state["flops"] > 0 and state["wall_s"] >= 0
        assert state["device"] == "cpu" and state["launcher"] == "local" and state["threads"] == 1
    # running again retrains only what is missing: finished jobs are read, not retrained
    before = (tmp_path / "e0" / "model.safetensors").stat().st_mtime_ns
    ledgers, failed = run_jobs(jobs[:1], progress=False)
    assert not failed and ledgers["e0"]["tokens"] == 3 * 64
    assert (tmp_path / "e0" / "model.safetensors").stat().st_mtime_ns == before


def test_flops_count_the_output_projection_of_tied_models():
    from transformers import LlamaConfig, LlamaForCausalLM

    from xelm.train.loop import train_flops_per_token

    shape = dict(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64)
    tied = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True))
    untied = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False))
    assert train_flops_per_token(tied, 16) == train_flops_per_token(untied, 16)
    layers = sum(p.numel() for n, p in tied.named_parameters() if "embed" not in n)
    assert train_flops_per_token(tied, 16) == 6.0 * (layers + 512 * 32) + 12.0 * 1 * 32 * 16
