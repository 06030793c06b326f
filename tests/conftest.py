"""Shared fixtures: a tiny config over the synthetic corpus, run in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from xelm_testing import TINY, tiny_args  # noqa: F401,E402  (re-exported for old imports)


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A small real-format corpus directory: three languages of plain text."""
    d = tmp_path / "corpus"
    d.mkdir()
    texts = {"en": "the cat sat on the mat and looked at the dog {i}",
             "de": "die katze sass auf der matte und sah den hund an {i}",
             "fr": "le chat etait assis sur le tapis et regardait le chien {i}"}
    for lang, template in texts.items():
        (d / f"{lang}.txt").write_text("\n".join(template.format(i=i) for i in range(60)) + "\n",
                                       encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def finished_tiny_run(tmp_path_factory) -> Path:
    """`xelm run` of the tiny config, once per session. Tests only read it (or copy it
    before changing anything)."""
    from xelm.cli import main

    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["run", *tiny_args(out)]) == 0
    return out


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with two random experts (languages qa0, qb0 -> e0; qa1, qb1 -> e1)."""
    from xelm_tiny import make_run

    make_run(tmp_path)
    return tmp_path
