"""Training checkpoints in safetensors only (no pickle), written atomically.

``<job>/_checkpoints/step-<N>/`` holds ``model.safetensors``, ``optimizer.safetensors``
(every tensor of the optimizer state, flattened) and ``state.json`` (step, scalar
history, optimizer hyper-parameters). ``<job>/_checkpoints/latest.json`` names the newest
complete one and is replaced atomically after it is fully written; older ones are then
removed. A crash mid-save leaves the previous checkpoint as ``latest``.
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


def save(job_dir: Path, model, opt, step: int, history: dict) -> Path:
    import torch
    from safetensors.torch import save_file, save_model

    root = Path(job_dir) / DIRNAME
    target = root / f"step-{step:08d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        save_model(model, str(target / "model.safetensors"))
        tensors, groups = _optimizer_tensors(opt)
        tensors["__torch_rng__"] = torch.get_rng_state()
        save_file(tensors, str(target / "optimizer.safetensors"))
        write_json(target / "state.json", {"step": step, "history": history,
                                           "param_groups": groups})
        write_json(root / "latest.json", {"step": step, "dir": target.name})
    except BaseException:  # disk full, permissions: keep the previous checkpoint as latest
        shutil.rmtree(target, ignore_errors=True)
        raise
    for old in root.glob("step-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def restore(job_dir: Path, model, opt) -> tuple[int, dict]:
    """Load the latest checkpoint into ``model``/``opt``; return (step, history)."""
    import torch
    from safetensors.torch import load_file, load_model

    latest = Path(job_dir) / DIRNAME / "latest.json"
    if not latest.is_file():
        return 0, {}
    target = latest.parent / read_json(latest)["dir"]
    meta = read_json(target / "state.json")
    load_model(model, str(target / "model.safetensors"), strict=True)
    tensors = load_file(str(target / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng__"))
    state: dict = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    log.info("resumed %s from step %d", job_dir, meta["step"])
    return int(meta["step"]), meta["history"]


def clear(job_dir: Path) -> None:
    shutil.rmtree(Path(job_dir) / DIRNAME, ignore_errors=True)
