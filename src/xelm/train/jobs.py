"""From a config and a run directory to training jobs: model shape, language sampling,
token budgets, one round of jobs, base-model import and the ``xelm.json`` entries.

The pipeline's ``seed``/``train`` and ``adapt`` stages assemble their jobs here, so a
new language's expert is trained exactly as the run's own experts were.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xelm.config import Config
from xelm.io import read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def model_config(cfg: Config, vocab_size: int, tok) -> dict:
    """``transformers`` config kwargs for a fresh model of ``cfg.model``'s shape."""
    m = cfg.model
    vocab = -(-vocab_size // 64) * 64
    special = {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
               "pad_token_id": tok.pad_token_id}
    if m.arch == "xglm":
        return {"model_type": "xglm", "vocab_size": vocab, "d_model": m.hidden_size,
                "num_layers": m.layers, "attention_heads": m.heads, "ffn_dim": m.intermediate_size,
                "max_position_embeddings": m.context, "dropout": 0.0, "attention_dropout": 0.0,
                "activation_dropout": 0.0, "layerdrop": 0.0, **special}
    return {"model_type": "llama", "vocab_size": vocab, "hidden_size": m.hidden_size,
            "num_hidden_layers": m.layers, "num_attention_heads": m.heads,
            "num_key_value_heads": m.heads, "intermediate_size": m.intermediate_size,
            "max_position_embeddings": m.context, "tie_word_embeddings": True, **special}


def language_weights(tokens: dict[str, int], alpha: float) -> dict[str, float]:
    """XGLM-style sampling: p(lang) ∝ (share of tokens)^alpha."""
    total = sum(tokens.values())
    raw = {lang: (n / total) ** alpha for lang, n in tokens.items()}
    norm = sum(raw.values())
    return {lang: w / norm for lang, w in raw.items()}


def train_job(cfg: Config, rd: RunDir, name: str, out_dir: Path, languages: list[str],
              tokens: int, optim, init: Path | None, seed_offset: int, shard: Path | None = None):
    """The :class:`~xelm.train.loop.TrainJob` of one model: ``languages``' train shards
    sampled by :func:`language_weights` (or one ``shard``), validated on their valid
    shards; a fresh model of ``cfg.model``'s shape unless ``init`` is given."""
    from xelm.data.packing import shard_path
    from xelm.data.tokenizer import load_tokenizer
    from xelm.train.loop import TrainJob

    info = read_json(rd.prepare_json)
    if shard is not None:
        shards, weights = [(shard, info["dtype"])], [1.0]
    else:
        counts = {lang: info["stats"][lang]["train"]["tokens"] for lang in languages}
        w = language_weights(counts, cfg.train.alpha)
        shards = [(shard_path(rd.data, lang, "train"), info["dtype"]) for lang in languages]
        weights = [w[lang] for lang in languages]
    vc = {lang: info["stats"][lang]["valid"]["tokens"] for lang in languages
          if lang in info["stats"]}
    vw = language_weights(vc, cfg.train.alpha) if vc else {}
    valid = {"valid_shards": [(shard_path(rd.data, lang, "valid"), info["dtype"]) for lang in vw],
             "valid_weights": list(vw.values()), "eval_every": cfg.train.eval_every,
             "report_to": cfg.train.report_to}
    mc = {} if init else model_config(cfg, info["vocab_size"], load_tokenizer(rd.tokenizer))
    return TrainJob(name=name, out_dir=out_dir, shards=shards, weights=weights, tokens=tokens, **valid,
                    seq_len=cfg.model.context, batch_size=optim.batch_size, lr=optim.lr,
                    seed=cfg.random_seed * 1000 + seed_offset, init_dir=init, model_config=mc,
                    warmup_fraction=optim.warmup_fraction, min_lr_ratio=optim.min_lr_ratio,
                    weight_decay=optim.weight_decay, grad_clip=optim.grad_clip,
                    betas=tuple(optim.betas), save_every=cfg.train.save_every,
                    log_every=cfg.train.log_every, precision=cfg.train.precision,
                    tensorboard_dir=rd.tensorboard, tokenizer_dir=rd.tokenizer,
                    grad_accum_steps=cfg.train.grad_accum_steps,
                    gradient_checkpointing=cfg.train.gradient_checkpointing)


def set_threads(cfg: Config) -> None:
    """``train.threads`` torch threads in this process (none set: torch's default)."""
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)


def run_round(cfg: Config, jobs: list) -> dict:
    """Run one round's jobs; raise only after all of them ended (a later round needs them)."""
    from xelm.train.launch import JobsFailed, run_jobs

    t = cfg.train
    ledgers, failed = run_jobs(jobs, launcher=t.launcher, parallel=t.parallel,
                               resources=t.resources_per_expert, address=t.ray_address,
                               threads=t.threads, slurm=t.slurm,
                               slurm_folder=RunDir(Path(cfg.out_dir)).slurm)
    if failed:
        raise JobsFailed(failed)
    return ledgers


# --------------------------------------------------------------------------- budgets
def one_batch(cfg: Config) -> int:
    """Tokens of one optimizer step of the dense baseline and the experts: every token
    budget of ``train`` is a whole number of these."""
    return cfg.train.batch_size * cfg.model.context


def expert_budget(cfg: Config, k: int) -> int:
    """Tokens per expert: ``train.tokens / k`` rounded down to whole optimizer steps.

    The dense baseline then gets exactly ``k`` times this, so both sides of the
    comparison consume the same number of training tokens, not just nearly.
    """
    step = one_batch(cfg)
    steps = cfg.train.tokens // k // step
    if steps < 1:
        raise ValueError(f"train.tokens={cfg.train.tokens:,} split over {k} experts gives "
                         f"{cfg.train.tokens // k:,} tokens each, less than one batch "
                         f"({cfg.train.batch_size} x {cfg.model.context} = {step:,}); "
                         "raise train.tokens or use fewer experts")
    return steps * step


