"""Balanced assignment: documents to clusters so that every cluster's weight (tokens) is
within a tolerance of the equal share, enforced when documents are assigned rather than
hoped for (:func:`balanced_assign`), for any number of documents
(:func:`balanced_assign_in_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

HEADROOM = 0.9  # balanced_assign aims inside this fraction of the tolerance


def balanced_assign(distances: np.ndarray, weights: np.ndarray,
                    tolerance: float = 0.05) -> np.ndarray:
    """Cluster id per row of ``distances [n, k]`` with every cluster's weight near total/k.

    Rows are taken in order of regret (second-nearest minus nearest distance, largest
    first) and each goes to its nearest cluster whose load stays within
    ``share * (1 + tolerance)``; clusters then left below ``share * (1 - tolerance)`` take
    the documents that are cheapest to move from clusters that can spare them.

    The bounds use 90% of ``tolerance`` (``HEADROOM``), so shares recomputed elsewhere
    (other rounding, a few tokens more or less) still land inside ``tolerance``.

    Guarantee: every cluster ends within ``0.9 * tolerance`` of the equal share whenever
    every weight is at most ``0.9 * tolerance * share``. Heavier documents are placed best
    effort; a document heavier than a whole share necessarily overfills its cluster.
    """
    d = np.asarray(distances, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if d.ndim != 2 or w.shape != (d.shape[0],):
        raise ValueError(f"distances {d.shape} and weights {w.shape} do not match")
    if (w < 0).any() or not 0 <= tolerance < 1:
        raise ValueError("weights must be >= 0 and 0 <= tolerance < 1")
    n, k = d.shape
    share = w.sum() / k
    high, low = share * (1 + HEADROOM * tolerance), share * (1 - HEADROOM * tolerance)
    preference = np.argsort(d, axis=1, kind="stable")
    ranked = np.take_along_axis(d, preference, axis=1)
    regret = ranked[:, 1] - ranked[:, 0] if k > 1 else np.zeros(n)
    order = np.lexsort((-w, -regret))  # most decided first; heavier first among ties
    assign = np.empty(n, dtype=np.int64)
    load = np.zeros(k)
    for i in order:
        room = load[preference[i]] + w[i] <= high
        c = preference[i][np.argmax(room)] if room.any() else int(np.argmin(load))
        assign[i] = c
        load[c] += w[i]
    _fill_short_clusters(d, w, assign, load, low, high)
    return assign


def _fill_short_clusters(d, w, assign, load, low, high) -> None:
    """Move the cheapest documents into clusters below ``low`` (in place)."""
    for _ in range(d.shape[1]):
        short = np.flatnonzero(load < low)
        if short.size == 0:
            return
        for u in short[np.argsort(load[short])]:
            cost = d[:, u] - d[np.arange(len(w)), assign]
            for i in np.argsort(cost, kind="stable"):
                if load[u] >= low:
                    break
                src = assign[i]
                if src == u or load[src] - w[i] < low or load[u] + w[i] > high:
                    continue
                assign[i], load[src], load[u] = u, load[src] - w[i], load[u] + w[i]


def balanced_assign_in_groups(rows: Callable[[int, int], np.ndarray], weights: np.ndarray,
                              tolerance: float = 0.05,
                              group_docs: int = 500_000) -> np.ndarray:
    """:func:`balanced_assign` of ``n = len(weights)`` documents, at most ``group_docs`` at
    a time: one call when ``n <= group_docs``, else ``m = ceil(n / group_docs)``
    interleaved groups (document ``i`` in group ``i mod m``), each balanced on its own.

    ``rows(first, step)`` returns the ``[*, k]`` distances of documents ``first, first +
    step, ...``. When every group's clusters hold their share within the tolerance, so do
    the sums over groups; interleaving keeps each group a sample of the whole (a corpus
    ordered by language, cut into contiguous groups, would force every cluster to take a
    share of each language).
    """
    n = len(weights)
    groups = max(1, math.ceil(n / group_docs))
    assign = np.empty(n, dtype=np.int64)
    for g in range(groups):
        assign[g::groups] = balanced_assign(rows(g, groups), weights[g::groups], tolerance)
    return assign


def file_rows(handle, n: int, k: int, block_rows: int = 1 << 20) -> Callable[[int, int], np.ndarray]:
    """``rows(first, step)`` for :func:`balanced_assign_in_groups` over an ``[n, k]``
    float64 file (row-major), read ``block_rows`` rows at a time, never whole."""
    def rows(first: int, step: int) -> np.ndarray:
        out = []
        for start in range(0, n, block_rows):
            count = min(block_rows, n - start)
            handle.seek(start * k * 8)
            block = np.fromfile(handle, dtype=np.float64, count=count * k).reshape(count, k)
            out.append(block[(first - start) % step::step])
        return np.concatenate(out)

    return rows
