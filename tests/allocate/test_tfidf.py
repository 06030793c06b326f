"""TF-IDF allocation: balanced assignment, the router's files, clustering of toy languages."""

import dataclasses
import json

import numpy as np
import pytest

from xelm.allocate.tfidf import (
    TfidfRouter,
    allocate_tfidf,
    balanced_assign,
    centroids_from_groups,
    estimate_tokens,
)

ALPHABETS = ["abcdef", "ghijkl", "mnopqr", "stuvwx"]


def _toy_corpus(docs_per_language=30, seed=0):
    """Documents of random words; each toy language has its own alphabet."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, alphabet in enumerate(ALPHABETS):
        for _ in range(docs_per_language):
            words = ["".join(rng.choice(list(alphabet), rng.integers(2, 7)))
                     for _ in range(rng.integers(20, 60))]
            texts.append(" ".join(words))
            labels.append(label)
    return texts, np.array(labels)


def _shares(assign, weights, k):
    return np.bincount(assign, weights=weights, minlength=k) / weights.sum() * k


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_balanced_assign_within_tolerance_under_skew(k, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    distances = rng.random((n, k))
    distances[:, 0] -= 0.6  # most documents prefer cluster 0
    distances[: n // 3, 1] -= 0.9  # a third strongly prefer cluster 1
    weights = rng.lognormal(4, 1, n)
    assign = balanced_assign(distances, weights, tolerance=0.05)
    assert np.all(np.abs(_shares(assign, weights, k) - 1) <= 0.045 + 1e-9)
    # the most decided documents keep their first choice
    regret = np.sort(distances, axis=1)
    regret = regret[:, 1] - regret[:, 0]
    decided = np.argsort(-regret)[: n // (4 * k)]
    assert np.all(assign[decided] == distances[decided].argmin(axis=1))


def test_balanced_assign_fills_clusters_nobody_prefers():
    # every document ranks clusters 0 < 1 < 2 < 3: capping alone would leave cluster 3 short
    rng = np.random.default_rng(0)
    distances = np.tile([0.0, 0.1, 0.2, 0.3], (1000, 1)) + rng.random((1000, 4)) * 0.01
    weights = rng.integers(1, 50, 1000).astype(float)
    shares = _shares(balanced_assign(distances, weights), weights, 4)
    assert np.all(np.abs(shares - 1) <= 0.045 + 1e-9)


def test_balanced_assign_keeps_nearest_when_already_balanced():
    distances = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.2]])
    assert balanced_assign(distances, np.ones(4)).tolist() == [0, 0, 1, 1]


def test_balanced_assign_heavy_document_is_the_exception():
    # one document weighs more than a whole share: its cluster must overflow, the rest balance
    weights = np.array([10.0] + [1.0] * 10)
    assign = balanced_assign(np.zeros((11, 2)), weights)
    assert sorted(np.bincount(assign, weights=weights).tolist()) == [10.0, 10.0]


def test_router_matches_sklearn_tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts, _ = _toy_corpus(10)
    router = TfidfRouter.fit(texts, 2, max_features=500)
    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=500,
                                sublinear_tf=True)
    expected = reference.fit_transform(texts)
    assert router.terms == reference.get_feature_names_out().tolist()
    assert np.allclose(router.idf, reference.idf_)
    assert abs(router.transform(texts) - expected).max() < 1e-6


def test_router_save_load_identical_distances(tmp_path):
    texts, _ = _toy_corpus(10)
    router = TfidfRouter.fit(texts, 3, seed=3)
    router.save(tmp_path / "router")
    assert sorted(p.name for p in (tmp_path / "router").iterdir()) == ["router.json",
                                                                       "router.npz"]
    json.loads((tmp_path / "router" / "router.json").read_text())
    loaded = TfidfRouter.load(tmp_path / "router")
    new_texts = ["abc fed cab", "xyz stuv", ""]
    assert np.array_equal(loaded.distances(new_texts), router.distances(new_texts))
    assert np.array_equal(loaded.distances(texts), router.distances(texts))
    assert loaded.k == 3 and loaded.meta == router.meta


def test_distances_are_squared_euclidean_between_unit_vectors():
    texts, _ = _toy_corpus(5)
    router = TfidfRouter.fit(texts, 2)
    x = router.transform(texts[:3]).toarray()
    expected = ((x[:, None, :] - router.centroids[None, :, :]) ** 2).sum(-1)
    assert np.allclose(router.distances(texts[:3], batch_size=2), expected, atol=1e-5)


def test_allocate_tfidf_separates_toy_languages_and_balances():
    texts, labels = _toy_corpus(30)
    tokens = estimate_tokens(texts)
    assign, router = allocate_tfidf(texts, tokens, 4, fit_docs=60, progress=False, seed=0)
    assert router.meta["fit_documents"] == 60 and assign.shape == (len(texts),)
    assert np.all(np.abs(_shares(assign, tokens, 4) - 1) <= 0.05)
    # each toy language mostly lands in one cluster, a different one per language
    majority = [np.bincount(assign[labels == g], minlength=4).argmax() for g in range(4)]
    assert len(set(majority)) == 4
    purity = np.mean([np.mean(assign[labels == g] == majority[g]) for g in range(4)])
    assert purity > 0.9
    routed = router.distances(texts).argmin(axis=1)
    assert np.mean(routed == np.array(majority)[labels]) > 0.9


def test_k_larger_than_documents_is_an_error():
    with pytest.raises(ValueError, match="k=5 .* 3 documents"):
        TfidfRouter.fit(["a b", "c d", "e f"], 5)
    with pytest.raises(ValueError, match="k=5 .* 3 documents"):
        allocate_tfidf(["a b", "c d", "e f"], None, 5)


def test_unknown_vectorizer_option_is_an_error():
    with pytest.raises(ValueError, match="ngram"):
        allocate_tfidf(["a b", "c d"], None, 2, ngram=(1, 2))


def test_group_centroids_route_to_their_group():
    texts, labels = _toy_corpus(8)
    router = TfidfRouter.from_groups(texts, labels, analyzer="char", ngram_range=(1, 2))
    assert router.k == 4
    assert np.array_equal(router.distances(texts).argmin(axis=1), labels)
    other = TfidfRouter.fit(texts, 2)
    centred = dataclasses.replace(other, centroids=centroids_from_groups(other, texts, labels,
                                                                         batch_size=7))
    assert np.array_equal(centred.distances(texts).argmin(axis=1), labels)
    with pytest.raises(ValueError, match="no documents"):
        centroids_from_groups(other, texts[:2], np.array([0, 2]))
