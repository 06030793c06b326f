"""Typology allocation: distances with missing features, the paper's greedy pairing, trees."""

import json
import math

import numpy as np
import pytest

from xelm.allocate.typology import (
    TypologyError,
    TypologyTree,
    allocate_typology,
    cluster,
    cosine_distances,
    language_vectors,
    plot_dendrogram,
)

PAPER_16 = "en fr es de el bg ru tr ar vi zh hi sw ur ja ko".split()


def _sorted(groups):
    return sorted(sorted(g) for g in groups)


def test_cosine_skips_missing_features():
    nan = math.nan
    vectors = np.array([[1.0, 0.0, nan], [1.0, 1.0, 2.0], [nan, nan, nan]])
    own = cosine_distances(vectors)
    # dot over shared features (1*1 + 0*1); norms over each vector's own features: 1 and 6
    assert own[0, 1] == pytest.approx(1 - 1 / math.sqrt(6))
    shared = cosine_distances(vectors, norms="shared")
    # both norms over the shared features 0 and 1: 1 and 2
    assert shared[0, 1] == pytest.approx(1 - 1 / math.sqrt(2))
    assert own[0, 2] == 1.0 and shared[1, 2] == 1.0  # nothing in common: distance 1
    assert np.allclose(np.diag(own), 0) and np.allclose(own, own.T)


def test_cosine_without_missing_matches_scipy():
    from scipy.spatial.distance import cdist

    vectors = np.random.default_rng(0).random((5, 7))
    expected = cdist(vectors, vectors, "cosine")
    assert np.allclose(cosine_distances(vectors), expected)
    assert np.allclose(cosine_distances(vectors, norms="shared"), expected)


def _matrix(n, entries, default=0.9):
    d = np.full((n, n), default)
    np.fill_diagonal(d, 0.0)
    for (i, j), value in entries.items():
        d[i, j] = d[j, i] = value
    return d


def test_paper_greedy_pairing_known_answer():
    # B-C is the closest pair, so A and D must pair with each other although A is near B
    # and D near C: greedy pairing, not nearest neighbours. Round 2 joins them at min(A-B).
    d = _matrix(4, {(1, 2): 0.1, (0, 1): 0.2, (2, 3): 0.3, (0, 3): 0.8})
    tree = cluster(d, list("ABCD"), k=2)
    assert _sorted(tree.groups()) == [["A", "D"], ["B", "C"]]
    first, second, root = tree.nodes[4:]
    assert (first.children, first.distance, first.round) == ([1, 2], 0.1, 1)
    assert (second.children, second.distance, second.round) == ([0, 3], 0.8, 1)
    assert (root.distance, root.round) == (0.2, 2)
    assert tree.groups(1) == [list("ABCD")] and tree.groups(4) == [[x] for x in "ABCD"]


def test_paper_odd_count_and_exact_stop():
    # 5 items: round 1 makes 2 pairs and one waits. k=4 stops after the closest merge.
    d = _matrix(5, {(0, 1): 0.1, (2, 3): 0.2, (3, 4): 0.25})
    assert _sorted(cluster(d, list("ABCDE"), k=4).groups()) == [["A", "B"], ["C"], ["D"], ["E"]]
    assert _sorted(cluster(d, list("ABCDE"), k=3).groups()) == [["A", "B"], ["C", "D"], ["E"]]
    # 8 items, k=3: round 2 would halve 4 -> 2, so it stops after its closest merge.
    d8 = _matrix(8, {(0, 1): 0.1, (2, 3): 0.1, (4, 5): 0.1, (6, 7): 0.1,
                     (1, 2): 0.3, (5, 6): 0.5})
    groups = cluster(d8, list("ABCDEFGH"), k=3).groups()
    assert _sorted(groups) == [["A", "B", "C", "D"], ["E", "F"], ["G", "H"]]


@pytest.mark.parametrize("linkage", ["average", "complete", "single", "ward"])
def test_scipy_linkages_stop_at_exactly_k(linkage):
    points = np.random.default_rng(1).random((9, 4))
    names = [f"l{i}" for i in range(9)]
    for k in (1, 2, 5, 9):
        groups = cluster(cosine_distances(points), names, k, linkage=linkage).groups()
        assert len(groups) == k and sorted(sum(groups, [])) == sorted(names)


