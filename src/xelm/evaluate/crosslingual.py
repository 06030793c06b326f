"""Cross-lingual prompting, as in the paper's released evaluation: the demonstrations in
one language (the *source*, English by default) and the test item in another (the
*target*), and a choice of which expert reads the whole prompt.

Tasks (written by ``build_tasks(..., source_lang=...)``): ``xelm_cloze_x_<src>_<tgt>``
tests ``<tgt>``'s items with few-shot examples drawn from ``<src>``'s few-shot split
(``--num_fewshot k``); the group ``xelm_cloze_x_<src>`` holds one per target language.

Routing (``XelmLM`` model_args ``route=``):

``route=target``    top-1: the expert of the test item's language (``lang=``)
``route=source``    top-1: the expert of the demonstrations' language (``source_lang=``)
``route=ensemble``  no label: BTM's posterior mixture (``method=ensemble_posterior``, or
                    another ensemble method given as ``method=``) over the whole prompt

``route`` only chooses the method and the language that picks the expert, so
``route=source,source_lang=en`` scores exactly as ``method=top1,lang=en``.
"""

from __future__ import annotations

from pathlib import Path

from xelm.evaluate.tasks import GROUP, LOADER_LINE, dump_yaml, group_config, task_config

ROUTES = ("target", "source", "ensemble")
DEFAULT_SOURCE = "en"


def xtask_name(source: str, target: str) -> str:
    return f"{GROUP}_x_{source}_{target}"


def xgroup_name(source: str) -> str:
    return f"{GROUP}_x_{source}"


def write_crosslingual_tasks(out: Path, summary: dict, source: str) -> dict:
    """One task per built language other than ``source`` (its test split, ``source``'s
    few-shot split) and their group; returns ``{"source", "group", "tasks"}``."""
    built = list(summary["tasks"])
    if source not in built:
        why = summary["skipped"].get(source, "it is not among the languages built")
        raise ValueError(f"source language {source!r} has no few-shot split to draw "
                         f"demonstrations from ({why}); built: {', '.join(built)}")
    tasks = {}
    for lang in built:
        if lang == source:
            continue
        config = task_config(lang, f"data/{lang}.test.jsonl", f"data/{source}.fewshot.jsonl")
        config["task"] = tasks[lang] = xtask_name(source, lang)
        config["metadata"]["source_lang"] = source
        dump_yaml(out / f"{tasks[lang]}.yaml", config, extra=LOADER_LINE)
    if not tasks:
        raise ValueError(f"source language {source!r} is the only language built: a "
                         "cross-lingual task needs another one to test")
    group = {**group_config(list(tasks)), "group": xgroup_name(source)}
    dump_yaml(out / f"_{xgroup_name(source)}.yaml", group)
    return {"source": source, "group": xgroup_name(source), "tasks": tasks}


def resolve_route(route: str | None, method: str | None, lang: str | None,
                  source_lang: str | None, expert: str | None) -> tuple[str, str | None]:
    """``(method, lang that picks the expert)`` for the lm-eval model's ``route``; without
    ``route``, ``method`` (default ``ensemble_posterior``) and ``lang`` as given."""
    if route is None:
        if source_lang is not None:
            raise ValueError("source_lang= only chooses the expert with route=source; "
                             "add route=source (or route=target|ensemble), or drop it")
        return method or "ensemble_posterior", lang
    if route not in ROUTES:
        raise ValueError(f"route={route!r}: choose from {', '.join(ROUTES)} (target: the "
                         "test item's language, source: the demonstrations', ensemble: "
                         "no label)")
    if expert is not None:
        raise ValueError("route= and expert= both choose the expert: give one of them")
    if route == "ensemble":
        if method in ("top1", "top1_langid"):
            raise ValueError(f"route=ensemble with method={method}: an ensemble route needs "
                             "an ensemble method (ensemble_posterior, ensemble, "
                             "product_of_experts)")
        return method or "ensemble_posterior", lang
    if method not in (None, "top1"):
        raise ValueError(f"route={route} routes top-1 to one expert; method={method} "
                         "contradicts it (drop method=, or use route=ensemble)")
    chosen = lang if route == "target" else source_lang
    if chosen is None:
        need = "lang=<the test item's language>" if route == "target" else \
            "source_lang=<the demonstrations' language>"
        raise ValueError(f"route={route} needs {need}")
    return "top1", chosen
