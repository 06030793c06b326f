"""An offline multilingual task family for lm-eval: XStoryCloze-style continuation choice.

Each example is built from one held-out document: the context is its first few
sentences, the choices are the true next sentence and ``choices - 1`` distractors, the
next sentences of *other* held-out documents of the same language (so a model must use
the context, not the language, to pick). One lm-eval task per language
(``xelm_cloze_<lang>``, metrics ``acc`` and ``acc_norm``) plus the group ``xelm_cloze``,
written as task YAMLs over local jsonl files, so they run without the hub::

    OUT/xelm_cloze_<lang>.yaml     task (dataset_path: json, data_files relative to OUT)
    OUT/_xelm_cloze.yaml           group
    OUT/data/<lang>.test.jsonl     {"id", "lang", "context", "choices", "label"}
    OUT/data/<lang>.fewshot.jsonl  same, from documents disjoint from the test ones
    OUT/tasks.json                 what was built: counts per language, parameters
    OUT/xelm_cloze_data.py         the loader lm-eval imports from beside the YAMLs

With ``source_lang``, also the cross-lingual few-shot variant
(:mod:`xelm.evaluate.crosslingual`): ``xelm_cloze_x_<source>_<lang>`` tests ``<lang>``
with demonstrations from ``<source>``'s few-shot split. Everything is a function of the
documents and ``seed``; the folder can be moved (paths are relative to it).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

from xelm.evaluate.task_files import (GROUP, LOADER, LOADER_LINE, LOADER_SOURCE,  # noqa: F401
                                      dump_yaml, group_config, jsonl, task_config, task_name,
                                      write_loader)
from xelm.io import atomic_write_text, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")

_ENDS = ".!?…।॥։؟۔።"           # end a sentence when whitespace (or the end) follows
_ENDS_CJK = "。！？．"           # end a sentence even with no space after
_CLOSERS = "\"'”’»」』)]"
_BOUNDARY = re.compile(rf"[{re.escape(_ENDS + _ENDS_CJK)}]+[{re.escape(_CLOSERS)}]*(?:\s+|$)"
                       rf"|[{_ENDS_CJK}]+[{re.escape(_CLOSERS)}]*")
FALLBACK_CONTEXT_UNITS = 64      # words (or characters in unspaced text) when no sentences
FALLBACK_CONTINUATION_UNITS = 24


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, trimmed of surrounding whitespace."""
    spans, start = [], 0
    for match in _BOUNDARY.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((a + lead, a + len(piece.rstrip())))
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (Latin, Devanagari, Armenian, Arabic, CJK ... punctuation)."""
    return [text[a:b] for a, b in sentence_spans(text)]


def context_and_continuation(doc: str, context_sentences: int = 3) -> tuple[str, str] | None:
    """The first ``context_sentences`` sentences (fewer if the document is short) and the
    sentence after them. Text without sentence ends: the first half of its words (up to
    64; characters if it has no spaces) and the next up to 24. None if too short."""
    spans = sentence_spans(doc)
    if len(spans) >= 2:
        k = min(context_sentences, len(spans) - 1)
        return doc[spans[0][0]:spans[k - 1][1]], doc[spans[k][0]:spans[k][1]]
    words = doc.split()
    units, joiner = (words, " ") if len(words) > 1 else (list(doc.strip()), "")
    if len(units) < 4:
        return None
    half = min(len(units) // 2, FALLBACK_CONTEXT_UNITS)
    return (joiner.join(units[:half]),
            joiner.join(units[half:half + FALLBACK_CONTINUATION_UNITS]))


def _candidates(docs: list[str], context_sentences: int,
                fits=None) -> list[tuple[int, str, str]]:
    """``(doc_index, context, continuation)``, each continuation text once (so a
    distractor never equals the true answer) and each context once; ``fits(text)`` False
    drops a continuation (too long for the model)."""
    seen_cont, seen_ctx, out = set(), set(), []
    for i, doc in enumerate(docs):
        pair = context_and_continuation(doc.strip(), context_sentences)
        if pair is None or pair[1] in seen_cont or pair[0] in seen_ctx \
                or (fits is not None and not fits(pair[1])):
            continue
        seen_cont.add(pair[1])
        seen_ctx.add(pair[0])
        out.append((i, *pair))
    return out


def _examples(items, pool, lang: str, split: str, choices: int, rng: random.Random) -> list[dict]:
    out = []
    for doc_index, context, true in items:
        others = [cont for j, _, cont in pool if j != doc_index]
        options = [true, *rng.sample(others, choices - 1)]
        rng.shuffle(options)
        out.append({"id": f"{lang}-{split}-{doc_index}", "lang": lang, "doc_index": doc_index,
                    "context": context, "choices": options, "label": options.index(true)})
    return out


def build_language(docs: list[str], lang: str, *, choices: int = 4, n: int = 200,
                   fewshot_docs: int = 16, seed: int = 0, context_sentences: int = 3,
                   fits=None) -> dict[str, list[dict]]:
    """``{"test": [...], "fewshot": [...]}`` examples of one language.

    The usable documents are shuffled (seeded by ``seed`` and ``lang``); the first
    ``fewshot_docs`` (at most a quarter, at least ``choices``) become the few-shot split,
    the next ``n`` the test split. Distractors come from the same split's documents, so
    the two splits share no text. Documents whose continuation fails ``fits`` are not
    used. Raises ValueError when there are fewer than ``2 * choices`` usable documents.
    """
    if choices < 2:
        raise ValueError(f"choices must be >= 2, got {choices}")
    cands = _candidates(docs, context_sentences, fits)
    if len(cands) < 2 * choices:
        fix = (f"--choices {len(cands) // 2} would work" if len(cands) >= 4 else
               "too few even for --choices 2: give it more held-out text")
        raise ValueError(f"language {lang}: {len(cands)} usable held-out documents, need at "
                         f"least {2 * choices} for {choices} choices and a few-shot split "
                         f"({fix})")
    rng = random.Random(f"xelm-cloze/{seed}/{lang}")
    rng.shuffle(cands)
    n_few = max(choices, min(fewshot_docs, len(cands) // 4))
    few, rest = cands[:n_few], cands[n_few:]
    return {"test": _examples(rest[:n], rest, lang, "test", choices, rng),
            "fewshot": _examples(few, few, lang, "fewshot", choices, rng)}


# --------------------------------------------------------------------------- files
def read_heldout(corpus: str | Path, languages: list[str] | None = None) -> dict[str, list[str]]:
    """Held-out documents per language, one per line, from a run directory
    (``RUN/data/text/<lang>.test.txt``), a folder of ``<lang>.test.txt`` or a folder of
    ``<lang>.txt``. ``languages`` restricts (and orders) them."""
    corpus = Path(corpus)
    if RunDir(corpus).text_dir.is_dir():
        corpus = RunDir(corpus).text_dir
    if not corpus.is_dir():
        raise ValueError(f"corpus {str(corpus)!r} is not a directory")
    files = {p.name[:-len(".test.txt")]: p for p in corpus.glob("*.test.txt")} or \
        {p.stem: p for p in corpus.glob("*.txt") if "." not in p.stem}
    if not files:
        raise ValueError(f"no <lang>.test.txt or <lang>.txt files in {str(corpus)!r}")
    wanted = languages or sorted(files)
    missing = [lang for lang in wanted if lang not in files]
    if missing:
        raise ValueError(f"no held-out text for {missing} in {str(corpus)!r}; it has "
                         f"{', '.join(sorted(files))}")
    return {lang: [line for line in files[lang].read_text(encoding="utf-8").splitlines()
                   if line.strip()] for lang in wanted}


def fits_within(tokenizer, max_tokens: int | None):
    """A test ``text -> bool``: at most ``max_tokens`` tokens after a space (None: no test)."""
    if max_tokens is None:
        return None
    if tokenizer is None:
        raise ValueError("max_continuation_tokens needs the tokenizer (--tokenizer DIR, or a "
                         "run directory as --corpus)")
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    return lambda text: len(tokenizer.encode(" " + text, add_special_tokens=False)) <= max_tokens


def _write_language(out: Path, lang: str, splits: dict[str, list[dict]]) -> None:
    files = {split: f"data/{lang}.{split}.jsonl" for split in splits}
    for split, rows in splits.items():
        atomic_write_text(out / files[split], jsonl(rows))
    dump_yaml(out / f"{task_name(lang)}.yaml", task_config(lang, files["test"], files["fewshot"]),
              extra=LOADER_LINE)


def build_tasks(corpus: str | Path, out: str | Path, *, languages: list[str] | None = None,
                choices: int = 4, n: int = 200, fewshot_docs: int = 16, seed: int = 0,
                context_sentences: int = 3, max_continuation_tokens: int | None = None,
                tokenizer=None, source_lang: str | None = None) -> dict:
    """Write the task family for ``corpus``'s held-out documents into ``out``.

    With ``max_continuation_tokens``, documents whose continuation (as lm-eval scores
    it, after a space) takes more tokens of ``tokenizer`` (a tokenizer or its folder)
    are not used, so every choice fits a model with a short context.

    Languages with too few documents are skipped (listed under ``skipped``); none left
    is an error. Returns (and writes as ``out/tasks.json``) the summary:
    ``{"group", "include_path", "tasks": {lang: task}, "n_examples": {lang: n},
    "n_fewshot": {lang: n}, "skipped": {lang: reason}, "choices", "seed", "source"}``,
    with ``source_lang`` also ``"crosslingual": {"source", "group", "tasks": {lang: task}}``
    (ValueError when the source language has no task of its own).
    """
    if n < 1 or choices < 2:
        raise ValueError(f"need n >= 1 and choices >= 2, got n={n}, choices={choices}")
    docs = read_heldout(corpus, languages)
    run_tokenizer = RunDir(Path(corpus)).tokenizer
    fits = fits_within(tokenizer or (run_tokenizer if run_tokenizer.is_dir() else None),
                 max_continuation_tokens)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(f"{GROUP}_*.yaml"), *out.glob(f"_{GROUP}_x_*.yaml")]:
        stale.unlink()  # an earlier build's languages
    summary = {"group": GROUP, "include_path": str(out.resolve()), "tasks": {},
               "n_examples": {}, "n_fewshot": {}, "skipped": {}, "choices": choices,
               "seed": seed, "context_sentences": context_sentences,
               "max_continuation_tokens": max_continuation_tokens,
               "source": str(Path(corpus).resolve())}
    for lang, lang_docs in docs.items():
        try:
            splits = build_language(lang_docs, lang, choices=choices, n=n,
                                    fewshot_docs=fewshot_docs, seed=seed,
                                    context_sentences=context_sentences, fits=fits)
        except ValueError as exc:
            log.warning("skipping %s", exc)
            summary["skipped"][lang] = str(exc)
            continue
        _write_language(out, lang, splits)
        summary["tasks"][lang] = task_name(lang)
        summary["n_examples"][lang] = len(splits["test"])
        summary["n_fewshot"][lang] = len(splits["fewshot"])
    if not summary["tasks"]:
        raise ValueError("no language has enough held-out documents for a task: "
                         + "; ".join(summary["skipped"].values()))
    if source_lang is not None:
        from xelm.evaluate.crosslingual import write_crosslingual_tasks

        summary["crosslingual"] = write_crosslingual_tasks(out, summary, source_lang)
    write_loader(out)
    dump_yaml(out / f"_{GROUP}.yaml", group_config(list(summary["tasks"])))
    write_json(out / "tasks.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """What ``xelm tasks build`` prints: the tasks, their sizes and how to run them."""
    lines = [f"{summary['tasks'][lang]}: {summary['n_examples'][lang]} examples, "
             f"{summary['n_fewshot'][lang]} few-shot" for lang in summary["tasks"]]
    lines += [f"skipped {lang}: {why}" for lang, why in summary["skipped"].items()]
    cross = summary.get("crosslingual")
    if cross:
        lines.append(f"group {cross['group']}: {len(cross['tasks'])} tasks, demonstrations in "
                     f"{cross['source']} (--num_fewshot 8; model_args route=target|source|"
                     f"ensemble,source_lang={cross['source']},lang=<test language>)")
    where = summary["include_path"]
    lines += [f"group {summary['group']} ({summary['choices']} choices) in {where}",
              "run: xelm lm-eval --model xelm --model_args run=RUN_DIR,method=ensemble_posterior "
              f"--tasks {summary['group']} --include_path {where} --num_fewshot 0"]
    return "\n".join(lines)
