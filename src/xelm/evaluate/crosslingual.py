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

The paper's hub tasks: :func:`write_hub_crosslingual_tasks` writes
``xnli_x_<src>_<tgt>`` / ``xstorycloze_x_<src>_<tgt>``, lm-eval's own task of the target
language with few-shot examples from the source language's training split (the YAMLs
include lm-eval's by absolute path: write them on the machine that runs them).
"""

from __future__ import annotations

from pathlib import Path

from xelm.evaluate.task_files import GROUP, LOADER_LINE, dump_yaml, group_config, task_config

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


# ------------------------------------------------------------ the paper's hub tasks
HUB_FAMILIES = {"xnli": "xnli_{lang}.yaml", "xstorycloze": "default_{lang}.yaml"}
HUB_LOADER = "xelm_hub_data"
HUB_LOADER_SOURCE = '''"""Test items from one language, few-shot examples from another (written by xelm's
write_hub_crosslingual_tasks): each of `target` and `source` is the keyword arguments of
datasets.load_dataset plus `split`."""


def load(source=None, target=None, **_):
    import datasets

    def one(spec):
        spec = dict(spec)
        split = spec.pop("split")
        return datasets.load_dataset(**{k: v for k, v in spec.items() if v is not None},
                                     split=split)

    return datasets.DatasetDict({"test": one(target), "fewshot": one(source)})
'''


def _template(templates: Path, family: str, lang: str) -> tuple[Path, dict]:
    from lm_eval.tasks._yaml_loader import load_yaml

    path = templates / HUB_FAMILIES[family].format(lang=lang)
    if not path.is_file():
        raise ValueError(f"lm-eval has no {family} task for {lang!r} ({path} is missing)")
    return path, load_yaml(path, resolve_func=False, recursive=True)


def _dataset(cfg: dict, split: str) -> dict:
    return {"path": cfg["dataset_path"], "name": cfg.get("dataset_name"),
            "data_files": (cfg.get("dataset_kwargs") or {}).get("data_files"), "split": split}


def write_hub_crosslingual_tasks(out: Path, family: str, source: str, targets: list[str], *,
                                 templates: Path | None = None) -> dict:
    """Cross-lingual versions of lm-eval's own ``xnli`` / ``xstorycloze`` tasks in ``out``:
    ``<family>_x_<source>_<target>`` includes lm-eval's task of ``<target>`` (prompt
    template, choices, metric) and draws its few-shot examples from ``<source>``'s
    training split (rendered with the target's template). Needs the hub when lm-eval
    loads them. ``templates``: the folder of the family's YAMLs (default: lm-eval's).
    Returns ``{"group", "tasks": {target: task}}``."""
    if family not in HUB_FAMILIES:
        raise ValueError(f"family={family!r}: choose from {', '.join(HUB_FAMILIES)}")
    if templates is None:
        import lm_eval.tasks

        templates = Path(lm_eval.tasks.__file__).parent / family
    _, src = _template(templates, family, source)
    if not src.get("training_split"):
        raise ValueError(f"{family} {source} has no training split to draw examples from")
    tasks = {}
    for target in targets:
        if target == source:
            continue
        path, tgt = _template(templates, family, target)
        tasks[target] = f"{family}_x_{source}_{target}"
        config = {"include": str(path.resolve()), "task": tasks[target], "tag": [],
                  "dataset_kwargs": {"source": _dataset(src, src["training_split"]),
                                     "target": _dataset(tgt, tgt.get("test_split")
                                                        or tgt["validation_split"])},
                  "training_split": None, "validation_split": None, "test_split": "test",
                  "fewshot_split": "fewshot"}
        dump_yaml(out / f"{tasks[target]}.yaml", config,
                  extra=f"custom_dataset: !function {HUB_LOADER}.load\n")
    group = f"{family}_x_{source}"
    dump_yaml(out / f"_{group}.yaml", {**group_config(list(tasks)), "group": group})
    (out / f"{HUB_LOADER}.py").write_text(HUB_LOADER_SOURCE, encoding="utf-8")
    return {"group": group, "tasks": tasks}
