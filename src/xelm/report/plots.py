"""Plots for ``report.md`` (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

from pathlib import Path


def perplexity_bars(results: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    langs, models = results["languages"], [m for m in results["perplexity"] if m != "seed"]
    x = np.arange(len(langs))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(langs) * len(models) / 2), 4))
    for i, model in enumerate(models):
        ax.bar(x + i * width, [results["perplexity"][model][lang] for lang in langs], width,
               label=model)
    ax.set_xticks(x + width * (len(models) - 1) / 2, langs)
    ax.set_ylabel("test perplexity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
