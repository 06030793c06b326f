"""The typology tree: the whole merge history of an agglomerative clustering of languages
(the paper's greedy pairing, or a SciPy linkage), its groups for any k, and its plot.

``cluster`` records the merges down to one root, so one tree answers ``groups(k)`` for
every k and gives HMR its parents (:mod:`xelm.allocate.typology` computes the distances).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

LINKAGES = ("paper", "average", "complete", "single", "ward")


# --------------------------------------------------------------------------- tree


@dataclass
class TypologyNode:
    """A leaf (``language`` set) or a merge of ``children`` at ``distance`` in ``round``."""

    id: int
    children: list[int] = field(default_factory=list)
    language: str | None = None
    distance: float | None = None
    round: int | None = None


@dataclass
class TypologyTree:
    """The full merge history: leaves ``0..n-1``, then one node per merge in merge order.

    Node ``n + i`` is the i-th merge, so the state with k clusters is the one after the
    first ``n - k`` merges (the scipy linkage convention). ``k`` is the number asked for.
    """

    nodes: list[TypologyNode]
    k: int
    linkage: str = "paper"

    def leaves(self, node: int | None = None) -> list[str]:
        """Languages under ``node`` (default: all), in leaf order."""
        root = len(self.nodes) - 1 if node is None else node
        stack, found = [root], []
        while stack:
            current = self.nodes[stack.pop()]
            if current.language is not None:
                found.append(current.id)
            stack.extend(current.children)
        return [self.nodes[i].language for i in sorted(found)]

    @property
    def n_languages(self) -> int:
        return sum(node.language is not None for node in self.nodes)

    def clusters(self, k: int | None = None) -> list[int]:
        """Node ids of the k clusters (default ``self.k``), ordered by their first leaf."""
        k = self.k if k is None else k
        n = self.n_languages
        if not 1 <= k <= n:
            raise ValueError(f"k={k}: the tree has {n} languages, so 1 <= k <= {n}")
        cut = 2 * n - k  # nodes with id < cut exist after n - k merges
        merged = {child for node in self.nodes[:cut] for child in node.children}
        active = [node.id for node in self.nodes[:cut] if node.id not in merged]
        return sorted(active, key=lambda i: min(self._leaf_ids(i)))

    def groups(self, k: int | None = None) -> list[list[str]]:
        """Languages of each of the k clusters (default ``self.k``)."""
        return [self.leaves(node) for node in self.clusters(k)]

    def parent(self, node: int) -> int | None:
        """The node that merged ``node`` into a larger cluster (None for the root)."""
        return next((n.id for n in self.nodes if node in n.children), None)

    def _leaf_ids(self, node: int) -> list[int]:
        current = self.nodes[node]
        if current.language is not None:
            return [node]
        return [leaf for child in current.children for leaf in self._leaf_ids(child)]

    def to_dict(self) -> dict:
        return {"k": self.k, "linkage": self.linkage, "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: dict) -> "TypologyTree":
        nodes = [TypologyNode(**node) for node in data["nodes"]]
        if [node.id for node in nodes] != list(range(len(nodes))):
            raise ValueError("TypologyTree nodes must be numbered 0..N-1 in order")
        return cls(nodes=nodes, k=int(data["k"]), linkage=data.get("linkage", "paper"))


# --------------------------------------------------------------------------- clustering


def _paper_merges(distances: np.ndarray) -> list[tuple[int, int, float, int]]:
    """All merges of the paper's greedy pairing, as (node_a, node_b, distance, round)."""
    n = len(distances)
    clusters = [[i] for i in range(n)]  # member leaves of each live cluster
    ids = list(range(n))  # node id of each live cluster
    merges, next_id, round_ = [], n, 0
    while len(clusters) > 1:
        round_ += 1
        pairs = [(i, j) for i in range(len(clusters)) for j in range(i + 1, len(clusters))]
        gaps = [distances[np.ix_(clusters[i], clusters[j])].min() for i, j in pairs]
        order = np.argsort(gaps, kind="stable")
        taken, new_clusters, new_ids = set(), [], []
        for p in order:
            i, j = pairs[p]
            if i in taken or j in taken:
                continue
            taken.update((i, j))
            merges.append((ids[i], ids[j], float(gaps[p]), round_))
            new_clusters.append(clusters[i] + clusters[j])
            new_ids.append(next_id)
            next_id += 1
        left = [i for i in range(len(clusters)) if i not in taken]  # odd count: one waits
        clusters = new_clusters + [clusters[i] for i in left]
        ids = new_ids + [ids[i] for i in left]
    return merges


