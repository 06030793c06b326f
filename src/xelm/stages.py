"""The x-BTM experiment as stages over one run directory.

``prepare -> seed -> allocate -> train -> eval -> report``. Each stage reads what the
previous ones wrote, skips work that is already done, and writes its outputs atomically,
so running a stage (or ``run``) again after a crash continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from xelm.config import Config
from xelm.io import read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")

SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------- prepare
def prepare(cfg: Config, rd: RunDir) -> dict:
    """Corpus -> splits -> tokenizer -> packed token shards (``data/prepare.json``).

    Streamed, on ``corpus.num_proc`` processes, and resumable after a kill at any point
    (:mod:`xelm.data.prepare`); the files are those of reading everything into memory.
    """
    done = rd.data / "prepare.json"
    if done.is_file():
        return read_json(done)
    from xelm.data.prepare import TokenizerPlan, prepare_corpus

    plan = TokenizerPlan(base=cfg.model.base, trust_remote_code=cfg.model.trust_remote_code,
                         vocab_size=cfg.tokenizer.vocab_size,
                         sample_bytes_per_language=cfg.tokenizer.sample_bytes_per_language)
    return prepare_corpus(cfg.corpus, rd.data, seed=split_seed(cfg), tokenizer=plan,
                          synthetic_dir=_synthetic_dir(cfg, rd), workers=cfg.corpus.num_proc)


def _synthetic_dir(cfg: Config, rd: RunDir) -> Path | None:
    if cfg.corpus.source != "synthetic":
        return None
    from xelm.data.synthetic import write_corpus

    out = rd.data / "synthetic"
    if not (out / "languages.json").is_file():
        syn = cfg.corpus.synthetic
        write_corpus(out, syn.languages, syn.bytes_per_language, seed=cfg.random_seed)
    return out


def split_seed(cfg: Config) -> int:
    """The seed of the held-out split: ``corpus.split_seed``, else ``random_seed``."""
    seed = cfg.corpus.split_seed
    return cfg.random_seed if seed is None else seed


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- seed
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


def _job(cfg: Config, rd: RunDir, name: str, out_dir: Path, languages: list[str], tokens: int,
         optim, init: Path | None, seed_offset: int, shard: Path | None = None):
    from xelm.data.tokenizer import load_tokenizer
    from xelm.train.loop import TrainJob

    info = read_json(rd.data / "prepare.json")
    if shard is not None:
        shards, weights = [(shard, info["dtype"])], [1.0]
    else:
        from xelm.data.packing import shard_path

        counts = {lang: info["stats"][lang]["train"]["tokens"] for lang in languages}
        w = language_weights(counts, cfg.train.alpha)
        shards = [(shard_path(rd.data, lang, "train"), info["dtype"]) for lang in languages]
        weights = [w[lang] for lang in languages]
    from xelm.data.packing import shard_path

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
                    tensorboard_dir=rd.root / "tensorboard", tokenizer_dir=rd.tokenizer,
                    grad_accum_steps=cfg.train.grad_accum_steps,
                    gradient_checkpointing=cfg.train.gradient_checkpointing)


def seed(cfg: Config, rd: RunDir) -> dict:
    """The seed model: ``model.base`` imported, or pretrained on all languages."""
    from xelm.train.loop import is_done, run_job

    if is_done(rd.seed):
        return read_json(rd.seed / "train_state.json")
    _threads(cfg)
    if cfg.model.base:
        return _import_base(cfg, rd)
    info = read_json(rd.data / "prepare.json")
    return run_job(_job(cfg, rd, "seed", rd.seed, info["languages"], cfg.seed.tokens,
                        cfg.seed, None, 0))


def _import_base(cfg: Config, rd: RunDir) -> dict:
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
    write_json(rd.seed / "train_state.json", ledger)
    return ledger


def _threads(cfg: Config) -> None:
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)


# --------------------------------------------------------------------------- allocate
def allocate(cfg: Config, rd: RunDir) -> dict:
    """Languages or documents -> experts (``allocation.json``)."""
    if rd.allocation.is_file():
        return read_json(rd.allocation)
    from xelm.allocate import allocation as al

    info = read_json(rd.data / "prepare.json")
    languages = info["languages"]
    if cfg.allocate.method == "tfidf":
        result = _allocate_tfidf(cfg, rd, languages)
    else:
        groups, tree = al.language_groups(cfg.allocate, languages, _features_file(cfg, rd))
        result = al.from_groups(cfg.allocate.method, groups, tree)
        from xelm.extras import installed

        if tree is not None and installed("matplotlib"):  # the tree before any training
            from xelm.allocate.typology import TypologyTree, plot_dendrogram

            plot_dendrogram(TypologyTree.from_dict(tree), rd.plots / "typology.png")
        result["router"] = _group_router(cfg, rd, result)
    write_json(rd.allocation, result)
    for name, spec in result["experts"].items():
        log.info("expert %s: %s", name, " ".join(spec["languages"]))
    return result


def _group_router(cfg: Config, rd: RunDir, result: dict) -> str:
    """A TF-IDF router whose centres are the experts' training documents (c-BTM routing
    for language or typology experts); fitted on at most ``allocate.fit_docs`` documents."""
    from xelm.allocate.tfidf import TfidfRouter

    names = list(result["experts"])
    texts, groups = [], []
    for lang, expert in result["language_to_expert"].items():
        docs = read_lines(rd.data / "text" / f"{lang}.train.txt")
        texts += docs
        groups += [names.index(expert)] * len(docs)
    rng = np.random.default_rng(cfg.random_seed)
    keep = np.sort(rng.permutation(len(texts))[: cfg.allocate.fit_docs])
    a = cfg.allocate
    router = TfidfRouter.from_groups([texts[i] for i in keep], np.asarray(groups)[keep],
                                     analyzer=a.analyzer, ngram_range=tuple(a.ngram_range),
                                     max_features=a.max_features)
    router.save(rd.root / "router")
    return "router"


def _features_file(cfg: Config, rd: RunDir) -> str | None:
    if cfg.allocate.features_file:
        return cfg.allocate.features_file
    if cfg.corpus.source == "synthetic":
        return str(rd.data / "synthetic" / "features.csv")
    return None


def _allocate_tfidf(cfg: Config, rd: RunDir, languages: list[str]) -> dict:
    """Cluster the training documents; each cluster's shard reuses the packed tokens.

    Streamed (:func:`xelm.allocate.tfidf.allocate_tfidf_stream`): the router is fitted on
    ``allocate.fit_docs`` documents, the others are read and routed in batches, and the
    cluster shards are copied from the language shards a block of documents at a time.
    """
    from xelm.allocate import allocation as al
    from xelm.allocate.tfidf import allocate_tfidf_stream
    from xelm.data.packing import Shard, regroup, shard_path, text_batches

    dtype = read_json(rd.data / "prepare.json")["dtype"]
    shards = [Shard(shard_path(rd.data, lang, "train"), dtype) for lang in languages]
    ends = [shard.documents[:, 0] for shard in shards]
    counts = np.concatenate([np.diff(e, prepend=0) for e in ends])
    langs = [lang for lang, e in zip(languages, ends) for _ in range(len(e))]
    texts = [rd.data / "text" / f"{lang}.train.txt" for lang in languages]
    a = cfg.allocate
    assign, router = allocate_tfidf_stream(
        lambda: text_batches(texts), counts, a.experts, fit_docs=a.fit_docs,
        seed=cfg.random_seed, analyzer=a.analyzer, ngram_range=tuple(a.ngram_range),
        max_features=a.max_features)
    router.save(rd.root / "router")
    result = al.from_clusters(assign, langs, counts, a.experts)
    regroup(shards, assign, [al.cluster_shard(rd.data, name) for name in result["experts"]])
    result["router"] = "router"
    return result


# --------------------------------------------------------------------------- train
def expert_budget(cfg: Config, k: int) -> int:
    """Tokens per expert: ``train.tokens / k`` rounded down to whole optimizer steps.

    The dense baseline then gets exactly ``k`` times this, so both sides of the
    comparison consume the same number of training tokens, not just nearly.
    """
    one_batch = cfg.train.batch_size * cfg.model.context
    steps = cfg.train.tokens // k // one_batch
    if steps < 1:
        raise ValueError(f"train.tokens={cfg.train.tokens:,} split over {k} experts gives "
                         f"{cfg.train.tokens // k:,} tokens each, less than one batch "
                         f"({cfg.train.batch_size} x {cfg.model.context} = {one_batch:,}); "
                         "raise train.tokens or use fewer experts")
    return steps * one_batch


def train(cfg: Config, rd: RunDir) -> dict:
    """The dense baseline and every expert, then ``xelm.json``.

    Flat x-BTM branches every expert from the seed. With ``hmr.rounds`` the experts are
    trained round by round, each branching from its parent of the round before
    (:mod:`xelm.train.plan`); the final round is the expert set and the dense baseline
    gets the tokens of all rounds together.
    """
    from xelm.experts.manifest import write_manifest
    from xelm.train.budget import format_ledgers

    _threads(cfg)
    info, alloc = read_json(rd.data / "prepare.json"), read_json(rd.allocation)
    plan = _training_plan(cfg, alloc, info)
    dense_optim = cfg.train.model_copy(update={"lr": cfg.train.dense_lr or cfg.train.lr})
    dense = _job(cfg, rd, "dense", rd.dense, info["languages"], plan.dense_tokens, dense_optim,
                 rd.seed, 1)
    ledgers: dict = {}
    for r, planned in enumerate(plan.rounds):
        jobs = [dense] if r == 0 else []
        jobs += [_expert_job(cfg, rd, alloc, e) for e in planned]
        ledgers.update(_run_round(cfg, jobs))
    if ledgers["dense"]["tokens"] != plan.dense_tokens:
        log.warning("dense/ was trained on %s tokens but this plan gives the experts %s: the "
                    "comparison is not at equal budget", f"{ledgers['dense']['tokens']:,}",
                    f"{plan.dense_tokens:,}")
    log.info("training compute:\n%s", format_ledgers(ledgers))
    experts = [_manifest_entry(plan, e, ledgers) for e in plan.final]
    language_map = dict(alloc["language_to_expert"])
    manifest = rd.root / "xelm.json"
    if manifest.is_file():  # experts added later by `xelm adapt` stay in the set
        old = read_json(manifest)
        added = [e for e in old["experts"] if e.get("adapted_language")]
        experts += added
        language_map.update({e["adapted_language"]: e["name"] for e in added})
    write_manifest(rd.root, experts, "data/tokenizer",
                   language_to_expert=language_map, tfidf=alloc.get("router"))
    return ledgers


def _training_plan(cfg: Config, alloc: dict, info: dict):
    """Flat x-BTM as a one-round plan from the seed (``train.expert_budget``: equal, or in
    proportion to each expert's share of dense training), or the HMR plan of ``hmr.rounds``."""
    from xelm.train import plan as p

    one_batch, mode = cfg.train.batch_size * cfg.model.context, cfg.train.expert_budget
    if cfg.hmr.rounds:
        if mode == "proportional":
            raise p.PlanError("train.expert_budget=proportional is for flat x-BTM; with "
                              "hmr.rounds each round splits its budget equally")
        plan = p.plan_for_run(alloc, cfg.hmr.rounds, cfg.hmr.fractions(), cfg.train.tokens,
                              one_batch)
        log.info("HMR plan:\n%s", p.format_plan(plan))
        return plan
    counts = {lang: stats["train"]["tokens"] for lang, stats in info["stats"].items()}
    shares = (p.group_shares(alloc, language_weights(counts, cfg.train.alpha))
              if mode == "proportional" else None)
    return p.flat_plan(alloc, expert_budget(cfg, len(alloc["experts"])), one_batch, shares)


def _expert_job(cfg: Config, rd: RunDir, alloc: dict, expert):
    from xelm.allocate.allocation import cluster_shard

    shard = cluster_shard(rd.data, expert.name) if alloc["method"] == "tfidf" else None
    init = rd.seed if expert.parent == "seed" else rd.experts / expert.parent
    return _job(cfg, rd, expert.name, rd.root / expert.path, list(expert.languages),
                expert.tokens, cfg.train, init, expert.seed_offset, shard=shard)


def _run_round(cfg: Config, jobs: list) -> dict:
    """Run one round's jobs; raise only after all of them ended (a later round needs them)."""
    from xelm.train.launch import JobsFailed, run_jobs

    t = cfg.train
    ledgers, failed = run_jobs(jobs, launcher=t.launcher, parallel=t.parallel,
                               resources=t.resources_per_expert, address=t.ray_address,
                               threads=t.threads, slurm=t.slurm,
                               slurm_folder=Path(cfg.out_dir) / "slurm")
    if failed:
        raise JobsFailed(failed)
    return ledgers


def _manifest_entry(plan, expert, ledgers: dict) -> dict:
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
