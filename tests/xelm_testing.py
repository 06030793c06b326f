"""Shared test helpers: arguments for a tiny end-to-end run (importable: tests/ is on pythonpath)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Smaller still than configs/tiny.yaml: the end-to-end tests run the pipeline several times.
TINY = [
    "corpus.synthetic.languages=3", "corpus.synthetic.bytes_per_language=30000",
    "tokenizer.vocab_size=384",
    "model.hidden_size=32", "model.layers=1", "model.heads=2", "model.intermediate_size=64",
    "model.context=32",
    "seed.tokens=12000", "seed.batch_size=8",
    "train.tokens=24000", "train.batch_size=8", "train.save_every=5", "train.threads=1",
    "allocate.method=typology", "allocate.experts=2",
    "eval.methods=[top1, ensemble, ensemble_tfidf]", "eval.max_tokens_per_language=1500",
]


def tiny_args(out: Path, *extra: str) -> list[str]:
    """Arguments for ``xelm <cmd> configs/tiny.yaml`` with the test overrides."""
    args = [str(ROOT / "configs" / "tiny.yaml"), "--out", str(out)]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return args


def cli_fails(capsys, args: list[str], *fragments: str) -> str:
    """Run ``xelm ARGS``; assert it exits 2 with every fragment in the error message."""
    from xelm.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    return err


def dir_prepare_args(out: Path, corpus: Path, *extra: str) -> list[str]:
    """``xelm prepare`` on a directory corpus with the tiny overrides."""
    return ["prepare", *tiny_args(out, "corpus.source=dir", f"corpus.path={corpus}", *extra)]
