"""The ``report`` stage: ``report.md``, ``plots/perplexity.png``, model cards, the terminal table."""

from __future__ import annotations

from xelm.config import Config
from xelm.io import atomic_write_text, read_json, write_json
from xelm.report.markdown import render, table
from xelm.report.plots import perplexity_bars
from xelm.rundir import RunDir


def report(cfg: Config, rd: RunDir) -> str:
    results = read_json(rd.results)
    results["timing"] = rd.timing()
    write_json(rd.results, results)
    perplexity_bars(results, rd.plots / "perplexity.png")
    atomic_write_text(rd.root / "report.md", render(results, f"x-ELM run: {rd.root.name}"))
    from xelm.export.cards import write_model_cards

    write_model_cards(rd.root)  # README.md of every expert, dense and export (weights untouched)
    return table(results)
