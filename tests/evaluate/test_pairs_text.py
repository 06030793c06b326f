"""Minimal pairs from real-text sentences: each perturbation does what it says."""

from __future__ import annotations

import math
import random

import pytest

from xelm.evaluate.pairs_text import (LanguageText, clusters, is_spaced, productive_endings,
                                      script_of, text_pairs)

STEMS = {"en": "walk talk jump play call help work look kick pull push fill".split(),
         "de": "spiel lauf sag mach hol kauf such zeig frag lern".split()}
ENDINGS = {"en": ["ed", "ing", "s", "er"], "de": ["en", "te", "st", "t"]}
SMALL = {"en": "the a of and to in".split(), "de": "der die und zu im mit".split()}


def _latin(lang: str, n_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"{lang}{seed}")
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(4):
            words = [rng.choice(SMALL[lang]) if rng.random() < 0.4 else
                     rng.choice(STEMS[lang]) + rng.choice(ENDINGS[lang])
                     for _ in range(rng.randint(6, 10))]
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def _greek(n_docs: int) -> list[str]:
    rng = random.Random(1)
    words = "και του της στον λογος αγαπη ειπεν ημερα".split()
    return [" ".join(" ".join(rng.choice(words) for _ in range(7)).capitalize() + "."
                     for _ in range(3)) for _ in range(n_docs)]


def _chinese(n_docs: int) -> list[str]:
    rng = random.Random(2)
    chars = "起初神創造天地空虛混沌淵面黑暗靈運行水上說要有光就看是好的"
    return ["".join("".join(rng.choice(chars) for _ in range(rng.randint(8, 20))) + "。"
                    for _ in range(4)) for _ in range(n_docs)]


@pytest.fixture(scope="module")
def texts():
    docs = {"en": _latin("en", 60), "de": _latin("de", 60), "el": _greek(40),
            "zh": _chinese(40)}
    return {lang: LanguageText(lang, d) for lang, d in docs.items()}


def test_language_statistics(texts):
    assert [texts[lang].script for lang in ("en", "de", "el", "zh")] == \
        ["LATIN", "LATIN", "GREEK", "CJK"]
    assert texts["en"].spaced and not texts["zh"].spaced
    assert texts["en"].cased and not texts["zh"].cased
    assert {"ed", "ing", "er"} <= set(texts["en"].endings[:8])
    assert script_of("1234 ...") is None
    assert clusters("कि सु") == ["कि", " ", "सु"]  # vowel signs stay on their consonant
    assert not is_spaced(["起初神創造天地。", "地是空虛混沌．淵面黑暗 三"])
    assert is_spaced(["In the beginning.", "Now the earth"])


def test_swap_adjacent_swaps_two_neighbours(texts):
    for lang in ("en", "zh"):
        t = texts[lang]
        rows = text_pairs(t, "swap_adjacent", 40, seed=0)
        assert len(rows) == 40
        for r in rows:
            good, bad, i = t.units(r["good"]), t.units(r["bad"]), r["position"]
            assert bad == good[:i] + [good[i + 1], good[i]] + good[i + 2:] and good != bad
            assert i >= 1 or not t.cased  # never the capitalised first word


def test_foreign_word_comes_from_a_same_script_language_at_the_same_frequency(texts):
    en, de = texts["en"], texts["de"]
    rows = text_pairs(en, "foreign_word", 30, seed=0, others=list(texts.values()))
    assert len(rows) == 30
    for r in rows:
        good, bad = r["good"].split(), r["bad"].split()
        diff = [i for i, (a, b) in enumerate(zip(good, bad)) if a != b]
        assert len(good) == len(bad) and diff == [r["position"]]
        word, replacement = good[diff[0]], bad[diff[0]]
        assert replacement in de.counts and replacement.lower() not in en.vocab
        assert abs(math.log(de.frequency(replacement) / en.frequency(word))) <= math.log(2)
    with pytest.raises(ValueError, match="no other language in the GREEK script"):
        text_pairs(texts["el"], "foreign_word", 5, others=list(texts.values()))


def test_affix_swap_exchanges_two_productive_endings(texts):
    t = texts["en"]
    rows = text_pairs(t, "affix_swap", 40, seed=3)
    assert len(rows) == 40
    for r in rows:
        good, bad = r["good"].split(), r["bad"].split()
        (i, j), (ei, ej) = r["positions"], r["endings"]
        assert {ei, ej} <= set(t.endings) and ei != ej
        assert bad[i] == good[i][:-len(ei)] + ej and bad[j] == good[j][:-len(ej)] + ei
        assert [w for k, w in enumerate(bad) if k not in (i, j)] == \
            [w for k, w in enumerate(good) if k not in (i, j)]
        assert bad[i].lower() not in t.vocab or bad[j].lower() not in t.vocab
    with pytest.raises(ValueError, match="does not separate words by spaces"):
        text_pairs(texts["zh"], "affix_swap", 5)


def test_pairs_are_seeded_and_sentences_used_once(texts):
    a = text_pairs(texts["de"], "swap_adjacent", 50, seed=1)
    assert a == text_pairs(texts["de"], "swap_adjacent", 50, seed=1)
    assert a != text_pairs(texts["de"], "swap_adjacent", 50, seed=2)
    assert len({r["good"] for r in a}) == len(a)
    with pytest.raises(ValueError, match="unknown perturbation"):
        text_pairs(texts["de"], "shuffle", 5)


def test_long_sentences_are_cut_and_the_token_budget_applies():
    doc = " ".join(f"word{i}" for i in range(75)) + "."
    t = LanguageText("xx", [doc])
    assert [len(s.split()) for s in t.sentences] == [30, 30, 15]
    short = LanguageText("xx", [doc], fits=lambda s: len(s.split()) < 20)
    assert [len(s.split()) for s in short.sentences] == [15]
    assert productive_endings({"walked": 1, "walking": 1, "talked": 1, "talks": 1})[:1] == ["ed"]
