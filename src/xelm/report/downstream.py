"""The report's "Downstream" section, from ``results.json["downstream"]``."""

from __future__ import annotations

import statistics

SECTION = "## Downstream"


def markdown_section(entry: dict) -> str:
    """The ``## Downstream`` section of ``report.md`` from ``results["downstream"]``."""
    acc, n = entry["accuracy"], entry["n_examples"]
    cols = [(model, shots) for model in acc for shots in acc[model]]
    head = "| language | n | " + " | ".join(f"{m} {s}-shot" for m, s in cols) + " |"
    rule = "|---" * (len(cols) + 2) + "|"
    rows = [f"| {lang} | {count} | " + " | ".join(f"{100 * acc[m][s][lang]:.1f}" for m, s in cols)
            + " |" for lang, count in n.items()]
    means = [statistics.fmean(acc[m][s][lang] for lang in n) for m, s in cols]
    rows.append(f"| mean | {sum(n.values())} | "
                + " | ".join(f"{100 * v:.1f}" for v in means) + " |")
    skipped = entry.get("skipped") or {}
    note = f" Skipped (too few held-out documents): {', '.join(skipped)}." if skipped else ""
    if entry.get("positions"):
        note += (f" Prompts are cut from the left to the models' {entry['positions']} "
                 "positions: few-shot examples that do not fit are lost.")
    return "\n".join([
        f"{SECTION} (continuation choice, accuracy %)", "",
        f"`xelm_cloze`: the first sentences of each held-out document and {entry['choices']} "
        f"candidate next sentences (distractors from other documents of the same language); "
        f"chance {100 * entry['chance']:.0f}%. n = test examples per language; few-shot "
        f"examples come from other documents.{note}", "",
        head, rule, *rows, ""])
