"""Training checkpoints in safetensors only (no pickle), written atomically.

``<job>/_checkpoints/step-<N>/`` holds ``model.safetensors``, ``optimizer.safetensors``
(every tensor of the optimizer state, flattened) and ``state.json`` (step, scalar
history, optimizer hyper-parameters). ``<job>/_checkpoints/latest.json`` names the newest
complete one and is replaced atomically after it is fully written; older ones are then
removed. A crash mid-save leaves the previous checkpoint as ``latest``.

A sharded (FSDP) job writes the same files from full state dicts gathered by every process
(:func:`full_state`, :func:`save_full`): the optimizer state is keyed by parameter name
instead of position (``"layout": "full"`` in ``state.json``). Either layout resumes either
way, sharded or not (:func:`restore`, :func:`restore_full`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from xelm.io import read_json, write_json

log = logging.getLogger(__name__)

DIRNAME = "_checkpoints"


def _optimizer_tensors(opt) -> tuple[dict, list]:
    state = opt.state_dict()
    tensors = {f"{idx}.{key}": value.detach().contiguous().cpu()
               for idx, entry in state["state"].items() for key, value in entry.items()}
    return tensors, state["param_groups"]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model being resumed."""


def _write(job_dir: Path, step: int, write_files) -> Path:
    """``write_files(folder)`` into a fresh step folder, then point ``latest`` at it."""
    root = Path(job_dir) / DIRNAME
    target = root / f"step-{step:08d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        write_files(target)
        write_json(root / "latest.json", {"step": step, "dir": target.name})
    except BaseException:  # disk full, permissions: keep the previous checkpoint as latest
        shutil.rmtree(target, ignore_errors=True)
        raise
    for old in root.glob("step-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def save(job_dir: Path, model, opt, step: int, history: dict) -> Path:
    import torch
    from safetensors.torch import save_file, save_model

    def files(target: Path) -> None:
        save_model(model, str(target / "model.safetensors"))
        tensors, groups = _optimizer_tensors(opt)
        tensors["__torch_rng__"] = torch.get_rng_state()
        save_file(tensors, str(target / "optimizer.safetensors"))
        write_json(target / "state.json", {"step": step, "history": history,
                                           "param_groups": groups})
    return _write(job_dir, step, files)


def full_state(model, opt=None) -> tuple[dict, dict]:
    """The full (unsharded) state dicts of a sharded model and its optimizer, gathered on
    the CPU of the main process (empty elsewhere). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if opt is None:
        return get_model_state_dict(model, options=options), {}
    return get_state_dict(model, opt, options=options)


def save_full(job_dir: Path, weights: dict, optim: dict, step: int, history: dict) -> Path:
    """Write gathered full state dicts (:func:`full_state`) as a checkpoint."""
    import torch
    from safetensors.torch import save_file

    def files(target: Path) -> None:
        seen, model = set(), {}
        for name, tensor in weights.items():  # tied weights: safetensors refuses shared storage
            ptr = tensor.untyped_storage().data_ptr()
            model[name] = tensor.clone() if ptr in seen else tensor.contiguous()
            seen.add(ptr)
        save_file(model, str(target / "model.safetensors"))
        tensors = {f"{fqn}.{key}": value.detach().contiguous().cpu()
                   for fqn, entry in optim["state"].items() for key, value in entry.items()}
        tensors["__torch_rng__"] = torch.get_rng_state()
        save_file(tensors, str(target / "optimizer.safetensors"))
        write_json(target / "state.json", {"step": step, "history": history, "layout": "full",
                                           "param_groups": optim["param_groups"]})
    return _write(job_dir, step, files)


def _latest(job_dir: Path):
    latest = Path(job_dir) / DIRNAME / "latest.json"
    if not latest.is_file():
        return None, None
    target = latest.parent / read_json(latest)["dir"]
    return target, read_json(target / "state.json")


def _optimizer_state(tensors: dict, by_name: bool) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        owner, name = key.rsplit(".", 1)
        state.setdefault(owner if by_name else int(owner), {})[name] = value
    return state


def restore(job_dir: Path, model, opt) -> tuple[int, dict]:
    """Load the latest checkpoint into ``model``/``opt``; return (step, history)."""
    import torch
    from safetensors.torch import load_file, load_model

    target, meta = _latest(job_dir)
    if target is None:
        return 0, {}
    if meta.get("layout") == "full":  # written by a sharded job: load it by parameter name
        return restore_full(job_dir, model, opt)
    load_model(model, str(target / "model.safetensors"), strict=True)
    tensors = load_file(str(target / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng__"))
    opt.load_state_dict({"state": _optimizer_state(tensors, by_name=False),
                         "param_groups": meta["param_groups"]})
    log.info("resumed %s from step %d", job_dir, meta["step"])
    return int(meta["step"]), meta["history"]


def restore_full(job_dir: Path, model, opt) -> tuple[int, dict]:
    """Load the latest checkpoint into a sharded (or plain) ``model``/``opt`` by parameter
    name; every process must call it. A checkpoint of an unsharded job (optimizer state by
    position) is mapped to names in the model's parameter order."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    target, meta = _latest(job_dir)
    if target is None:
        return 0, {}
    weights = load_file(str(target / "model.safetensors"))
    tensors = load_file(str(target / "optimizer.safetensors"))
    rng = tensors.pop("__torch_rng__")
    groups = meta["param_groups"]
    by_name = meta.get("layout") == "full"
    state = _optimizer_state(tensors, by_name)
    if not by_name:
        names = [name for name, _ in model.named_parameters()]
        state = {names[i]: entry for i, entry in state.items()}
        groups = [{**g, "params": [names[i] for i in g["params"]]} for g in groups]
    params = dict(model.named_parameters(remove_duplicate=False))
    for name in set(params) - set(weights):  # tied weights may be stored once
        tied = next((o for o, p in params.items() if o in weights and p is params[name]), None)
        if tied is None:
            raise CheckpointError(f"{target} has no tensor {name!r}: it was written for "
                                  "another model; remove the job's _checkpoints to start over")
        weights[name] = weights[tied]
    set_state_dict(model, opt, model_state_dict=weights,
                   optim_state_dict={"state": state, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True))
    torch.set_rng_state(rng)
    log.info("resumed %s from step %d", job_dir, meta["step"])
    return int(meta["step"]), meta["history"]


def clear(job_dir: Path) -> None:
    shutil.rmtree(Path(job_dir) / DIRNAME, ignore_errors=True)