def test_tree_json_round_trip_and_queries():
    d = _matrix(6, {(0, 1): 0.1, (2, 3): 0.2, (4, 5): 0.3, (1, 2): 0.4})
    tree = cluster(d, list("abcdef"), k=3)
    again = TypologyTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    assert again == tree
    assert again.groups() == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert again.leaves() == list("abcdef")
    assert again.parent(0) == 6 and again.parent(len(again.nodes) - 1) is None
    with pytest.raises(ValueError, match="1 <= k <= 6"):
        again.groups(7)


def test_k_larger_than_languages_is_a_clear_error():
    with pytest.raises(ValueError, match="k=5 .* 3 languages"):
        cluster(_matrix(3, {}), list("abc"), k=5)
    with pytest.raises(ValueError, match="k=3 .* 2 languages"):
        allocate_typology(["en", "de"], k=3)


def test_lang2vec_query_real_languages():
    vectors = language_vectors(["en", "de", "fr", "ja"])
    assert vectors.shape[0] == 4 and vectors.shape[1] > 50
    assert not np.isnan(vectors).all(axis=1).any()
    d = cosine_distances(vectors)
    assert d[0, 1] < d[0, 3]  # English is closer to German than to Japanese
    assert language_vectors(["en", "ja"], "syntax_knn+geo").shape[1] > vectors.shape[1]


def test_paper_16_languages_match_the_released_8_groups():
    # The x-elm release evaluates these 8 clusters (job_clustered_downstream_eval.sh).
    groups, tree = allocate_typology(PAPER_16, 8)
    assert _sorted(groups) == _sorted([["en", "es"], ["de", "el"], ["ja", "ko"], ["hi", "ur"],
                                       ["bg", "ru"], ["fr", "ar"], ["tr", "zh"], ["sw", "vi"]])
    assert len(tree.groups(4)) == 4 and len(tree.groups(2)) == 2


def test_unknown_language_names_it():
    with pytest.raises(TypologyError, match="qaa"):
        language_vectors(["en", "qaa"])
    with pytest.raises(TypologyError, match="zz9"):
        language_vectors(["zz9"])


def test_language_without_features_names_covering_sets():
    # 'aaa' (Ghotuo) is in URIEL but has no syntax_average values
    with pytest.raises(TypologyError, match=r"aaa.*covered by .*syntax_knn"):
        language_vectors(["en", "aaa"])


def test_bad_feature_sets_rejected():
    with pytest.raises(TypologyError, match="learned"):
        language_vectors(["en"], "learned")
    with pytest.raises(TypologyError, match="syntax_avg"):
        language_vectors(["en"], "syntax_avg")


def test_features_file(tmp_path):
    table = tmp_path / "features.csv"
    table.write_text("language,f1,f2,f3\nqaa,1,0,\nqab,1,0.1,1\nqac,0,1,1\nqad,0,1,0.9\n")
    vectors = language_vectors(["qab", "qaa"], features_file=str(table))
    assert vectors.shape == (2, 3) and np.isnan(vectors[1, 2])
    groups, _ = allocate_typology(["qaa", "qab", "qac", "qad"], 2, features_file=str(table))
    assert _sorted(groups) == [["qaa", "qab"], ["qac", "qad"]]
    with pytest.raises(TypologyError, match="qae"):
        language_vectors(["qae"], features_file=str(table))
    bad = tmp_path / "bad.csv"
    bad.write_text("language,f1\nqaa,high\n")
    with pytest.raises(TypologyError, match="line 2"):
        language_vectors(["qaa"], features_file=str(bad))


def test_plot_dendrogram(tmp_path):
    tree = cluster(_matrix(4, {(0, 1): 0.1, (2, 3): 0.2}), list("abcd"), k=2)
    plot_dendrogram(tree, tmp_path / "plots" / "tree.png")
    assert (tmp_path / "plots" / "tree.png").stat().st_size > 1000
