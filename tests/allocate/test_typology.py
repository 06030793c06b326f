"""Typology allocation: URIEL vectors (urielplus = lang2vec), distances with missing features,
the paper's greedy pairing, trees."""

import hashlib
import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from xelm.allocate import typology
from xelm.allocate.typology import (
    TypologyError,
    TypologyTree,
    allocate_typology,
    cluster,
    cosine_distances,
    language_vectors,
    plot_dendrogram,
    to_iso639_3,
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


def test_uriel_query_real_languages():
    vectors = language_vectors(["en", "de", "fr", "ja"])
    assert vectors.shape[0] == 4 and vectors.shape[1] > 50
    assert not np.isnan(vectors).all(axis=1).any()
    d = cosine_distances(vectors)
    assert d[0, 1] < d[0, 3]  # English is closer to German than to Japanese
    assert language_vectors(["en", "ja"], "syntax_average+geo").shape[1] > vectors.shape[1]


# sha256 of lang2vec 1.1.2's syntax_average vectors of PAPER_16 (float64, missing = -1):
# get_features([eng, fra, ...], "syntax_average"), 16 x 103 with 208 missing values
LANG2VEC_SYNTAX_AVERAGE_16 = "ee963590ace32cd338f836b18febf80f0b0ed6bd4f932fdafde11ef9b47d950e"


def test_syntax_average_is_lang2vecs_exactly():
    # urielplus's URIEL averaged over sources and rounded to 4 decimals, as lang2vec's file
    vectors = language_vectors(PAPER_16)
    assert vectors.shape == (16, 103) and int(np.isnan(vectors).sum()) == 208
    assert vectors.flags.c_contiguous  # as lang2vec's rows, so distances are bitwise the same
    digest = hashlib.sha256(np.nan_to_num(vectors, nan=-1.0).astype("<f8").tobytes())
    assert digest.hexdigest() == LANG2VEC_SYNTAX_AVERAGE_16


def _lang2vec_or_skip():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("lang2vec.lang2vec", reason="lang2vec (xelm[lang2vec]) "
                                   "not installed or not importable (needs pkg_resources)")


def test_every_feature_set_matches_lang2vec():
    l2v = _lang2vec_or_skip()
    languages = ["en", "de", "ja", "sw", "aaa"]  # aaa: in URIEL, few features
    codes = [to_iso639_3(lang) for lang in languages]
    slow = {"fam"}  # lang2vec takes seconds on its 3718 names: compared with its file below
    for features in [*(set(typology._feature_sets()) - slow), "syntax_wals|syntax_sswl",
                     "syntax_average+phonology_knn+geo"]:
        expected = l2v.get_features(codes, features, header=True, minimal=False)
        names, vectors = typology.uriel_features(codes, features)
        assert names == expected["CODE"], features
        want = np.array([[math.nan if v == "--" else float(v) for v in expected[c]]
                         for c in codes], dtype=np.float64).reshape(len(codes), -1)
        assert np.array_equal(vectors, want, equal_nan=True), features
    with np.load(os.path.join(os.path.dirname(l2v.__file__), "data", "family_features.npz")) as f:
        rows = [int(np.flatnonzero(f["langs"] == c)[0]) for c in codes]
        names, vectors = typology.uriel_features(codes, "fam")
        assert names == [str(n).replace(" ", "_") for n in f["feats"]]
        assert np.array_equal(np.nan_to_num(vectors, nan=-1.0), f["data"][rows, :, 0])


def test_syntax_average_is_urielplus_api_average():
    # URIELPlus().get_vector with aggregation "A" (mean over sources), rounded to 4 decimals;
    # in a subprocess: URIELPlus() configures root logging and copies its data files
    codes = [to_iso639_3(lang) for lang in PAPER_16]
    code = ("import json; from urielplus.urielplus import URIELPlus; u = URIELPlus(); "
            f"u.set_aggregation('A'); print(json.dumps(u.get_vector('syntactic', {codes!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0 and "Error" in out.stderr and "urielplus" not in out.stderr:
        pytest.skip(f"URIELPlus() failed here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr
    table = json.loads(out.stdout.strip().splitlines()[-1])
    api = np.round(np.array([table[c] for c in codes], dtype=np.float64), 4)
    ours = np.nan_to_num(language_vectors(PAPER_16), nan=-1.0)
    assert np.array_equal(api, ours)


def test_no_pkg_resources_and_no_lang2vec_import():
    # setuptools>=81 has no pkg_resources: the default typology must not need it
    code = ("import sys; sys.modules['pkg_resources'] = None; "
            "from xelm.allocate.typology import allocate_typology; "
            f"groups, _ = allocate_typology({PAPER_16!r}, 8); "
            "print(len(groups), 'lang2vec.lang2vec' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["8", "False", "False"]


def test_knn_sets_without_lang2vec_name_the_extra(monkeypatch):
    monkeypatch.setattr(typology, "_lang2vec_dir", lambda: None)
    typology._index.cache_clear()
    typology._rows.cache_clear()
    try:
        assert "syntax_knn" not in typology._feature_sets()
        assert "syntax_average" in typology._feature_sets()
        with pytest.raises(TypologyError, match=r"syntax_knn.*xelm\[lang2vec\]"):
            language_vectors(["en"], "syntax_knn")
        with pytest.raises(TypologyError, match=r"aaa.*covered by .*geo.*xelm\[lang2vec\]"):
            language_vectors(["en", "aaa"])
    finally:
        typology._index.cache_clear()
        typology._rows.cache_clear()


def test_knn_sets_read_lang2vec_data_without_importing_it(tmp_path):
    if typology._lang2vec_dir() is None:
        pytest.skip("lang2vec (xelm[lang2vec]) not installed")
    # console scripts put bin/ first on sys.path, where lang2vec installs a lang2vec.py script
    (tmp_path / "lang2vec.py").write_text("raise RuntimeError('the script, not the package')\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
            "sys.modules['pkg_resources'] = None; "
            "from xelm.allocate.typology import language_vectors; "
            "print(language_vectors(['en', 'aaa'], 'syntax_knn').shape, 'lang2vec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 103) False"


def test_missing_urielplus_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "urielplus", None)
    with pytest.raises(TypologyError, match=r"pip install 'urielplus"):
        typology._urielplus_dir()


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
