"""The files of an lm-eval task folder: task and group YAMLs, jsonl data and the small
loader module beside them (shared by the cloze, cross-lingual and minimal-pair tasks)."""

from __future__ import annotations

import json
from pathlib import Path

from xelm.io import atomic_write_text

GROUP = "xelm_cloze"


def task_name(lang: str) -> str:
    return f"{GROUP}_{lang}"


def jsonl(rows: list[dict]) -> str:
    """Rows as JSON lines (UTF-8 text kept as is)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# The task YAMLs name their data relative to the task folder, and lm-eval resolves data
# paths against the working directory; so each folder gets this small loader, which
# lm-eval imports from beside the YAML (``!function``), and the folder can be moved.
LOADER = "xelm_cloze_data"
LOADER_SOURCE = '''"""Loads the jsonl files of this task folder (written by `xelm tasks build`)
relative to the folder itself, so the folder can be moved or shared."""

from pathlib import Path


def load(data_files=None, **_):
    import datasets

    here = Path(__file__).resolve().parent
    return datasets.load_dataset("json", data_files={split: str(here / rel)
                                                     for split, rel in data_files.items()})
'''


LOADER_LINE = f"custom_dataset: !function {LOADER}.load\n"


def write_loader(out: Path) -> None:
    """The loader module beside the YAMLs (every task folder of xelm uses the same one)."""
    atomic_write_text(out / f"{LOADER}.py", LOADER_SOURCE)


def task_config(lang: str, test_file: str, fewshot_file: str) -> dict:
    """The lm-eval task YAML (as a dict) of one language; data paths are relative to the
    task folder (``custom_dataset`` is added when it is written)."""
    metric = {"aggregation": "mean", "higher_is_better": True}
    return {"task": task_name(lang), "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": test_file, "fewshot": fewshot_file}},
            "test_split": "test", "fewshot_split": "fewshot",
            "output_type": "multiple_choice",
            "doc_to_text": "context", "doc_to_choice": "choices",
            "doc_to_target": "label", "target_delimiter": " ",
            "metric_list": [{"metric": "acc", **metric}, {"metric": "acc_norm", **metric}],
            "metadata": {"version": 1.0, "lang": lang}}


def group_config(langs: list[str]) -> dict:
    agg = [{"metric": m, "aggregation": "mean", "weight_by_size": True} for m in ("acc", "acc_norm")]
    return {"group": GROUP, "task": [task_name(lang) for lang in langs],
            "aggregate_metric_list": agg, "metadata": {"version": 1.0}}


def dump_yaml(path: Path, data: dict, extra: str = "") -> None:
    """Write a task or group YAML (``extra``: lines yaml cannot dump, e.g. ``!function``)."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + extra)
