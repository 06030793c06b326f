"""``xelm prepare``: corpus -> splits -> tokenizer -> packed token shards (``data/``)."""

from __future__ import annotations

from pathlib import Path

from xelm.config import Config
from xelm.io import read_json
from xelm.rundir import RunDir


def prepare(cfg: Config, rd: RunDir) -> dict:
    """Write ``data/`` and its record ``data/prepare.json`` (returned).

    Streamed, on ``corpus.num_proc`` processes, and resumable after a kill at any point
    (:mod:`xelm.data.prepare`); the files are those of reading everything into memory.
    """
    if rd.prepare_json.is_file():
        return read_json(rd.prepare_json)
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

    if not (rd.synthetic / "languages.json").is_file():
        syn = cfg.corpus.synthetic
        write_corpus(rd.synthetic, syn.languages, syn.bytes_per_language, seed=cfg.random_seed)
    return rd.synthetic


def split_seed(cfg: Config) -> int:
    """The seed of the held-out split: ``corpus.split_seed``, else ``random_seed``."""
    seed = cfg.corpus.split_seed
    return cfg.random_seed if seed is None else seed
