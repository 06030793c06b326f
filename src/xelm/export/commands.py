"""What ``xelm export`` does: a finished run -> one MoE model folder, or a mergekit YAML."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from xelm.export.moe import ExportError, SHARED_CHOICES
from xelm.io import read_json, write_json
from xelm.rundir import TRAIN_STATE, RunDir

log = logging.getLogger("xelm")

FORMATS = ("moe", "mergekit")
EXPORT_FILE = "export.json"


def default_out(run: str | os.PathLike, fmt: str = "moe") -> Path:
    """Where an export goes when no ``--out`` is given: ``RUN/exports/<format>`` (cards
    and ``xelm push`` find exports there)."""
    return Path(run) / "exports" / fmt


def _check_arguments(run: Path, fmt: str, experts_per_token: int, tune_router_tokens: int,
                     tune: str, shared: str) -> dict:
    from xelm.experts.manifest import read_manifest
    from xelm.export.gates import TUNE_CHOICES

    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if shared not in ("auto", *SHARED_CHOICES):
        raise ExportError(f"--shared must be auto, average or seed, got {shared!r}")
    if tune not in TUNE_CHOICES:
        raise ExportError(f"--tune must be one of {TUNE_CHOICES}, got {tune!r}")
    if tune_router_tokens < 0:
        raise ExportError(f"--tune-router must be >= 0 tokens, got {tune_router_tokens}")
    if fmt == "mergekit" and tune_router_tokens:
        raise ExportError("--tune-router applies to --format moe; mergekit sets its own gates")
    manifest = read_manifest(run)
    k = len(manifest["experts"])
    if not 1 <= experts_per_token <= k:
        raise ExportError(f"--experts-per-token must be between 1 and the run's {k} experts, "
                          f"got {experts_per_token}")
    return manifest


def export_run(run: str | os.PathLike, out: str | os.PathLike | None = None, fmt: str = "moe",
               experts_per_token: int = 2, tune_router_tokens: int = 0, tune: str = "router",
               shared: str = "auto", force: bool = False, *, calibration_tokens: int = 16384,
               selection_tokens: int = 8192, tune_lr: float | None = None,
               seed: int = 0) -> dict:
    """Export a finished run as one mixture-of-experts model (or a mergekit-moe YAML).

    --format moe: every expert's feed-forward blocks become the experts of one
    MixtralForCausalLM (Llama/Mistral experts only), which transformers loads with
    AutoModelForCausalLM and no remote code; embeddings, attention and norms are the
    experts' average or the seed's (--shared auto tries both and keeps the one with the
    lower validation loss). Each layer's router starts from the mean hidden state of each
    expert's languages' validation text. --tune-router N then trains the router (--tune
    all: every parameter, as BTX) on N tokens of the run's mixed training data; those
    tokens are recorded in export.json (compare with a dense model given them too).
    --format mergekit writes mergekit.yaml (experts, seed as base model, validation text
    of each expert's languages as gate prompts) for `mergekit-moe`.
    Output: OUT (default RUN/exports/<format>) with export.json and a model card."""
    run = Path(run)
    manifest = _check_arguments(run, fmt, experts_per_token, tune_router_tokens, tune, shared)
    from xelm.outputs import claim_out_dir

    out_dir = claim_out_dir(out if out is not None else default_out(run, fmt), "export", force)
    if fmt == "mergekit":
        from xelm.export.mergekit import write_mergekit_config

        return write_mergekit_config(run, out_dir, manifest, experts_per_token)
    return export_moe(run, out_dir, experts_per_token=experts_per_token,
                      tune_router_tokens=tune_router_tokens, tune=tune, shared=shared,
                      calibration_tokens=calibration_tokens, selection_tokens=selection_tokens,
                      tune_lr=tune_lr, seed=seed)


def _language_nll(model, blocks: dict) -> dict[str, float]:
    from xelm.export.gates import mean_nll

    return {lang: mean_nll(model, b) for lang, b in blocks.items() if len(b)}


def _candidate(states, how, seed_state, config, calib, batch, seed, select_blocks):
    from xelm.export.gates import init_router
    from xelm.export.moe import build_moe, shared_tensors

    model = build_moe(states, shared_tensors(states, how, seed_state), config)
    stats = init_router(model, calib, batch_size=batch, seed=seed)
    nll = _language_nll(model, select_blocks)
    return model, stats, nll


def _mean(values: dict) -> float:
    return sum(values.values()) / max(1, len(values))


def export_moe(run: Path, out_dir: Path, *, experts_per_token: int = 2,
               tune_router_tokens: int = 0, tune: str = "router", shared: str = "auto",
               calibration_tokens: int = 16384, selection_tokens: int = 8192,
               tune_lr: float | None = None, seed: int = 0) -> dict:
    """The MoE export into an already claimed ``out_dir`` (see :func:`export_run`)."""
    import torch

    from xelm.experts.manifest import ExpertSet
    from xelm.experts.store import load_causal_lm
    from xelm.export import rundata
    from xelm.export.moe import moe_class_for, moe_config, parameter_counts

    start = time.perf_counter()
    cfg = rundata.run_config(run)
    info = rundata.prepared(run)
    es = ExpertSet.load(run, dtype=torch.float32)
    models = [es.models[n] for n in es.names]
    arch = moe_class_for([m.config for m in models])
    config = moe_config(models[0].config, len(models), experts_per_token)
    states = [m.state_dict() for m in models]
    context, batch = cfg.model.context, cfg.eval.batch_size
    calib = rundata.expert_blocks(run, es.manifest, es.names, context, calibration_tokens)
    select = {lang: rundata.language_blocks(run, lang, context, selection_tokens, info=info)
              for lang in info["languages"]}
    choices = list(SHARED_CHOICES) if shared == "auto" else [shared]
    seed_state = None
    if "seed" in choices and RunDir(run).seed.is_dir():
        seed_state = load_causal_lm(RunDir(run).seed, dtype=torch.float32).state_dict()
    elif shared == "auto":
        choices = ["average"]
    tried, best = {}, None
    for how in choices:
        model, stats, nll = _candidate(states, how, seed_state, config, calib, batch, seed, select)
        tried[how] = {"valid_nll": nll, "valid_mean_nll": _mean(nll), "router_init": stats}
        log.info("export: shared=%s, validation loss %.4f", how, _mean(nll))
        if best is None or _mean(nll) < tried[best[0]]["valid_mean_nll"]:
            best = (how, model)
    how, model = best
    names = list(es.names)
    del states, seed_state, es, models
    tuning = None
    if tune_router_tokens:
        tuning = _tune(run, cfg, model, tune_router_tokens, tune, tune_lr, seed)
        tuning["valid_nll_after"] = _language_nll(model, select)
        tuning["valid_mean_nll_after"] = _mean(tuning["valid_nll_after"])
    record = {"format": "moe", "architecture": arch, "run": run.resolve().name,
              "experts": names, "experts_per_token": experts_per_token,
              "languages": rundata.expert_languages(read_json(RunDir(run).manifest)),
              "shared": how, "shared_tried": tried, "router_init": tried[how]["router_init"],
              "calibration_tokens_per_expert": calibration_tokens,
              "router_tuning": tuning, "tokens": _ledger(run, tuning),
              "parameters": parameter_counts(model), "context": context}
    _save(run, out_dir, model, record)
    record["seconds"] = round(time.perf_counter() - start, 2)
    write_json(out_dir / EXPORT_FILE, record)
    _write_card(run, out_dir)
    return record


def _tune(run: Path, cfg, model, tokens: int, what: str, lr: float | None, seed: int) -> dict:
    from xelm.export.gates import tune_router
    from xelm.export.rundata import mixed_train_batches

    batch, context = cfg.train.batch_size, cfg.model.context
    steps = tokens // (batch * context)
    if steps < 1:
        raise ExportError(f"--tune-router {tokens} is less than one batch of "
                          f"{batch} x {context} = {batch * context} tokens; give more tokens")
    batches = mixed_train_batches(run, cfg, batch, seed=10_000 + seed)
    result = tune_router(model, batches, steps, what=what, lr=lr or cfg.train.lr,
                         grad_clip=cfg.train.grad_clip, log_every=cfg.train.log_every)
    result["tokens"] = steps * batch * context
    log.info("export: router tuned on %s tokens (%s), loss %.4f -> %.4f", f"{result['tokens']:,}",
             what, result["loss_first"], result["loss_last"])
    return result


def _ledger(run: Path, tuning: dict | None) -> dict:
    """Training tokens behind the export: the experts', the seed's, and the tuning's."""
    def state_tokens(folder: str):
        path = run / folder / TRAIN_STATE
        return read_json(path).get("tokens") if path.is_file() else None

    experts = sum(int(e.get("tokens") or 0) for e in read_json(RunDir(run).manifest)["experts"])
    tuned = tuning["tokens"] if tuning else 0
    dense = state_tokens("dense")
    return {"experts": experts, "seed": state_tokens("seed"), "dense": dense,
            "router_tuning": tuned,
            "router_tuning_vs_dense": (tuned / dense) if dense else None}


def _save(run: Path, out_dir: Path, model, record: dict) -> None:
    """Weights in the experts' own dtype, the tokenizer and generation settings."""
    import torch

    from xelm.data.tokenizer import load_tokenizer
    from xelm.experts.store import sha256_file

    first = read_json(RunDir(run).manifest)["experts"][0]["path"]
    dtype = json.loads((run / first / "config.json").read_text(encoding="utf-8")).get("dtype")
    if dtype in ("bfloat16", "float16"):
        model = model.to(getattr(torch, dtype))
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.save_pretrained(os.fspath(out_dir))
    load_tokenizer(RunDir(run).tokenizer).save_pretrained(os.fspath(out_dir))
    record["files"] = {p.name: sha256_file(p) for p in sorted(out_dir.glob("*.safetensors"))}


def _write_card(run: Path, out_dir: Path) -> None:
    from xelm.export.cards import export_card

    export_card(run, out_dir).save(os.fspath(out_dir / "README.md"))