def _scipy_merges(distances: np.ndarray, linkage: str) -> list[tuple[int, int, float, int]]:
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import squareform

    condensed = squareform(np.clip(distances, 0.0, None), checks=False)
    matrix = scipy_linkage(condensed, method=linkage)
    return [(int(a), int(b), float(d), step + 1)
            for step, (a, b, d, _) in enumerate(matrix)]


def cluster(distances: np.ndarray, names: list[str], k: int,
            linkage: str = "paper") -> TypologyTree:
    """Cluster named items from a distance matrix; ``tree.groups()`` gives the k groups.

    ``linkage="paper"``: rounds of greedy pairing of the closest free clusters (single-link
    distance), halving the count each round; a round that would pass k is cut as soon as k
    remain (its merges are taken closest first). ``average``, ``complete``, ``single``,
    ``ward``: SciPy agglomerative linkage on the same distances (``ward`` assumes Euclidean
    geometry; on cosine distances it is a heuristic). Either way the tree holds every
    merge down to one root, so ``groups(k')`` works for any k'.
    """
    distances = np.asarray(distances, dtype=np.float64)
    n = len(names)
    if distances.shape != (n, n):
        raise ValueError(f"distances has shape {distances.shape}, expected ({n}, {n})")
    if np.isnan(distances).any():
        raise ValueError("distances contain NaN")
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}; choose from {', '.join(LINKAGES)}")
    if not 1 <= k <= n:
        raise ValueError(f"cannot make k={k} clusters from {n} languages: each cluster "
                         f"(expert) needs at least one language, so 1 <= k <= {n}")
    nodes = [TypologyNode(id=i, language=name) for i, name in enumerate(names)]
    merges = _paper_merges(distances) if linkage == "paper" else _scipy_merges(distances, linkage)
    for a, b, gap, round_ in merges:
        nodes.append(TypologyNode(id=len(nodes), children=[a, b], distance=gap, round=round_))
    return TypologyTree(nodes=nodes, k=k, linkage=linkage)


# --------------------------------------------------------------------------- plot


def plot_dendrogram(tree: TypologyTree, path: str | os.PathLike) -> None:
    """Draw the tree to ``path`` (PNG/PDF/SVG by suffix), each of the k groups in a colour.

    Heights are merge distances made monotone (a node is drawn no lower than its
    children): the paper's greedy rounds can merge a closer pair in a later round.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    n = tree.n_languages
    height: dict[int, float] = {}
    rows = []
    for node in tree.nodes[n:]:
        a, b = node.children
        height[node.id] = max(node.distance or 0.0, height.get(a, 0.0), height.get(b, 0.0))
        rows.append([a, b, height[node.id], len(tree._leaf_ids(node.id))])
    palette = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # C7 is grey
    colour = {}
    for g, top in enumerate(tree.clusters()):
        stack = [top]
        while stack:
            colour[stack[-1]] = palette[g % len(palette)]
            stack.extend(tree.nodes[stack.pop()].children)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * n + 2), 4.0))
    if rows:
        dendrogram(np.array(rows, dtype=float), ax=ax,
                   labels=[node.language for node in tree.nodes[:n]],
                   link_color_func=lambda i: colour.get(i, "black"))
    ax.set_ylabel("merge distance (cosine)")
    ax.set_title(f"typology tree ({tree.linkage} linkage), {tree.k} groups in colour")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
