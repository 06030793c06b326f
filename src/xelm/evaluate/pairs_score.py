"""Minimal-pair accuracy of a run's models through lm-eval, with intervals.

Models, by the names ``results.json`` uses: ``seed`` and ``dense`` (lm-eval's own ``hf``
model on ``RUN/seed`` and ``RUN/dense``), ``xelm_top1`` (the ``xelm`` model, each
language's tasks routed to that language's expert) and any label-free method the ``xelm``
model runs (``xelm_ensemble_posterior``, ``xelm_top1_langid``, ...), all tasks at once.
Per-pair outcomes come from lm-eval's logged samples, so differences between two models
are paired (the same pairs).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from xelm.rundir import RunDir

log = logging.getLogger("xelm")

Z95 = 1.959964
# label-free methods of results.json -> the lm-eval model's method on minimal pairs.
# Every pair is scored as a document start, after an empty context: with no preceding
# block, ensemble_posterior_context is ensemble_posterior, and top1_langid (which reads
# only the context) falls back to ensemble_posterior on every pair. The TF-IDF routers
# have no lm-eval counterpart.
LABEL_FREE = {"xelm_ensemble_posterior": "ensemble_posterior",
              "xelm_ensemble_posterior_context": "ensemble_posterior",
              "xelm_top1_langid": "ensemble_posterior", "xelm_ensemble": "ensemble",
              "xelm_product_of_experts": "product_of_experts"}


def best_label_free(results: dict) -> tuple[str, str] | None:
    """``(results.json name, lm-eval method)`` of the label-free method with the lowest
    mean bits per byte among those the lm-eval model runs; None if there is none."""
    bpb = results.get("bits_per_byte", {})
    names = [m for m in bpb if m in LABEL_FREE]
    if not names:
        return None
    best = min(names, key=lambda m: sum(bpb[m].values()) / len(bpb[m]))
    return best, LABEL_FREE[best]


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def paired_difference(a: list[int], b: list[int], z: float = Z95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same pairs and its normal-approximation interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired outcomes must be non-empty and of equal length, got "
                         f"{len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1)
    half = z * math.sqrt(var / len(d))
    return mean, mean - half, mean + half


def _outcomes(out: dict, tasks: dict[str, str]) -> dict[str, list[int]]:
    """``{phenomenon: [1 if the good sentence won else 0, ...]}`` in document order."""
    got = {}
    for phenomenon, task in tasks.items():
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        got[phenomenon] = [int(s["acc"]) for s in samples]
    return got


def _evaluate(lm, tasks: list[str], task_manager) -> dict:
    import lm_eval

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=0,
                                       task_manager=task_manager, bootstrap_iters=0,
                                       log_samples=True)
    finally:
        quiet.setLevel(level)


def hf_model(folder: Path, tokenizer: Path, batch_size: int):
    """lm-eval's own ``hf`` model on one HF folder (seed, dense or an expert), on the CPU."""
    from lm_eval.api.registry import get_model

    import xelm.evaluate.lm_eval_model  # noqa: F401  (registers hf and xelm)

    return get_model("hf")(pretrained=str(folder), tokenizer=str(tokenizer), device="cpu",
                           batch_size=batch_size)


def score_pairs(run: str | Path, summary: dict, model: str, *, batch_size: int = 32,
                expert_set=None) -> dict[str, dict[str, list[int]]]:
    """Per-pair outcomes ``{lang: {phenomenon: [0/1, ...]}}`` of ``model`` (``seed``,
    ``dense``, ``xelm_top1`` or ``xelm_<method>``) on the tasks ``summary`` describes (as
    :func:`~xelm.evaluate.minimal_pairs.build_minimal_pairs` returns it)."""
    from lm_eval.tasks import TaskManager

    from xelm.evaluate.lm_eval_model import XelmLM

    run = Path(run)
    tm = TaskManager(include_path=summary["include_path"], include_defaults=False)
    tasks = summary["tasks"]
    every = [t for per in tasks.values() for t in per.values()]
    if model in ("seed", "dense"):
        lm = hf_model(run / model, RunDir(run).tokenizer, batch_size)
        out = _evaluate(lm, every, tm)
        return {lang: _outcomes(out, per) for lang, per in tasks.items()}
    if expert_set is None:
        from xelm.experts.manifest import ExpertSet

        expert_set = ExpertSet.load(run)
    method = model.removeprefix("xelm_")
    if method == "top1":  # one language at a time, routed by its label
        return {lang: _outcomes(_evaluate(XelmLM(run=str(run), expert_set=expert_set,
                                                 method="top1", lang=lang,
                                                 batch_size=batch_size),
                                          list(per.values()), tm), per)
                for lang, per in tasks.items()}
    lm = XelmLM(run=str(run), expert_set=expert_set, method=method, batch_size=batch_size)
    out = _evaluate(lm, every, tm)
    return {lang: _outcomes(out, per) for lang, per in tasks.items()}


def accuracy_table(outcomes: dict[str, dict[str, list[int]]]) -> dict:
    """``{lang: {phenomenon | "all": {"acc", "lo", "hi", "n"}}}`` with Wilson intervals;
    ``all`` pools the language's pairs."""
    table = {}
    for lang, per in outcomes.items():
        rows = {}
        for name, hits in {**per, "all": [h for v in per.values() for h in v]}.items():
            lo, hi = wilson(sum(hits), len(hits))
            rows[name] = {"acc": sum(hits) / len(hits), "lo": lo, "hi": hi, "n": len(hits)}
        table[lang] = rows
    return table


def correlation(x: list[float], y: list[float], *, resamples: int = 2000,
                seed: int = 0) -> dict:
    """Pearson's r with its Fisher-z 95% interval and Spearman's rho with a percentile
    bootstrap interval over the points (pairs resampled with replacement); intervals are
    None with fewer than 4 points, or when every resample is degenerate."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"a correlation needs 3+ paired points, got {len(x)} and {len(y)}")
    r = float(stats.pearsonr(x, y)[0])
    rho = float(stats.spearmanr(x, y)[0])
    out = {"n": len(x), "pearson": r, "pearson_ci": None, "spearman": rho,
           "spearman_ci": None}
    if len(x) >= 4 and abs(r) < 1:
        z, half = math.atanh(r), Z95 / math.sqrt(len(x) - 3)
        out["pearson_ci"] = [math.tanh(z - half), math.tanh(z + half)]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        i = rng.integers(len(x), size=len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(stats.spearmanr(x[i], y[i])[0])
    if len(x) >= 4 and boots:
        out["spearman_ci"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    return out