def training_plan(cfg: Config, alloc: dict, info: dict):
    """Flat x-BTM as a one-round plan from the seed (``train.expert_budget``: equal, or in
    proportion to each expert's share of dense training), or the HMR plan of ``hmr.rounds``."""
    from xelm.train import plan as p

    step, mode = one_batch(cfg), cfg.train.expert_budget
    if cfg.hmr.rounds:
        if mode == "proportional":
            raise p.PlanError("train.expert_budget=proportional is for flat x-BTM; with "
                              "hmr.rounds each round splits its budget equally")
        plan = p.plan_for_run(alloc, cfg.hmr.rounds, cfg.hmr.fractions(), cfg.train.tokens,
                              step)
        log.info("HMR plan:\n%s", p.format_plan(plan))
        return plan
    counts = {lang: stats["train"]["tokens"] for lang, stats in info["stats"].items()}
    shares = (p.group_shares(alloc, language_weights(counts, cfg.train.alpha))
              if mode == "proportional" else None)
    return p.flat_plan(alloc, expert_budget(cfg, len(alloc["experts"])), step, shares)


def expert_job(cfg: Config, rd: RunDir, alloc: dict, expert):
    """The job of one planned expert: its cluster shard (TF-IDF) or its languages' shards,
    branched from the seed or from its parent of the round before."""
    from xelm.allocate.allocation import cluster_shard

    shard = cluster_shard(rd.data, expert.name) if alloc["method"] == "tfidf" else None
    init = rd.seed if expert.parent == "seed" else rd.experts / expert.parent
    return train_job(cfg, rd, expert.name, rd.root / expert.path, list(expert.languages),
                     expert.tokens, cfg.train, init, expert.seed_offset, shard=shard)


def manifest_entry(plan, expert, ledgers: dict) -> dict:
    """An ``xelm.json`` entry; HMR experts also list their ``ancestors`` (earlier rounds),
    whose tokens count towards the expert set's compute."""
    led = ledgers[expert.name]
    entry = {"name": expert.name, "path": expert.path, "languages": list(expert.languages),
             "parent": expert.parent, "round": expert.round, "tokens": led["tokens"],
             "flops": led["flops"]}
    chain = plan.ancestors(expert.name)
    if chain:
        entry["ancestors"] = [{"name": a.name, "path": a.path, "languages": list(a.languages),
                               "parent": a.parent, "round": a.round,
                               "tokens": ledgers[a.name]["tokens"],
                               "flops": ledgers[a.name]["flops"]} for a in chain]
    return entry


# --------------------------------------------------------------------------- base model
def import_base(cfg: Config, rd: RunDir) -> dict:
    """Save ``model.base`` (safetensors weights only) as the run's seed; its ledger has no
    training tokens."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.model.base, use_safetensors=True,
                                                     trust_remote_code=cfg.model.trust_remote_code)
    except OSError as exc:
        raise ValueError(
            f"model.base={cfg.model.base!r} could not be loaded with safetensors weights "
            f"({exc}). xelm never unpickles weights: give a folder or hub id with "
            "model.safetensors (convert a .bin checkpoint with save_pretrained("
            "safe_serialization=True) in a trusted environment).") from None
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg.model.context > positions:
        raise ValueError(f"model.context={cfg.model.context} exceeds the {positions} positions "
                         f"of {cfg.model.base}; lower model.context")
    model.save_pretrained(str(rd.seed), safe_serialization=True)
    ledger = {"done": True, "name": "seed", "imported": cfg.model.base, "tokens": 0, "flops": 0.0,
              "parameters": sum(p.numel() for p in model.parameters())}
    write_json(rd.seed_state, ledger)
    return ledger


# --------------------------------------------------------------------------- adapt (LAPT)
def lapt_jobs(cfg: Config, rd: RunDir, key: str, call: dict, parents: dict[str, Path]) -> list:
    """An adapt call's jobs: each new language's expert from its parent's folder
    (``parents[name]``) on that language alone, then the dense and seed LAPT baselines on
    all new languages together, each with ``tokens`` times their number."""
    import dataclasses
    import zlib

    from xelm.data.packing import shard_path

    langs, tokens = call["languages"], call["tokens"]
    shards = {lang: shard_path(rd.data, lang, "train") for lang in langs}
    seed_of = lambda name: 1000 + zlib.crc32(name.encode()) % 1_000_000  # noqa: E731
    jobs = []
    for lang in langs:
        name, parent = call["experts"][lang], call["parents"][lang]["parent"]
        jobs.append(train_job(cfg, rd, name, rd.experts / name, [lang], tokens, cfg.train,
                              parents[parent], seed_of(name), shard=shards[lang]))
    # The baselines sample the new languages uniformly, so each language gets the same
    # expected tokens as its new expert: sampling by data share (train.alpha) would give a
    # high-fertility language (e.g. Thai, ~1 token per byte) twice an expert's budget.
    weights = {lang: 1 / len(langs) for lang in langs}
    dtype = read_json(rd.prepare_json)["dtype"]
    for init, folder in ((rd.dense, "dense-lapt"), (rd.seed, "seed-lapt")):
        name = f"{folder}.{key}"
        job = train_job(cfg, rd, name, rd.adapt_dir / key / folder, langs[:1],
                        tokens * len(langs), cfg.train, init, seed_of(name), shard=shards[langs[0]])
        jobs.append(dataclasses.replace(job, shards=[(shards[lang], dtype) for lang in langs],
                                        weights=[weights[lang] for lang in langs]))
    return jobs
