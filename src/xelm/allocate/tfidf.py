"""TF-IDF allocation (c-BTM style): documents -> TF-IDF -> balanced spherical k-means.

Every cluster (expert) gets the same share of training tokens, within ``tolerance``
(default 5%), enforced when documents are assigned rather than hoped for: each Lloyd step
assigns documents greedily, the most decided first, to their nearest cluster with room
left, then repairs any cluster left short (:mod:`xelm.allocate.balance`).

The fitted :class:`TfidfRouter` (vocabulary, idf, centroids, options) is saved as JSON +
NPZ, never pickled, and routes new text by squared Euclidean distance between L2-normalised
TF-IDF vectors and L2-normalised centroids (``d^2 = 2 - 2 cos``, so ``d^2`` is in [0, 2]).
The vectorizer is fitted on a sample (``fit_docs``); the remaining documents are read
and vectorised in batches (:func:`allocate_tfidf_stream`), so neither the corpus nor
its matrix is ever held whole; big corpora are balanced in bounded groups.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from xelm.allocate.balance import HEADROOM, balanced_assign  # noqa: F401  (re-exported)

FORMAT = "xelm-tfidf-router/1"
GROUP_DOCS = 500_000  # documents balanced at once by allocate_tfidf_stream
VECTORIZER_OPTIONS = ("analyzer", "ngram_range", "max_features", "sublinear_tf", "lowercase",
                      "min_df", "max_df", "strip_accents")


def estimate_tokens(texts: Sequence[str]) -> np.ndarray:
    """Token counts estimated as ``ceil(characters / 4)`` (at least 1 per document).

    A stand-in when no tokenizer is at hand; pass real counts when you have them.
    """
    return np.array([max(1, math.ceil(len(text) / 4)) for text in texts], dtype=np.int64)


# --------------------------------------------------------------------------- router


def _l2_normalise_rows(matrix):
    from sklearn.preprocessing import normalize

    return normalize(matrix, norm="l2", copy=False)


@dataclass(eq=False)
class TfidfRouter:
    """A fitted TF-IDF vectorizer plus k centroids; routes text by distance to them."""

    terms: list[str]
    idf: np.ndarray  # [f] float64, sklearn's smooth idf: ln((1 + n) / (1 + df)) + 1
    centroids: np.ndarray  # [k, f] float32, L2-normalised
    analyzer: str = "char_wb"
    ngram_range: tuple[int, int] = (2, 4)
    lowercase: bool = True
    sublinear_tf: bool = True
    strip_accents: str | None = None
    meta: dict = field(default_factory=dict)  # how it was fitted; informational

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @cached_property
    def _counter(self):
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(analyzer=self.analyzer, ngram_range=tuple(self.ngram_range),
                               lowercase=self.lowercase, strip_accents=self.strip_accents,
                               vocabulary={t: i for i, t in enumerate(self.terms)},
                               dtype=np.float32)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """L2-normalised TF-IDF rows ``[n, f]``, as sklearn's ``TfidfVectorizer`` makes them."""
        return self._weight(self._counter.transform(texts))

    def _weight(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        counts = sp.csr_matrix(counts, dtype=np.float32)
        if self.sublinear_tf:
            np.log(counts.data, out=counts.data)
            counts.data += 1
        return _l2_normalise_rows(counts @ sp.diags(self.idf.astype(np.float32)))

    def _distances_of(self, vectors: sp.csr_matrix) -> np.ndarray:
        return _squared_distances(vectors, self.centroids)

    def distances(self, texts: Sequence[str], batch_size: int = 2048,
                  progress: bool = False) -> np.ndarray:
        """Squared Euclidean distances ``[n, k]`` from each text to each centroid."""
        from xelm.io import progress

        starts = range(0, len(texts), batch_size)
        parts = [self._distances_of(self.transform(texts[s:s + batch_size]))
                 for s in progress(starts, desc="tf-idf routing", unit="batch", disable=not progress)]
        return np.concatenate(parts) if parts else np.zeros((0, self.k))

    def route(self, texts: Sequence[str]) -> np.ndarray:
        """Same as :meth:`distances` (the router's public name for inference code)."""
        return self.distances(texts)

    # ----------------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, texts: Sequence[str], k: int, *, analyzer: str = "char_wb",
            ngram_range: tuple[int, int] = (2, 4), max_features: int | None = 50_000,
            token_counts: np.ndarray | None = None, seed: int = 0, iterations: int = 10,
            restarts: int = 3, tolerance: float = 0.05, **vectorizer_opts) -> "TfidfRouter":
        """Fit the vectorizer on ``texts`` and balanced spherical k-means with k clusters.

        ``token_counts`` weigh the balance (default :func:`estimate_tokens`). k-means runs
        ``restarts`` times from k-means++ seeds ``seed, seed+1, ...`` for at most
        ``iterations`` Lloyd steps each, and keeps the lowest total distance. Further
        ``vectorizer_opts``: sublinear_tf (True), lowercase (True), min_df, max_df,
        strip_accents.
        """
        router, _, _ = cls._fit(texts, k, analyzer=analyzer, ngram_range=ngram_range,
                                max_features=max_features, token_counts=token_counts,
                                seed=seed, iterations=iterations, restarts=restarts,
                                tolerance=tolerance, **_vectorizer_opts(vectorizer_opts))
        return router

    @classmethod
    def _fit(cls, texts, k, *, token_counts=None, seed=0, iterations=10, restarts=3,
             tolerance=0.05, **vectorizer_opts):
        """Fit; also return the TF-IDF matrix and the last balanced assignment."""
        _check_k(k, len(texts))
        if iterations < 1 or restarts < 1:
            raise ValueError(f"iterations ({iterations}) and restarts ({restarts}) must be >= 1")
        weights = estimate_tokens(texts) if token_counts is None else np.asarray(token_counts)
        if weights.shape != (len(texts),):
            raise ValueError(f"token_counts has shape {weights.shape}, expected ({len(texts)},)")
        router, vectors = cls._fit_vectorizer(texts, **vectorizer_opts)
        runs = [_balanced_kmeans(vectors, weights, k, seed + r, iterations, tolerance)
                for r in range(restarts)]
        best = min(range(restarts), key=lambda r: runs[r][3])
        router.centroids, assign, done, _ = runs[best]
        shares = np.bincount(assign, weights=weights, minlength=k) / max(weights.sum(), 1)
        router.meta.update(k=k, seed=seed + best, iterations=done, tolerance=tolerance,
                           restarts=restarts, objectives=[round(r[3], 4) for r in runs],
                           fit_documents=len(texts), fit_token_shares=shares.round(6).tolist())
        return router, vectors, assign

    @classmethod
    def _fit_vectorizer(cls, texts, *, analyzer="char_wb", ngram_range=(2, 4),
                        max_features=50_000, sublinear_tf=True, lowercase=True, min_df=1,
                        max_df=1.0, strip_accents=None):
        from sklearn.feature_extraction.text import CountVectorizer

        counter = CountVectorizer(analyzer=analyzer, ngram_range=tuple(ngram_range),
                                  max_features=max_features, lowercase=lowercase,
                                  min_df=min_df, max_df=max_df, strip_accents=strip_accents,
                                  dtype=np.float32)
        counts = counter.fit_transform(texts).tocsr()
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        idf = np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0
        terms = [None] * len(counter.vocabulary_)
        for term, index in counter.vocabulary_.items():
            terms[index] = term
        router = cls(terms=terms, idf=idf, centroids=np.zeros((0, len(terms)), np.float32),
                     analyzer=analyzer, ngram_range=tuple(ngram_range), lowercase=lowercase,
                     sublinear_tf=sublinear_tf, strip_accents=strip_accents,
                     meta={"max_features": max_features, "min_df": min_df, "max_df": max_df})
        return router, router._weight(counts)

    @classmethod
    def from_groups(cls, texts: Sequence[str], group_ids: np.ndarray,
                    **vectorizer_opts) -> "TfidfRouter":
        """A router whose centroids are given groups' TF-IDF centres (e.g. typology experts)."""
        group_ids = _check_groups(group_ids, len(texts))
        router, vectors = cls._fit_vectorizer(texts, **_vectorizer_opts(vectorizer_opts))
        router.centroids = _group_centroids(vectors, group_ids, int(group_ids.max()) + 1)
        router.meta.update(k=router.k, fit_documents=len(texts), centroids="from_groups")
        return router

    # ----------------------------------------------------------------------- files

    def save(self, directory: str | Path) -> None:
        """Write ``router.json`` (options, vocabulary) and ``router.npz`` (idf, centroids)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "k": self.k, "n_features": len(self.terms),
                  "analyzer": self.analyzer, "ngram_range": list(self.ngram_range),
                  "lowercase": self.lowercase, "sublinear_tf": self.sublinear_tf,
                  "strip_accents": self.strip_accents, "meta": self.meta, "terms": self.terms}
        (directory / "router.json").write_text(json.dumps(header), encoding="utf-8")
        np.savez(directory / "router.npz", idf=self.idf, centroids=self.centroids)

    @classmethod
    def load(cls, directory: str | Path) -> "TfidfRouter":
        directory = Path(directory)
        header = json.loads((directory / "router.json").read_text(encoding="utf-8"))
        if header.get("format") != FORMAT:
            raise ValueError(f"{directory}/router.json is not a {FORMAT} file")
        with np.load(directory / "router.npz", allow_pickle=False) as arrays:
            idf, centroids = arrays["idf"], arrays["centroids"]
        if idf.shape != (len(header["terms"]),) or centroids.shape[1:] != idf.shape:
            raise ValueError(f"{directory}: router.json and router.npz do not match")
        return cls(terms=header["terms"], idf=idf, centroids=centroids,
                   analyzer=header["analyzer"], ngram_range=tuple(header["ngram_range"]),
                   lowercase=header["lowercase"], sublinear_tf=header["sublinear_tf"],
                   strip_accents=header["strip_accents"], meta=header.get("meta", {}))


# --------------------------------------------------------------------------- helpers


def _check_k(k: int, n_docs: int) -> None:
    if not 1 <= k <= n_docs:
        raise ValueError(f"cannot make k={k} TF-IDF clusters from {n_docs} documents: "
                         f"need 1 <= k <= {n_docs}")


def _check_groups(group_ids, n_docs: int) -> np.ndarray:
    group_ids = np.asarray(group_ids, dtype=np.int64)
    if group_ids.shape != (n_docs,) or n_docs == 0 or group_ids.min() < 0:
        raise ValueError(f"group_ids must be {n_docs} non-negative integers")
    missing = sorted(set(range(group_ids.max() + 1)) - set(group_ids.tolist()))
    if missing:
        raise ValueError(f"groups {missing} have no documents")
    return group_ids


def _vectorizer_opts(options: dict) -> dict:
    unknown = sorted(set(options) - set(VECTORIZER_OPTIONS))
    if unknown:
        raise ValueError(f"unknown TF-IDF options {unknown}; known: {list(VECTORIZER_OPTIONS)}")
    return options


def _squared_distances(vectors: sp.csr_matrix, centroids: np.ndarray) -> np.ndarray:
    x2 = np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel()[:, None]
    c2 = (centroids.astype(np.float64) ** 2).sum(axis=1)[None, :]
    cross = np.asarray(vectors @ centroids.T, dtype=np.float64)
    return np.maximum(x2 + c2 - 2.0 * cross, 0.0)


def _balanced_kmeans(vectors, weights, k, seed, iterations, tolerance):
    """Lloyd steps with balanced assignment: (centroids, assign, steps, total distance)."""
    centroids = _kmeans_plus_plus(vectors, k, seed)
    assign, steps = None, 0
    for steps in range(1, iterations + 1):
        new = balanced_assign(_squared_distances(vectors, centroids), weights, tolerance)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        centroids = _group_centroids(vectors, assign, k)
    distances = _squared_distances(vectors, centroids)
    return centroids, assign, steps, float(distances[np.arange(len(assign)), assign].sum())


def _kmeans_plus_plus(vectors: sp.csr_matrix, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(vectors, k, random_state=seed)
    centres = centres.toarray() if sp.issparse(centres) else np.asarray(centres)
    return _l2_normalise_rows(centres.astype(np.float32))


def _group_centroids(vectors: sp.csr_matrix, group_ids: np.ndarray, k: int) -> np.ndarray:
    """L2-normalised mean vector of each group's rows: ``[k, f]`` float32."""
    n = vectors.shape[0]
    member = sp.csr_matrix((np.ones(n, np.float32), (group_ids, np.arange(n))), shape=(k, n))
    return _l2_normalise_rows(np.asarray((member @ vectors).todense(), dtype=np.float32))


