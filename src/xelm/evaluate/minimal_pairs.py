"""Minimal-pair tasks for lm-eval (BLiMP / MultiBLiMP style): ``xelm tasks build --kind
minimal-pairs``.

A pair is a well-formed sentence and a copy that differs in one controlled way; the model
is right when it gives the well-formed one the higher log-probability (lm-eval's
loglikelihood comparison of two choices after an empty context, as BLiMP's tasks do:
each sentence is scored as the start of a document). Two sources:

* ``grammar`` -- a synthetic corpus (a run directory or a folder with the generator's
  ``languages.json``): pairs from the generator's grammar, one phenomenon at a time
  (:mod:`xelm.evaluate.pairs_synthetic`);
* ``text`` -- any held-out text (a run directory or a folder of ``<lang>.test.txt`` /
  ``<lang>.txt``): perturbed held-out sentences (:mod:`xelm.evaluate.pairs_text`).

Files, as the cloze family writes them (relative paths, the same loader module)::

    OUT/xelm_pairs_<lang>_<phenomenon>.yaml   one task (metric acc)
    OUT/_xelm_pairs_<lang>.yaml                group: one language's tasks
    OUT/_xelm_pairs.yaml                       group: every task
    OUT/data/<lang>.<phenomenon>.jsonl         {"id", "lang", "phenomenon", "good", "bad", ...}
    OUT/pairs.json                             what was built (counts, skips, parameters)
"""

from __future__ import annotations

import logging
from pathlib import Path

from xelm.evaluate.tasks import (LOADER_LINE, dump_yaml, fits_within, jsonl, read_heldout,
                                 write_loader)
from xelm.io import atomic_write_text, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")

GROUP = "xelm_pairs"
SOURCES = ("auto", "grammar", "text")


def pair_task_name(lang: str, phenomenon: str) -> str:
    return f"{GROUP}_{lang}_{phenomenon}"


def language_group(lang: str) -> str:
    return f"{GROUP}_{lang}"


def pair_task_config(lang: str, phenomenon: str, data_file: str, source: str) -> dict:
    """The lm-eval YAML of one (language, phenomenon): two choices, the good one first."""
    return {"task": pair_task_name(lang, phenomenon), "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": data_file}}, "test_split": "test",
            "output_type": "multiple_choice", "doc_to_text": "", "target_delimiter": "",
            "doc_to_target": 0, "doc_to_choice": "{{[good, bad]}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "lang": lang, "phenomenon": phenomenon,
                         "source": source}}


