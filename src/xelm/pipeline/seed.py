"""``xelm seed``: the seed model, ``model.base`` imported or pretrained on all languages."""

from __future__ import annotations

from xelm.config import Config
from xelm.io import read_json
from xelm.rundir import RunDir


def seed(cfg: Config, rd: RunDir) -> dict:
    """Write ``seed/`` (an HF folder) and return its ledger (``seed/train_state.json``)."""
    from xelm.train.jobs import import_base, set_threads, train_job
    from xelm.train.loop import is_done, run_job

    if is_done(rd.seed):
        return read_json(rd.seed_state)
    set_threads(cfg)
    if cfg.model.base:
        return import_base(cfg, rd)
    info = read_json(rd.prepare_json)
    return run_job(train_job(cfg, rd, "seed", rd.seed, info["languages"], cfg.seed.tokens,
                             cfg.seed, None, 0))
