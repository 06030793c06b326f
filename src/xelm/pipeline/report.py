"""``xelm report``: ``report.md`` with its figures, model cards, the terminal table."""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def report(cfg: Config, rd: RunDir) -> str:
    """Record the stages' times, write ``report.md`` and the model cards; return the table."""
    from xelm.export.cards import write_model_cards
    from xelm.report.markdown import table
    from xelm.report.results import write_report, write_timing

    results = write_timing(rd)
    write_report(rd, results)
    write_model_cards(rd.root)  # README.md of every expert, dense and export (weights untouched)
    log.info("report: %s\n%s", rd.report_md, table(results))
    return table(results)