def _group(name: str, tasks: list[str]) -> dict:
    return {"group": name, "task": tasks, "aggregate_metric_list": [
        {"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
        "metadata": {"version": 1.0}}


def _grammar_pairs(corpus: Path, languages, n: int, seed: int):
    from xelm.evaluate.pairs_synthetic import build_synthetic_pairs, read_languages

    synthetic = read_languages(corpus)
    if synthetic is None:
        raise ValueError(f"{str(corpus)!r} is not a synthetic corpus (no languages.json, nor "
                         "data/synthetic/languages.json in a run): use --pairs text")
    return build_synthetic_pairs(synthetic, n=n, seed=seed, only=languages)


def _text_pairs(corpus: Path, languages, n: int, seed: int, fits):
    from xelm.evaluate.pairs_text import PERTURBATIONS, LanguageText, text_pairs

    docs = read_heldout(corpus, languages)
    run = RunDir(corpus)
    texts = {}
    for lang, lang_docs in docs.items():
        seen = run.text(lang, "train")  # a run's training text: words it has seen
        vocab = seen.read_text(encoding="utf-8").splitlines() if seen.is_file() else ()
        texts[lang] = LanguageText(lang, lang_docs, fits=fits, vocab_docs=vocab)
    pairs: dict = {}
    skipped: dict = {}
    for lang, text in texts.items():
        for name in PERTURBATIONS:
            try:
                rows = text_pairs(text, name, n, seed, others=list(texts.values()))
            except ValueError as exc:
                skipped.setdefault(lang, {})[name] = str(exc).split(": ", 1)[1]
                continue
            if rows:
                pairs.setdefault(lang, {})[name] = rows
            else:
                skipped.setdefault(lang, {})[name] = "no held-out sentence gave a pair"
    return pairs, skipped


def build_minimal_pairs(corpus: str | Path, out: str | Path, *, pairs: str = "auto",
                        languages: list[str] | None = None, n: int = 300, seed: int = 0,
                        max_tokens: int | None = None, tokenizer=None) -> dict:
    """Write the minimal-pair task family of ``corpus`` into ``out`` (a folder the caller
    claimed, e.g. with :func:`xelm.outputs.claim_out_dir`).

    ``pairs``: ``grammar`` (synthetic corpora), ``text`` (any held-out text) or ``auto``
    (grammar when the corpus is synthetic). ``n`` pairs per language and phenomenon at
    most. With ``max_tokens``, pairs whose good or bad sentence takes more tokens of
    ``tokenizer`` (default: the run's) are dropped, so both fit a short-context model; for
    a run directory it defaults to the run's ``model.context`` minus 2 (the prefix token
    and a margin for the leading space the budget is counted with).
    Returns (and writes as ``out/pairs.json``) ``{"group", "include_path", "pairs",
    "tasks": {lang: {phenomenon: task}}, "groups": {lang: group}, "n_pairs": {lang:
    {phenomenon: n}}, "skipped": {lang: {phenomenon: why}}, "seed", "source"}``.
    """
    if pairs not in SOURCES:
        raise ValueError(f"pairs={pairs!r}: choose from {', '.join(SOURCES)}")
    if n < 1:
        raise ValueError(f"need n >= 1 pairs per task, got {n}")
    corpus, out = Path(corpus), Path(out)
    if not corpus.is_dir():
        raise ValueError(f"corpus {str(corpus)!r} is not a directory")
    run = RunDir(corpus)
    run_tokenizer = run.tokenizer
    if max_tokens is None and run.config_yaml.is_file() and run_tokenizer.is_dir():
        import yaml  # a run: both sentences of a pair must fit its models' positions

        config = yaml.safe_load(run.config_yaml.read_text(encoding="utf-8"))
        max_tokens = max(1, int(config["model"]["context"]) - 2)
    fits = fits_within(tokenizer or (run_tokenizer if run_tokenizer.is_dir() else None),
                       max_tokens)
    if pairs == "auto":
        from xelm.evaluate.pairs_synthetic import read_languages

        pairs = "grammar" if read_languages(corpus) is not None else "text"
    if pairs == "grammar":
        built, skipped = _grammar_pairs(corpus, languages, n, seed)
        if fits is not None:
            built = {lang: {ph: [r for r in rows if fits(r["good"]) and fits(r["bad"])]
                            for ph, rows in per.items()} for lang, per in built.items()}
    else:
        built, skipped = _text_pairs(corpus, languages, n, seed, fits)
    return _write(out, built, skipped, pairs=pairs, seed=seed, corpus=corpus,
                  max_tokens=max_tokens)


def _write(out: Path, built: dict, skipped: dict, **params) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    from xelm.evaluate.pairs_synthetic import PHENOMENA
    from xelm.evaluate.pairs_text import PERTURBATIONS

    ours = {f".{name}.jsonl" for name in (*PHENOMENA, *PERTURBATIONS)}
    for stale in [*out.glob(f"{GROUP}_*.yaml"), *out.glob(f"_{GROUP}*.yaml"),
                  *(p for p in out.glob("data/*.jsonl") if p.name[p.name.index("."):] in ours)]:
        stale.unlink()  # an earlier build's languages and phenomena (cloze files stay)
    summary = {"group": GROUP, "include_path": str(out.resolve()), "pairs": params["pairs"],
               "tasks": {}, "groups": {}, "n_pairs": {}, "skipped": skipped,
               "seed": params["seed"], "max_tokens": params["max_tokens"],
               "source": str(params["corpus"].resolve())}
    for lang, per in built.items():
        for phenomenon, rows in per.items():
            if not rows:
                skipped.setdefault(lang, {})[phenomenon] = "no pair fits max_tokens"
                continue
            data = f"data/{lang}.{phenomenon}.jsonl"
            atomic_write_text(out / data, jsonl(rows))
            task = pair_task_name(lang, phenomenon)
            dump_yaml(out / f"{task}.yaml",
                      pair_task_config(lang, phenomenon, data, params["pairs"]),
                      extra=LOADER_LINE)
            summary["tasks"].setdefault(lang, {})[phenomenon] = task
            summary["n_pairs"].setdefault(lang, {})[phenomenon] = len(rows)
        if lang in summary["tasks"]:
            summary["groups"][lang] = language_group(lang)
            dump_yaml(out / f"_{language_group(lang)}.yaml",
                      _group(language_group(lang), list(summary["tasks"][lang].values())))
    if not summary["tasks"]:
        raise ValueError("no minimal pairs could be built: " + "; ".join(
            f"{lang} {ph}: {why}" for lang, per in skipped.items() for ph, why in per.items()))
    write_loader(out)
    dump_yaml(out / f"_{GROUP}.yaml", _group(GROUP, [t for per in summary["tasks"].values()
                                                     for t in per.values()]))
    write_json(out / "pairs.json", summary)
    return summary


def format_pairs_summary(summary: dict) -> str:
    """What ``xelm tasks build --kind minimal-pairs`` prints."""
    lines = []
    for lang, per in summary["tasks"].items():
        counts = ", ".join(f"{ph} {summary['n_pairs'][lang][ph]}" for ph in per)
        lines.append(f"{summary['groups'][lang]}: {counts}")
    for lang, per in summary["skipped"].items():
        lines += [f"skipped {lang} {ph}: {why}" for ph, why in per.items()]
    where = summary["include_path"]
    lines += [f"group {summary['group']} ({summary['pairs']} pairs) in {where}",
              "run: xelm lm-eval --model xelm --model_args run=RUN_DIR,method=top1,lang=LANG "
              f"--tasks {GROUP}_LANG --include_path {where}  (or --tasks {GROUP} with "
              "method=ensemble_posterior)"]
    return "\n".join(lines)
