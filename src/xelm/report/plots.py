"""Figures of ``report.md`` (matplotlib, Agg backend, imported lazily; the ``plots`` extra).

- ``change.png``: per language, each method's perplexity change against dense (%).
- ``curves.png``: training and validation loss of dense and every expert against tokens
  (training curves from the TensorBoard events, validation from ``train_state.json``).
- ``typology.png``: the typology tree, each expert's group in its colour.

Each function returns the file it wrote, or None when it had nothing to draw.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xelm.io import read_json
from xelm.rundir import TRAIN_STATE, RunDir

log = logging.getLogger("xelm")
PALETTE = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # C7 is grey


def available() -> bool:
    from xelm.extras import installed

    return installed("matplotlib")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def change_vs_dense(results: dict, path: Path) -> Path | None:
    """Dots per language and method: 100 * (ppl_method / ppl_dense - 1); below 0 is better."""
    ppl, langs = results["perplexity"], results["languages"]
    methods = [m for m in ppl if m.startswith("xelm_")]
    if "dense" not in ppl or not methods:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(12, max(6, 0.45 * len(langs) + 2)), 3.8))
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ratios = []
    for i, method in enumerate(methods):  # ratios on a log axis: -50% and +100% look alike
        values = [ppl[method][lang] / ppl["dense"][lang] for lang in langs]
        ratios += values
        offset = (i - (len(methods) - 1) / 2) * 0.8 / max(len(methods), 1)
        ax.scatter([j + offset for j in range(len(langs))], values, s=18,
                   color=PALETTE[i % len(PALETTE)], label=method.removeprefix("xelm_"), zorder=3)
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ticks = [r for r in (0.25, 0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20, 50)
             if min(ratios) / 1.1 <= r <= max(ratios) * 1.1]
    import math

    gap = (math.log10(max(ratios) * 1.1) - math.log10(min(ratios) / 1.1)) / 10
    kept = [1.0]  # from 1 outwards, no two ticks closer than a tenth of the axis
    for side in ([r for r in ticks if r > 1], [r for r in reversed(ticks) if r < 1]):
        last = 1.0
        for r in side:
            if abs(math.log10(r) - math.log10(last)) >= gap:
                kept.append(r)
                last = r
    ax.yaxis.set_major_locator(FixedLocator(sorted(kept)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda r, _: f"{100 * (r - 1):+.0f}%"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda r, _: ""))
    ax.set_xticks(range(len(langs)), langs)
    ax.set_ylabel("perplexity vs dense (log scale)")
    ax.set_title("change against the dense model, per language (below 0: better than dense)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(methods)), loc="upper center",
              bbox_to_anchor=(0.5, -0.1), frameon=False)
    return _save(fig, path)


def _train_curve(folder: Path) -> list[tuple[float, float]]:
    """(tokens, loss) of a job's TensorBoard events, if tensorboard is installed."""
    if not folder.is_dir():
        return []
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return []
    events = EventAccumulator(str(folder)).Reload()
    if "train/loss" not in events.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def training_curves(run: Path, jobs: list[tuple[str, Path]], path: Path) -> Path | None:
    """Training (left) and validation (right) loss of each job against its tokens."""
    curves = {}
    for name, folder in jobs:
        state = folder / TRAIN_STATE
        valid = read_json(state).get("valid_loss") or [] if state.is_file() else []
        curves[name] = (_train_curve(RunDir(run).tensorboard / name), valid)
    if not any(t or v for t, v in curves.values()):
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
    for i, (name, (train, valid)) in enumerate(curves.items()):
        style = {"color": "black" if name == "dense" else PALETTE[i % len(PALETTE)],
                 "linewidth": 1.6 if name == "dense" else 1.0, "label": name}
        if train:
            left.plot(*zip(*train), marker="o" if len(train) < 4 else None, markersize=3, **style)
        if valid:
            right.plot(*zip(*valid), marker="o", markersize=3, **style)
    for ax, what in ((left, "training loss"), (right, "validation loss")):
        ax.set_xlabel("tokens seen by the job")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    left.set_title("training loss (TensorBoard events)")
    right.set_title("validation loss (fixed valid blocks of the job's languages)")
    right.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def typology_tree(allocation: dict, path: Path) -> Path | None:
    """The typology dendrogram, each expert's group in the colour the report lists."""
    if not allocation.get("tree"):
        return None
    from xelm.allocate.typology import TypologyTree, plot_dendrogram

    plot_dendrogram(TypologyTree.from_dict(allocation["tree"]), path)
    return path


def group_colours(allocation: dict) -> dict[str, str]:
    """Expert -> the colour its group has in :func:`typology_tree`."""
    if not allocation.get("tree"):
        return {}
    from xelm.allocate.typology import TypologyTree

    tree = TypologyTree.from_dict(allocation["tree"])
    by_languages = {frozenset(spec["languages"]): name
                    for name, spec in allocation["experts"].items()}
    # the names of PALETTE's colours (matplotlib's C0-C6, C8, C9), for the reader
    words = ["blue", "orange", "green", "red", "purple", "brown", "pink", "olive", "cyan"]
    out = {}
    for g, top in enumerate(tree.clusters()):
        expert = by_languages.get(frozenset(tree.leaves(top)))
        if expert is not None:
            out[expert] = words[g % len(words)]
    return out
