"""``xelm train``: the dense baseline and every expert from the seed, then ``xelm.json``.

Flat x-BTM branches every expert from the seed. With ``hmr.rounds`` the experts are
trained round by round, each branching from its parent of the round before
(:mod:`xelm.train.plan`); the final round is the expert set and the dense baseline gets
the tokens of all rounds together.
"""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.io import read_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def train(cfg: Config, rd: RunDir) -> dict:
    """Train (resuming finished or interrupted jobs), write ``xelm.json``; return the ledgers."""
    from xelm.experts.manifest import write_manifest
    from xelm.train.budget import format_ledgers
    from xelm.train.jobs import (expert_job, manifest_entry, run_round, set_threads,
                                 train_job, training_plan)

    set_threads(cfg)
    info, alloc = read_json(rd.prepare_json), read_json(rd.allocation)
    plan = training_plan(cfg, alloc, info)
    dense_optim = cfg.train.model_copy(update={"lr": cfg.train.dense_lr or cfg.train.lr})
    dense = train_job(cfg, rd, "dense", rd.dense, info["languages"], plan.dense_tokens,
                      dense_optim, rd.seed, 1)
    ledgers: dict = {}
    for r, planned in enumerate(plan.rounds):
        jobs = [dense] if r == 0 else []
        jobs += [expert_job(cfg, rd, alloc, e) for e in planned]
        ledgers.update(run_round(cfg, jobs))
    if ledgers["dense"]["tokens"] != plan.dense_tokens:
        log.warning("dense/ was trained on %s tokens but this plan gives the experts %s: the "
                    "comparison is not at equal budget", f"{ledgers['dense']['tokens']:,}",
                    f"{plan.dense_tokens:,}")
    log.info("training compute:\n%s", format_ledgers(ledgers))
    experts = [manifest_entry(plan, e, ledgers) for e in plan.final]
    language_map = dict(alloc["language_to_expert"])
    if rd.manifest.is_file():  # experts added later by `xelm adapt` stay in the set
        added = [e for e in read_json(rd.manifest)["experts"] if e.get("adapted_language")]
        experts += added
        language_map.update({e["adapted_language"]: e["name"] for e in added})
    write_manifest(rd.root, experts, "data/tokenizer",
                   language_to_expert=language_map, tfidf=alloc.get("router"))
    return ledgers
