"""``xelm tasks build``: an offline lm-eval task folder from held-out documents."""

from __future__ import annotations

from pathlib import Path


def build_task_folder(kind: str, corpus: str | None, out: str, *, force: bool = False,
                      languages: list[str] | None = None, pairs: str | None = None,
                      n: int | None = None, seed: int = 0, choices: int = 4,
                      fewshot_docs: int | None = None, tokenizer: str | None = None,
                      max_continuation_tokens: int | None = None,
                      source_lang: str | None = None) -> str:
    """Write the tasks of ``kind`` (cloze, minimal-pairs, xnli, xstorycloze) to ``out``
    (a new, empty or earlier task folder); return the summary to print."""
    from xelm.outputs import claim_out_dir

    if corpus is None and kind in ("cloze", "minimal-pairs"):
        raise ValueError(f"--kind {kind} needs --corpus (a run directory or a folder of "
                         "held-out text)")
    claim_out_dir(out, "tasks build", force=force)
    if kind == "minimal-pairs":
        from xelm.evaluate.minimal_pairs import build_minimal_pairs, format_pairs_summary

        return format_pairs_summary(build_minimal_pairs(
            corpus, out, pairs=pairs, languages=languages, n=n or 300, seed=seed,
            max_tokens=max_continuation_tokens, tokenizer=tokenizer))
    if kind in ("xnli", "xstorycloze"):
        from xelm.evaluate.crosslingual import write_hub_crosslingual_tasks

        if not languages:
            raise ValueError(f"--kind {kind} needs --languages (the test languages)")
        got = write_hub_crosslingual_tasks(Path(out), kind, source_lang or "en", languages)
        return f"group {got['group']}: {', '.join(got['tasks'].values())} in {out}"
    from xelm.evaluate.tasks import build_tasks, format_summary

    return format_summary(build_tasks(
        corpus, out, choices=choices, n=n or 200, fewshot_docs=fewshot_docs, seed=seed,
        languages=languages, tokenizer=tokenizer,
        max_continuation_tokens=max_continuation_tokens, source_lang=source_lang))
