"""The one writer of ``results.json`` and of ``report.md``.

``results.json`` (schema in DESIGN.md) has the ``eval`` stage's main section and one
section per other command (``adapt``, ``downstream``), each recording the eval settings
it was made with. :func:`write_eval` replaces the main section and keeps the other
sections made under the same settings; :func:`set_section` sets one section and keeps
the rest; :func:`write_timing` records the stages' times. :func:`write_report` renders
``report.md`` (with its figures) from ``results.json``, every section included;
:func:`replace_report_section` updates one section alone.
"""

from __future__ import annotations

import logging

from xelm.io import atomic_write_text, read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")

# Sections other commands add to results.json, each recording its own eval settings.
SECTIONS = ("adapt", "downstream")


def read_results(rd: RunDir) -> dict:
    return read_json(rd.results) if rd.results.is_file() else {}


def write_eval(rd: RunDir, results: dict) -> dict:
    """Write the ``eval`` stage's ``results``, keeping the other commands' sections that
    were made under the same eval settings (the others are dropped, with a warning)."""
    previous = read_results(rd)
    for name in SECTIONS:
        if name not in previous:
            continue
        if previous[name].get("eval_settings") == results["eval_settings"]:
            results[name] = previous[name]
        else:
            log.warning("results.json: dropped the %r section (made with other eval "
                        "settings); run its command again to rescore it", name)
    write_json(rd.results, results)
    return results


def set_section(rd: RunDir, name: str, entry: dict) -> dict:
    """Set ``results.json[name]`` (every other key kept); return the whole."""
    results = read_results(rd)
    results[name] = entry
    write_json(rd.results, results)
    return results


def write_timing(rd: RunDir) -> dict:
    """Set ``results.json["timing"]`` to the stages' times so far; return the whole."""
    results = read_json(rd.results)
    results["timing"] = rd.timing()
    write_json(rd.results, results)
    return results


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
             plots.typology_tree(allocation, rd.typology_plot)}
    return {caption: path.relative_to(rd.root).as_posix()
            for caption, path in drawn.items() if path is not None}


def replace_report_section(rd: RunDir, heading: str, section: str) -> None:
    """Replace (or append) the section of ``report.md`` that starts with ``heading``,
    leaving the rest as it is (``report.md`` may predate this section's results)."""
    path = rd.report_md
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if heading in text:
        head, _, tail = text.partition(heading)
        rest = tail.split("\n## ", 1)
        text = head + ("## " + rest[1] if len(rest) > 1 else "")
    atomic_write_text(path, text.rstrip("\n") + "\n\n" + section)


def write_report(rd: RunDir, results: dict) -> None:
    """Render ``report.md`` from ``results`` (every section present) with its figures."""
    from xelm.report import plots
    from xelm.report.markdown import render

    allocation = read_json(rd.allocation) if rd.allocation.is_file() else {}
    text = render(results, f"x-ELM run: {rd.root.name}", figures=figures(rd, results),
                  colours=plots.group_colours(allocation) if plots.available() else {},
                  plots_missing=not plots.available())
    atomic_write_text(rd.report_md, text)