def centroids_from_groups(router: TfidfRouter, texts: Sequence[str], group_ids: np.ndarray,
                          batch_size: int = 2048) -> np.ndarray:
    """TF-IDF centre ``[g, f]`` of each group's documents under an existing router.

    Gives experts allocated another way (typology, one per language) a TF-IDF centre:
    ``dataclasses.replace(router, centroids=centroids_from_groups(...))`` routes to them.
    """
    group_ids = _check_groups(group_ids, len(texts))
    k = int(group_ids.max()) + 1
    total = np.zeros((k, len(router.terms)), dtype=np.float64)
    for s in range(0, len(texts), batch_size):
        ids = group_ids[s:s + batch_size]
        member = sp.csr_matrix((np.ones(len(ids)), (ids, np.arange(len(ids)))),
                               shape=(k, len(ids)))
        total += (member @ router.transform(texts[s:s + batch_size])).toarray()
    return _l2_normalise_rows(total.astype(np.float32))


def allocate_tfidf(texts: Sequence[str], token_counts: np.ndarray | None, k: int, *,
                   fit_docs: int = 20_000, seed: int = 0, iterations: int = 10,
                   restarts: int = 3, tolerance: float = 0.05, batch_size: int = 2048,
                   progress: bool = True, **vectorizer_opts) -> tuple[np.ndarray, TfidfRouter]:
    """Cluster id for every text (balanced by ``token_counts``) and the fitted router.

    The router is fitted on ``fit_docs`` texts drawn with ``seed``; the others are routed
    in batches of ``batch_size`` (with a progress bar); the final balanced assignment is
    made over all texts at once from their ``[n, k]`` distances. For a corpus read from
    files, :func:`allocate_tfidf_stream` does the same without holding it.
    """
    weights = estimate_tokens(texts) if token_counts is None else np.asarray(token_counts)
    if weights.shape != (len(texts),):
        raise ValueError(f"token_counts has shape {weights.shape}, expected ({len(texts)},)")
    return allocate_tfidf_stream(lambda: [texts], weights, k, fit_docs=fit_docs, seed=seed,
                                 iterations=iterations, restarts=restarts,
                                 tolerance=tolerance, batch_size=batch_size,
                                 progress=progress, group_docs=max(1, len(texts)),
                                 **vectorizer_opts)


