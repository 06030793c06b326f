"""The ``report`` stage: ``report.md`` with its figures, model cards, the terminal table.

:func:`write_report` is the one writer of ``report.md`` (``xelm adapt`` calls it too).
"""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.io import atomic_write_text, read_json, write_json
from xelm.report.markdown import render, table
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def report(cfg: Config, rd: RunDir) -> str:
    results = read_json(rd.results)
    results["timing"] = rd.timing()
    write_json(rd.results, results)
    write_report(rd, results)
    from xelm.export.cards import write_model_cards

    write_model_cards(rd.root)  # README.md of every expert, dense and export (weights untouched)
    log.info("report: %s\n%s", rd.root / "report.md", table(results))
    return table(results)


def figures(rd: RunDir, results: dict) -> dict[str, str]:
    """Draw the report's figures; ``{caption: path relative to the run}``. Without the
    ``plots`` extra (matplotlib) there are none, and the report says how to get them."""
    from xelm.report import plots

    if not plots.available():
        return {}
    jobs = [("dense", rd.dense)] + [(name, rd.experts / name)
                                    for name in results["budget"]["expert_tokens"]]
    allocation = read_json(rd.allocation) if rd.allocation.is_file() else {}
    drawn = {"change against dense, per language and method":
             plots.change_vs_dense(results, rd.plots / "change.png"),
             "training and validation loss of dense and every expert":
             plots.training_curves(rd.root, jobs, rd.plots / "curves.png"),
             "typology tree, each expert's group in its colour":
             plots.typology_tree(allocation, rd.plots / "typology.png")}
    return {caption: path.relative_to(rd.root).as_posix()
            for caption, path in drawn.items() if path is not None}


def write_report(rd: RunDir, results: dict) -> None:
    from xelm.report import plots

    allocation = read_json(rd.allocation) if rd.allocation.is_file() else {}
    text = render(results, f"x-ELM run: {rd.root.name}", figures=figures(rd, results),
                  colours=plots.group_colours(allocation) if plots.available() else {},
                  plots_missing=not plots.available())
    atomic_write_text(rd.root / "report.md", text)
