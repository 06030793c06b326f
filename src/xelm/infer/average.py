"""Parameter averaging: one dense model from an expert set (the paper's "merge").

All experts branch from one seed, so their parameters live in a shared basin and a
weighted average (weights: uniform, or the prior) is a usable single model. Floating
tensors are averaged in float64 and cast back, so averaging identical experts returns
their weights bit for bit; integer buffers must agree across experts and are copied.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from xelm.experts.store import require_safetensors, save_causal_lm


def _state_dict(item: Any) -> dict[str, Tensor]:
    """A model's state dict, or the tensors of a safetensors folder / file."""
    if isinstance(item, dict):
        return item
    if isinstance(item, torch.nn.Module):
        return item.state_dict()
    from safetensors.torch import load_file

    path = Path(item)
    files = [path] if path.is_file() else require_safetensors(path)
    tensors: dict[str, Tensor] = {}
    for file in files:
        tensors.update(load_file(os.fspath(file)))
    return tensors


def _normalise(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} experts")
    if any(not (w >= 0) or w == float("inf") for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
    return [w / sum(weights) for w in weights]


def _check_same_layout(reference: dict[str, Tensor], other: dict[str, Tensor], index: int) -> None:
    if reference.keys() != other.keys():
        diff = sorted(set(reference) ^ set(other))[:5]
        raise ValueError(f"expert {index} has different parameters than expert 0 (e.g. {diff}); "
                         "only experts branched from one seed can be averaged")
    for key, tensor in reference.items():
        if other[key].shape != tensor.shape:
            raise ValueError(f"expert {index}: {key} has shape {tuple(other[key].shape)}, "
                             f"expert 0 has {tuple(tensor.shape)}")


def average_experts(models_or_paths: Iterable[Any], weights: Sequence[float] | None = None
                    ) -> dict[str, Tensor]:
    """Weighted average of experts' parameters (models, folders or state dicts).

    ``weights`` (default uniform) are normalised to sum to 1; experts with weight 0 are
    not loaded. Returns a state dict with each tensor in its original dtype.
    """
    items = list(models_or_paths.values() if isinstance(models_or_paths, dict)
                 else models_or_paths)
    if not items:
        raise ValueError("average_experts needs at least one expert")
    weights = _normalise(weights, len(items))
    reference: dict[str, Tensor] | None = None
    total: dict[str, Tensor] = {}
    for index, (item, w) in enumerate(zip(items, weights)):
        if w == 0:
            continue
        state = _state_dict(item)
        if reference is None:
            reference = state
            total = {k: (torch.zeros_like(t, dtype=torch.float64) if t.is_floating_point()
                         else t.clone()) for k, t in state.items()}
        _check_same_layout(reference, state, index)
        for key, tensor in state.items():
            if tensor.is_floating_point():
                total[key].add_(tensor.to(torch.float64), alpha=w)
            elif not torch.equal(tensor, total[key]):
                raise ValueError(f"expert {index}: integer tensor {key} differs; cannot average")
    return {k: t.to(reference[k].dtype) for k, t in total.items()}


def _merge_weights(expert_set, weights) -> list[float] | None:
    if isinstance(weights, str):
        if weights != "prior":
            raise ValueError(f"weights must be a list, a dict, 'prior' or None, got {weights!r}")
        weights = expert_set.prior  # None (no prior in the manifest) -> uniform
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(expert_set.names))
        if unknown:
            raise ValueError(f"weights name unknown experts {unknown}; "
                             f"experts are {expert_set.names}")
        weights = [float(weights.get(name, 0.0)) for name in expert_set.names]
    return weights


def merge_to_folder(expert_set, out_dir: str | os.PathLike, weights=None) -> Path:
    """Average ``expert_set``'s experts into an HF folder (safetensors + tokenizer).

    ``weights``: None (uniform), ``"prior"`` (the manifest's prior), ``{name: weight}``
    (missing names weigh 0) or one weight per expert in ``expert_set.names`` order.
    Writes ``merge.json`` beside the weights saying which experts and weights were used.
    """
    weights = _normalise(_merge_weights(expert_set, weights), len(expert_set.names))
    models = [expert_set.models[name] for name in expert_set.names]
    merged_state = average_experts(models, weights)
    template = models[next(i for i, w in enumerate(weights) if w > 0)]
    merged = copy.deepcopy(template)
    merged.load_state_dict(merged_state)
    out_dir = Path(out_dir)
    save_causal_lm(merged, out_dir)
    if getattr(expert_set, "tokenizer", None) is not None:
        expert_set.tokenizer.save_pretrained(os.fspath(out_dir))
    provenance = {"method": "parameter_average",
                  "weights": dict(zip(expert_set.names, weights))}
    (out_dir / "merge.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out_dir
