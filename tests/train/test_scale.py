"""Training big experts: gradient accumulation, gradient checkpointing, checkpoint layouts."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from test_loop import TINY_LLAMA, tiny_job, token_shard, torch_threads
from xelm.config import ConfigError, load
from xelm.io import read_json
from xelm.train import checkpoint as ckpt
from xelm.train.loop import AccumulationError, _adamw, build_model, run_job

DEEPER = {**TINY_LLAMA, "num_hidden_layers": 4, "hidden_size": 32, "intermediate_size": 64}


def pattern_shard(path, n: int = 20000, seed: int = 0):
    """Learnable tokens: mostly ``next = 5·prev + 3 mod 64``, one in eight random."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.empty(n, dtype=np.uint16)
    ids[0] = 1
    noise = rng.integers(0, 64, n)
    for i in range(1, n):
        ids[i] = noise[i] if noise[i] < 8 else (5 * ids[i - 1] + 3) % 64
    path.parent.mkdir(parents=True, exist_ok=True)
    ids.tofile(path)
    return path


def _validated(tmp_path, name, shard, **kw):
    """A job that scores the same fixed validation blocks after every step."""
    args = dict(steps=6, valid_shards=[(shard, "uint16")], valid_weights=[1.0], eval_every=1,
                report_to="none", lr=1e-2)
    return tiny_job(tmp_path / name, shard, **{**args, **kw})


def test_four_micro_batches_of_four_give_the_loss_of_a_batch_of_sixteen(tmp_path):
    shard = pattern_shard(tmp_path / "a.bin")
    whole = _validated(tmp_path, "whole", shard, batch_size=16, tokens=6 * 16 * 16)
    parts = _validated(tmp_path, "parts", shard, batch_size=16, tokens=6 * 16 * 16,
                       grad_accum_steps=4)
    with torch_threads(1):
        a, b = run_job(whole, progress=False), run_job(parts, progress=False)
    # accumulation changes memory only: same steps, tokens and (fp32) losses to 1e-5
    assert a["steps"] == b["steps"] == 6 and a["tokens"] == b["tokens"] == 6 * 16 * 16
    assert b["grad_accum_steps"] == 4
    assert b["last_loss"] == pytest.approx(a["last_loss"], abs=1e-5)
    assert len(a["valid_loss"]) == 6
    for (seen_a, loss_a), (seen_b, loss_b) in zip(a["valid_loss"], b["valid_loss"]):
        assert seen_a == seen_b and loss_b == pytest.approx(loss_a, abs=1e-5)
    assert a["valid_loss"][-1][1] < a["valid_loss"][0][1] - 0.01    # it did learn
    wa, wb = (load_file(str(j.out_dir / "model.safetensors")) for j in (whole, parts))
    assert all((wa[k] - wb[k]).abs().max() < 1e-5 for k in wa)


def test_accumulation_that_does_not_divide_the_batch_is_refused(tmp_path):
    with pytest.raises(AccumulationError, match="cannot be split into 3 equal micro-batches"):
        tiny_job(tmp_path, tmp_path / "a.bin", grad_accum_steps=3)
    assert issubclass(AccumulationError, ValueError)
    with pytest.raises(ConfigError, match="divisible by train.grad_accum_steps"):
        load("configs/tiny.yaml", ["train.batch_size=6", "train.grad_accum_steps=4"])


def _saved_bytes_and_grads(job, batch):
    """Bytes autograd keeps for the backward pass of one forward, and the gradients."""
    import torch

    model, total = build_model(job), [0]

    def keep(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
    loss.backward()
    return total[0], {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_keeps_the_gradients_and_saves_less(tmp_path):
    import torch

    shard = token_shard(tmp_path / "a.bin")
    plain = tiny_job(tmp_path / "plain", shard, model_config=DEEPER)
    recompute = tiny_job(tmp_path / "ckpt", shard, model_config=DEEPER, gradient_checkpointing=True)
    batch = torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(0))
    with torch_threads(1), torch.enable_grad():
        kept_plain, grads_plain = _saved_bytes_and_grads(plain, batch)
        kept_ckpt, grads_ckpt = _saved_bytes_and_grads(recompute, batch)
    assert kept_ckpt < 0.6 * kept_plain        # layers' insides are recomputed, not kept
    for name, grad in grads_plain.items():
        assert torch.allclose(grads_ckpt[name], grad, atol=1e-6), name


def test_a_checkpointed_job_saves_a_normal_model(tmp_path):
    job = tiny_job(tmp_path / "e0", token_shard(tmp_path / "a.bin"), steps=3,
                   gradient_checkpointing=True, grad_accum_steps=2, report_to="none")
    with torch_threads(1):
        ledger = run_job(job, progress=False)
    assert ledger["gradient_checkpointing"] is True and ledger["sharding"] == "none"
    assert ledger["peak_memory_bytes"] > 10 * 2**20
    config = read_json(job.out_dir / "config.json")
    assert config.get("use_cache", True) is True      # generation keeps its KV cache
    assert not config.get("gradient_checkpointing", False)


def _trained_pair(tmp_path):
    """A model and optimizer after two steps, and their plain checkpoint."""
    import torch

    job = tiny_job(tmp_path / "src", token_shard(tmp_path / "a.bin"), report_to="none")
    model = build_model(job)
    opt = _adamw(model, job)
    with torch.enable_grad():
        for _ in range(2):
            batch = torch.randint(0, 64, (4, 17))
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
    return job, model, opt


@pytest.mark.parametrize("layout", ["index", "full"])
def test_either_checkpoint_layout_restores_either_way(tmp_path, layout):
    """FSDP jobs write optimizer state by parameter name, plain ones by position: each
    resumes through both readers with the same weights and optimizer state."""
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    job, model, opt = _trained_pair(tmp_path)
    if layout == "index":
        ckpt.save(tmp_path / "job", model, opt, 7, {"last_loss": 1.5})
    else:
        weights, optim = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
        ckpt.save_full(tmp_path / "job", weights, optim, 7, {"last_loss": 1.5})
    for reader in (ckpt.restore, ckpt.restore_full):
        fresh = build_model(tiny_job(tmp_path / "other", tmp_path / "a.bin", seed=99))
        fresh_opt = _adamw(fresh, job)
        assert reader(tmp_path / "job", fresh, fresh_opt) == (7, {"last_loss": 1.5})
        for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
            assert torch.equal(p, q), name
            want, got = opt.state[p], fresh_opt.state[q]
            assert torch.equal(want["exp_avg_sq"], got["exp_avg_sq"]) and got["step"] == 2
