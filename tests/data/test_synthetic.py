import collections
import csv
import itertools
import json
import re

import numpy as np
import pytest

from xelm.data.synthetic import (SCRIPTS, SyntheticLanguage, feature_table, generate_documents,
                                 make_languages, write_corpus)

PUNCTUATION = set(" .,։।،")


def _tokens(documents: list[str]) -> list[str]:
    return re.sub(r"[.,։।،]", " ", " ".join(documents)).lower().split()


def _words(documents: list[str]) -> set[str]:
    return set(_tokens(documents))


@pytest.fixture(scope="module")
def languages() -> list[SyntheticLanguage]:
    return make_languages(12, seed=0)


@pytest.fixture(scope="module")
def word_counts(languages) -> dict[str, collections.Counter]:
    return {lang.code: collections.Counter(_tokens(generate_documents(lang, 40_000)))
            for lang in languages}


def test_codes_names_and_families(languages):
    assert [lang.code for lang in languages][:3] == ["qaa", "qab", "qac"]
    assert languages[0].name == "Synthetic Aa"
    assert len({lang.family for lang in languages}) == 4
    assert all(lang.script in SCRIPTS for lang in languages)
    assert len({lang.word_order for lang in languages}) >= 2


def test_scripts_cross_family_lines(languages):
    scripts_of, families_of = collections.defaultdict(set), collections.defaultdict(set)
    for lang in languages:
        scripts_of[lang.family].add(lang.script)
        families_of[lang.script].add(lang.family)
    assert any(len(scripts) > 1 for scripts in scripts_of.values())
    assert any(len(families) > 1 for families in families_of.values())


@pytest.mark.parametrize("n", [1, 17])
def test_rejects_out_of_range_language_counts(n):
    with pytest.raises(ValueError, match="between 2 and 16"):
        make_languages(n)


@pytest.mark.parametrize("n", [2, 3, 7, 16])
def test_any_allowed_count_gives_distinct_codes(n):
    languages = make_languages(n, seed=1)
    assert len({lang.code for lang in languages}) == n
    assert len({lang.family for lang in languages}) >= 2


def test_documents_reach_the_byte_budget_without_newlines(languages):
    documents = generate_documents(languages[0], 20_000, seed=3)
    sizes = [len(d.encode("utf-8")) + 1 for d in documents]
    assert 20_000 <= sum(sizes) < 20_000 + max(sizes)
    assert all("\n" not in d and d.strip() == d and d for d in documents)
    assert generate_documents(languages[0], 0) == []


def test_documents_depend_on_the_seed(languages):
    first = generate_documents(languages[1], 5_000, seed=0)
    assert first == generate_documents(languages[1], 5_000, seed=0)
    assert first != generate_documents(languages[1], 5_000, seed=1)


def test_write_corpus_is_byte_identical_for_a_seed(tmp_path):
    write_corpus(tmp_path / "a", n_languages=4, bytes_per_language=5_000, seed=7)
    write_corpus(tmp_path / "b", n_languages=4, bytes_per_language=5_000, seed=7)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_write_corpus_files(tmp_path):
    languages = write_corpus(tmp_path, n_languages=3, bytes_per_language=8_000, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv", "languages.json",
                                                          "qaa.txt", "qab.txt", "qac.txt"]
    for lang in languages:
        raw = (tmp_path / f"{lang.code}.txt").read_bytes()
        assert 8_000 <= len(raw) < 12_000
        lines = raw.decode("utf-8").split("\n")
        assert lines[-1] == "" and all(line.strip() for line in lines[:-1])
    stored = json.loads((tmp_path / "languages.json").read_text(encoding="utf-8"))
    assert [SyntheticLanguage(**entry) for entry in stored] == languages
    rows = list(csv.reader((tmp_path / "features.csv").open(encoding="utf-8")))
    columns, matrix = feature_table(languages)
    assert rows[0] == ["language", *columns]
    assert [row[0] for row in rows[1:]] == [lang.code for lang in languages]
    np.testing.assert_allclose(np.array([row[1:] for row in rows[1:]], float), matrix, atol=1e-5)


