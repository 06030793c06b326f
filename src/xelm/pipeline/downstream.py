"""``xelm eval --downstream``: in-context continuation choice through lm-eval, the
``downstream`` section of ``results.json`` and of ``report.md``."""

from __future__ import annotations

from xelm.config import Config
from xelm.rundir import RunDir


def downstream(cfg: Config, rd: RunDir, **options) -> dict:
    """Evaluate (:func:`xelm.evaluate.downstream.downstream_entry`, resuming from its
    cache), set ``results.json["downstream"]`` and the report's section; return it."""
    from xelm.evaluate.downstream import downstream_entry
    from xelm.report.downstream import SECTION, markdown_section
    from xelm.report.results import replace_report_section, set_section

    entry = downstream_entry(cfg, rd, **options)
    set_section(rd, "downstream", entry)
    replace_report_section(rd, SECTION, markdown_section(entry))
    return entry
