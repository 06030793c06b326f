"""``xelm report``: ``report.md`` with its figures, model cards, the terminal table."""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def report(cfg: Config, rd: RunDir) -> str:
    """Record the stages' times, write ``report.md`` and the model cards; return the table."""
    from xelm.export.cards import write_model_cards
    from xelm.report.markdown import gains, table
    from xelm.report.results import write_report, write_timing

    results = write_timing(rd)
    write_report(rd, results)
    write_model_cards(rd.root)  # README.md of every expert, dense and export (weights untouched)
    # the table goes to stdout (the console showed it twice); the log gets the verdict
    ppl = results.get("perplexity", {})
    wins = gains(results) if "xelm_top1" in ppl and "dense" in ppl else {}
    better = sum(1 for g in wins.values() if g > 0)
    log.info("report: %s%s", rd.report_md,
             f" (x-ELM top-1 better than dense on {better}/{len(wins)} languages)" if wins else "")
    return table(results)