def allocate_tfidf_stream(read: Callable[[], Iterable[Sequence[str]]],
                          token_counts: np.ndarray, k: int, *, fit_docs: int = 20_000,
                          seed: int = 0, iterations: int = 10, restarts: int = 3,
                          tolerance: float = 0.05, batch_size: int = 2048,
                          progress: bool = True, group_docs: int = GROUP_DOCS,
                          **vectorizer_opts) -> tuple[np.ndarray, TfidfRouter]:
    """:func:`allocate_tfidf` over a corpus read in batches, in bounded memory.

    ``read()`` returns a fresh iterable of batches (lists of documents) covering the
    corpus in order; it is called twice. First the ``fit_docs`` sampled documents (the
    same draw as ``allocate_tfidf``) are kept and the router is fitted on them; then the
    others are routed batch by batch (the sampled ones keep the distances of their fitted
    vectors), into memory when ``n <= group_docs`` and else into a temporary file. The
    balanced assignment takes at most ``group_docs`` documents at a time
    (:func:`xelm.allocate.balance.balanced_assign_in_groups`): with ``n <= group_docs``
    exactly ``allocate_tfidf``'s. Memory: the sample and its TF-IDF matrix, one batch,
    and one group's distances with ``balanced_assign``'s buffers (about 200 bytes per
    document and cluster).
    """
    from xelm.allocate.balance import balanced_assign_in_groups, file_rows

    weights = np.asarray(token_counts)
    n = len(weights)
    _check_k(k, n)
    if fit_docs < k:
        raise ValueError(f"fit_docs={fit_docs} is smaller than k={k}")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, fit_docs, replace=False)) if n > fit_docs else np.arange(n)
    router, vectors, _ = TfidfRouter._fit(
        _pick(read(), sample, n), k, token_counts=weights[sample], seed=seed,
        iterations=iterations, restarts=restarts, tolerance=tolerance,
        **_vectorizer_opts(vectorizer_opts))
    fitted = router._distances_of(vectors)
    del vectors
    routed = _route(router, read(), sample, fitted, n, batch_size, progress)
    if n <= group_docs:
        distances = np.concatenate([block for block in routed])
        return balanced_assign_in_groups(lambda g, m: distances, weights, tolerance,
                                         group_docs), router
    with tempfile.TemporaryFile(prefix="xelm-tfidf-") as spill:
        for block in routed:
            spill.write(np.ascontiguousarray(block, dtype=np.float64).data)
        spill.flush()
        return balanced_assign_in_groups(file_rows(spill, n, k), weights, tolerance,
                                         group_docs), router