def test_every_script_has_its_own_characters():
    chars = {name: set("".join(s.glyphs + (s.vowel_signs or ()))) for name, s in SCRIPTS.items()}
    assert all(len(script.glyphs) == 24 for script in SCRIPTS.values())
    for a, b in itertools.combinations(chars, 2):
        assert not chars[a] & chars[b], (a, b)


def test_different_scripts_use_nearly_disjoint_characters(languages):
    first = {}
    for lang in languages:
        first.setdefault(lang.script, lang)
    chars = {script: set("".join(generate_documents(lang, 5_000))) - PUNCTUATION
             for script, lang in first.items()}
    for a, b in itertools.combinations(chars, 2):
        shared = chars[a] & chars[b]
        assert len(shared) <= 0.05 * min(len(chars[a]), len(chars[b])), (a, b, shared)


def _coverage(a: collections.Counter, b: collections.Counter) -> float:
    """Share of the running words of each language that the other one also uses."""
    shares = [sum(n for w, n in x.items() if w in y) / x.total() for x, y in ((a, b), (b, a))]
    return sum(shares) / 2


def _jaccard(a: collections.Counter, b: collections.Counter) -> float:
    return len(a.keys() & b.keys()) / len(a.keys() | b.keys())


@pytest.mark.parametrize("overlap", [_coverage, _jaccard])
def test_family_members_share_more_words(languages, word_counts, overlap):
    """Only same-script pairs: words in different scripts never match anyway."""
    within, across = [], []
    for a, b in itertools.combinations(languages, 2):
        if a.script == b.script:
            (within if a.family == b.family else across).append(
                overlap(word_counts[a.code], word_counts[b.code]))
    assert within and across
    assert np.mean(within) > 1.5 * np.mean(across)


def test_feature_table_groups_families(languages):
    columns, matrix = feature_table(languages)
    assert matrix.shape == (len(languages), len(columns)) and np.isfinite(matrix).all()
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    family = np.array([lang.family for lang in languages])
    same = family[:, None] == family[None, :]
    off_diagonal = ~np.eye(len(languages), dtype=bool)
    assert distance[same & off_diagonal].mean() < 0.5 * distance[~same].mean()


@pytest.mark.parametrize("seed", range(5))
def test_feature_table_groups_families_for_other_seeds(seed):
    languages = make_languages(12, seed=seed)
    _, matrix = feature_table(languages)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    family = np.array([lang.family for lang in languages])
    same = (family[:, None] == family[None, :]) & ~np.eye(len(languages), dtype=bool)
    assert distance[same].mean() < distance[family[:, None] != family[None, :]].mean()


def _tfidf(documents: list[str]) -> np.ndarray:
    """Row-normalised TF-IDF, enough to find nearest neighbours."""
    tokens = [_tokens([d]) for d in documents]
    index = {w: i for i, w in enumerate(sorted({w for doc in tokens for w in doc}))}
    counts = np.zeros((len(documents), len(index)))
    for row, doc in enumerate(tokens):
        np.add.at(counts[row], [index[w] for w in doc], 1)
    weights = counts * np.log(len(documents) / (counts > 0).sum(axis=0))
    return weights / np.linalg.norm(weights, axis=1, keepdims=True)


def test_documents_of_a_topic_share_vocabulary(languages):
    """TF-IDF nearest neighbours mostly share a topic (chance would be 1 in 8)."""
    from xelm.data.synthetic import N_NOUNS, _lexicon, _topics

    lang, forms = languages[0], _lexicon(languages[0]).nouns.values()
    documents = generate_documents(lang, 40_000)
    topic_nouns = [{nouns[i] for i in topic for nouns in forms}
                   for topic in _topics(lang.seed, N_NOUNS)]
    labels = np.array([np.argmax([len(_words([d]) & nouns) for nouns in topic_nouns])
                       for d in documents])
    tfidf = _tfidf(documents)
    similarity = tfidf @ tfidf.T
    np.fill_diagonal(similarity, -1)
    assert (labels[similarity.argmax(axis=1)] == labels).mean() > 0.5
