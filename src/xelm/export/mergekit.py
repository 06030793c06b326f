"""``xelm export --format mergekit``: a mergekit-moe configuration for the run's experts.

For users who prefer mergekit's own MoE merge (``mergekit-moe CONFIG OUT``). The YAML
names the run's seed as ``base_model`` (mergekit takes embeddings, attention and norms
from it; xelm's own export can average them instead) and every expert folder as an
expert, and gives mergekit's ``hidden`` gate mode its positive prompts: the first
validation documents of each expert's languages, the text x-ELM assigned to it. Paths
are absolute, so the YAML works from any directory. Schema (mergekit's
``MoEMergeConfig``): ``base_model``, ``gate_mode``, ``dtype``, ``experts_per_token``,
``experts: [{source_model, positive_prompts}]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xelm.export.moe import ExportError, moe_class_for
from xelm.io import atomic_write_text, write_json
from xelm.rundir import RunDir

CONFIG_NAME = "mergekit.yaml"
GATE_MODES = ("hidden", "cheap_embed", "random")


def _configs(run: Path, manifest: dict) -> list:
    from transformers import AutoConfig

    return [AutoConfig.from_pretrained(os.fspath(run / e["path"]), local_files_only=True)
            for e in manifest["experts"]]


def _prompts(run: Path, languages: list[str], per_language: int) -> list[str]:
    from xelm.export.rundata import sample_documents

    prompts = []
    for lang in languages:
        prompts += sample_documents(run, lang, per_language)
    return prompts


def mergekit_config(run: str | os.PathLike, manifest: dict, experts_per_token: int = 2,
                    gate_mode: str = "hidden", per_language: int = 4) -> dict:
    """The mergekit-moe config (a dict) for ``run``; refuses what mergekit cannot merge."""
    from xelm.export.rundata import expert_languages

    run = Path(run).resolve()
    if gate_mode not in GATE_MODES:
        raise ExportError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
    configs = _configs(run, manifest)
    moe_class_for(configs)  # mergekit-moe, too, writes Mixtral from Llama/Mistral experts
    seed = RunDir(run).seed
    if not (seed / "config.json").is_file():
        raise ExportError(f"{run} has no seed/ model: mergekit-moe needs a base model")
    if not (seed / "tokenizer.json").is_file():
        raise ExportError(f"{run}/seed has no tokenizer.json, and mergekit-moe reads the "
                          "tokenizer from its base model: use --format moe, or merge a copy "
                          "of seed/ with data/tokenizer's files added")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.fspath(seed), local_files_only=True)
    if tok.bos_token_id is None and tok.eos_token_id is None:  # mergekit pads with one
        raise ExportError(f"{run}/seed's tokenizer has neither a BOS nor an EOS token, which "
                          "mergekit-moe pads its gate prompts with: use --format moe")
    langs = expert_languages(manifest)
    experts = []
    for e in manifest["experts"]:
        prompts = _prompts(run, langs[e["name"]], per_language)
        if not prompts and gate_mode != "random":
            raise ExportError(f"expert {e['name']!r}: no validation text of "
                              f"{langs[e['name']]} in {run}/data/text to use as gate prompts; "
                              "use gate_mode='random'")
        experts.append({"source_model": os.fspath(run / e["path"]),
                        "positive_prompts": prompts})
    dtype = getattr(configs[0], "dtype", None)
    dtype = dtype if isinstance(dtype, str) else str(dtype or "float32").removeprefix("torch.")
    return {"base_model": os.fspath(seed), "gate_mode": gate_mode,
            "dtype": dtype if dtype in ("float32", "bfloat16", "float16") else "float32",
            "experts_per_token": int(experts_per_token), "experts": experts}


def write_mergekit_config(run: str | os.PathLike, out_dir: Path, manifest: dict,
                          experts_per_token: int = 2, gate_mode: str = "hidden") -> dict:
    """Write ``OUT/mergekit.yaml`` and ``OUT/export.json``; returns the export record."""
    import yaml

    config = mergekit_config(run, manifest, experts_per_token, gate_mode)
    header = ("# mergekit-moe configuration written by `xelm export --format mergekit`.\n"
              f"# Merge with: mergekit-moe {CONFIG_NAME} OUTPUT_DIR\n")
    atomic_write_text(out_dir / CONFIG_NAME,
                      header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True,
                                              width=100))
    record = {"format": "mergekit", "config": CONFIG_NAME,
              "run": Path(run).resolve().name, "experts": [e["name"] for e in manifest["experts"]],
              "experts_per_token": int(experts_per_token), "gate_mode": gate_mode,
              "command": f"mergekit-moe {json.dumps(os.fspath(out_dir / CONFIG_NAME))} OUTPUT_DIR"}
    write_json(out_dir / "export.json", record)
    return record
