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


def run_downstream(cfg: Config, rd: RunDir) -> str:
    """``xelm eval --downstream`` after the eval stage: :func:`downstream`, timed as the
    ``downstream`` stage; return the report section to print."""
    from xelm.extras import require
    from xelm.report.downstream import markdown_section

    require("lm_eval", "xelm eval --downstream")
    with rd.timed("downstream"):
        return markdown_section(downstream(cfg, rd))