def _pick(batches: Iterable[Sequence[str]], sample: np.ndarray, n: int) -> list[str]:
    """The documents at the (sorted) ``sample`` indices, in order."""
    picked: list[str] = []
    start = 0
    for batch in batches:
        lo, hi = np.searchsorted(sample, [start, start + len(batch)])
        picked += [batch[i - start] for i in sample[lo:hi].tolist()]
        start += len(batch)
    _check_read(start, n)
    return picked


def _route(router: TfidfRouter, batches: Iterable[Sequence[str]], sample: np.ndarray,
           fitted: np.ndarray, n: int, batch_size: int, progress: bool):
    """``[b, k]`` distances of consecutive documents, in order (the sample's: ``fitted``)."""
    from xelm.io import progress

    start = 0
    with progress(total=n - len(sample), desc="tf-idf routing", unit="doc",
              disable=not progress) as bar:
        for batch in batches:
            for s in range(0, len(batch), batch_size):
                part = batch[s:s + batch_size]
                lo, hi = np.searchsorted(sample, [start, start + len(part)])
                mine = sample[lo:hi] - start
                block = np.empty((len(part), router.k))
                block[mine] = fitted[lo:hi]
                rest = np.setdiff1d(np.arange(len(part)), mine)
                if rest.size:
                    block[rest] = router._distances_of(router.transform([part[i] for i in rest]))
                    bar.update(rest.size)
                yield block
                start += len(part)
    _check_read(start, n)


def _check_read(found: int, n: int) -> None:
    if found != n:
        raise ValueError(f"read {found} documents, but there are {n} token counts")
