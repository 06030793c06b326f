"""What an export reads from a finished run directory: its config, the languages each
expert serves, validation blocks, the mixed training stream, sample documents."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from xelm.export.moe import ExportError
from xelm.io import read_json
from xelm.rundir import RunDir


def run_config(root: Path):
    """The run's resolved config (``config.yaml``); an export needs its data settings."""
    from xelm.config import load

    path = RunDir(Path(root)).config_yaml
    if not path.is_file():
        raise ExportError(f"{root} has no config.yaml: exporting needs a run directory made "
                          "by `xelm run` (its config, data/ and xelm.json)")
    return load(path)


def prepared(root: Path) -> dict:
    path = RunDir(Path(root)).prepare_json
    if not path.is_file():
        raise ExportError(f"{root} has no data/prepare.json: the router is initialised from "
                          "the run's validation text; run `xelm prepare` on its config first")
    return read_json(path)


def expert_languages(manifest: dict) -> dict[str, list[str]]:
    """Expert -> the languages whose top-1 expert it is (its own languages for an expert
    that is no language's top-1, e.g. a small TF-IDF cluster)."""
    out = {e["name"]: [] for e in manifest["experts"]}
    for lang, name in manifest["language_to_expert"].items():
        out[name].append(lang)
    for e in manifest["experts"]:
        if not out[e["name"]]:
            out[e["name"]] = list(e["languages"])
    return out


def _stream(root: Path, lang: str, split: str, info: dict) -> np.ndarray | None:
    from xelm.data.packing import Shard, shard_path

    path = shard_path(RunDir(Path(root)).data, lang, split)
    return np.asarray(Shard(path, info["dtype"]).tokens) if path.is_file() else None


def language_blocks(root: Path, lang: str, context: int, max_tokens: int,
                    split: str = "valid", info: dict | None = None):
    """Up to ``max_tokens`` of ``lang``'s ``split`` as full blocks ``[n, context + 1]``
    (int64 tensor; empty when the language has no such shard)."""
    import torch

    info = info or prepared(root)
    tokens = _stream(root, lang, split, info)
    if tokens is None:
        return torch.zeros(0, context + 1, dtype=torch.long)
    step = context  # blocks overlap by one token, as in evaluation
    n = max(0, min((len(tokens) - 1) // step, max(1, max_tokens // step)))
    rows = [tokens[i * step: i * step + context + 1] for i in range(n)]
    rows = [r for r in rows if len(r) == context + 1]
    if not rows:
        return torch.zeros(0, context + 1, dtype=torch.long)
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def expert_blocks(root: Path, manifest: dict, names: list[str], context: int,
                  tokens_per_expert: int) -> list:
    """Per expert (``names`` order) validation blocks of its languages, an equal share of
    ``tokens_per_expert`` each."""
    import torch

    info, langs = prepared(root), expert_languages(manifest)
    out = []
    for name in names:
        share = max(context, tokens_per_expert // max(1, len(langs[name])))
        parts = [language_blocks(root, lang, context, share, info=info) for lang in langs[name]]
        blocks = torch.cat(parts) if parts else torch.zeros(0, context + 1, dtype=torch.long)
        if not len(blocks):
            raise ExportError(f"expert {name!r} has no validation text in {root}/data/tokens "
                              f"(languages {langs[name]}): its router row cannot be initialised")
        out.append(blocks)
    return out


def mixed_train_batches(root: Path, cfg, batch_size: int, seed: int) -> Callable[[int], object]:
    """``step -> [batch_size, context + 1]`` blocks of the run's training data, languages
    sampled as the dense model's were (weight ∝ token share^alpha)."""
    from xelm.data.packing import shard_path
    from xelm.train.jobs import language_weights
    from xelm.train.loop import MixtureSampler

    info = prepared(root)
    langs = [lang for lang in info["languages"]
             if shard_path(RunDir(Path(root)).data, lang, "train").is_file()]
    if not langs:
        raise ExportError(f"{root}/data/tokens has no training shards to tune the router on")
    counts = {lang: info["stats"][lang]["train"]["tokens"] for lang in langs}
    weights = language_weights(counts, cfg.train.alpha)
    sampler = MixtureSampler([(shard_path(RunDir(Path(root)).data, lang, "train"), info["dtype"])
                              for lang in langs], [weights[lang] for lang in langs],
                             cfg.model.context, batch_size, seed)
    return sampler.batch


def sample_documents(root: Path, lang: str, n: int = 4, chars: int = 400) -> list[str]:
    """The first ``n`` non-empty validation documents of ``lang``, cut at a word boundary
    near ``chars`` characters (gate hints for mergekit)."""
    path = RunDir(Path(root)).text(lang, "valid")
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if not text:
                continue
            if len(text) > chars:
                cut = text.rfind(" ", 0, chars)
                text = text[: cut if cut > chars // 2 else chars]
            out.append(text)
            if len(out) == n:
                break
    return out
