"""Minimal pairs from the synthetic grammar: the well-formed sentence is what the
generator writes, the other differs in exactly the one property named."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import pytest

from xelm.data.synthetic import (N_ADJECTIVES, N_ADPOSITIONS, N_NOUNS, N_VERBS, SCRIPTS,
                                 generate_documents, lexicon, make_languages)
from xelm.evaluate.pairs_synthetic import (PHENOMENA, Grammar, build_synthetic_pairs,
                                           clause_pattern, language_pairs)
from xelm.evaluate.tasks import split_sentences

LANGUAGES = make_languages(12, seed=0)


@pytest.fixture(scope="module")
def built():
    return build_synthetic_pairs(LANGUAGES, n=120, seed=0)


def _words(lang, sentence: str) -> list[str]:
    return sentence.removesuffix(SCRIPTS[lang.script].stop).lower().split()


@pytest.mark.parametrize("lang", [*LANGUAGES, *make_languages(5, seed=3)], ids=lambda lg: lg.code)
def test_word_forms_are_the_generators(lang):
    g, lex = Grammar(lang), lexicon(lang)
    for c in range(0, N_NOUNS, 7):
        for case in ("nom", "acc", "obl"):
            for pl in (False, True):
                assert g.noun(c, case, pl) == lex.nouns[case, pl][c]
    for c in range(0, N_VERBS, 5):
        for past in (False, True):
            for pl in (False, True):
                assert g.verb(c, past, pl) == lex.verbs[past, pl][c]
    for c in range(N_ADJECTIVES):
        assert g.adjective(c, True) == lex.adjectives[True][c]
    assert [g.adposition(c) for c in range(N_ADPOSITIONS)] == lex.adpositions
    assert {k: g.word(k) for k in lex.function} == lex.function


def test_every_language_gets_the_phenomena_its_grammar_has(built):
    pairs, skipped = built
    for lang in LANGUAGES:
        got = set(pairs[lang.code])
        assert got | set(skipped.get(lang.code, {})) == set(PHENOMENA)
        assert {"word_order", "adposition", "adjective_order", "lexical_unrelated"} <= got
        assert ("agreement" in got) == (lang.inflection != "none" and lang.plural_marking)
        assert ("case" in got) == lang.case_marking
        assert ("affix_position" in got) == (lang.inflection != "none")
        for rows in pairs[lang.code].values():
            assert len(rows) == 120 and len({r["good"] for r in rows}) == 120
    isolating = next(lg for lg in LANGUAGES if lg.inflection == "none")
    assert skipped[isolating.code]["agreement"] == "isolating: the verb does not agree"
    with pytest.raises(ValueError, match="has no agreement pairs: isolating"):
        language_pairs(Grammar(isolating), "agreement", [], 5)


def test_reorderings_keep_the_words_and_edits_change_one_word(built):
    pairs, _ = built
    for lang in LANGUAGES:
        lex = lexicon(lang)
        verbs = {w.lower() for forms in lex.verbs.values() for w in forms}
        nom = {w.lower() for pl in (False, True) for w in lex.nouns["nom", pl]}
        acc = {w.lower() for pl in (False, True) for w in lex.nouns["acc", pl]}
        every = verbs | nom | {w.lower() for forms in lex.nouns.values() for w in forms} | {
            w.lower() for forms in lex.adjectives.values() for w in forms}
        for phenomenon, rows in pairs[lang.code].items():
            for r in rows:
                good, bad = _words(lang, r["good"]), _words(lang, r["bad"])
                assert good != bad
                if phenomenon in ("word_order", "adposition", "adjective_order"):
                    assert Counter(good) == Counter(bad), (phenomenon, r)
                    continue
                diff = [(a, b) for a, b in zip(good, bad) if a != b]
                assert len(good) == len(bad) and len(diff) == 1, (phenomenon, r)
                (a, b), = diff
                if phenomenon == "agreement":
                    assert a in verbs and b in verbs
                elif phenomenon == "case":  # the object unmarked, or the subject marked
                    marked = (a, b) if r["case_role"] == "obj" else (b, a)
                    assert marked[0] in acc and marked[1] in nom and a != b
                elif phenomenon == "affix_position":
                    assert a in verbs and b not in verbs
                else:  # a foreign root: not a word of this language
                    assert a in nom and b not in every


def _tagger(lang, strict: bool):
    """Each word's possible roles (one letter, as in clause_pattern) from the generator's
    lexicon; plural and past particles of isolating languages are dropped. ``strict``: a
    function word is only that (a noun of the same spelling is not considered)."""
    lex = lexicon(lang)
    tags = defaultdict(set)
    particles = (("plural", ""), ("past", "")) if lang.inflection == "none" else ()
    function = {lex.function[name].lower(): letter
                for name, letter in (("det", "D"), ("neg", "G"), *particles)}
    tables = [("N", f) for f in lex.nouns.values()] + [("V", f) for f in lex.verbs.values()] \
        + [("A", f) for f in lex.adjectives.values()] + [("P", lex.adpositions)]
    for letter, forms in tables:
        for form in forms:
            tags[form.lower().split()[-1]].add(letter)
    for word, letter in function.items():
        tags[word] = {letter} if strict else tags[word] | {letter}
    stop = SCRIPTS[lang.script].stop

    def readings(sentence: str) -> set[str]:
        options = [sorted(tags.get(w, {"?"})) for w in sentence.lower().rstrip(stop).split()]
        return {"".join(choice) for choice in itertools.product(*options)}
    return readings


def _parses(lang, sentences, strict: bool = False) -> float:
    """The share of ``sentences`` with a reading that is a clause of the language."""
    pattern, readings = clause_pattern(lang), _tagger(lang, strict)
    return sum(any(pattern.fullmatch(r) for r in readings(s)) for s in sentences) / len(sentences)


def test_good_sentences_parse_as_the_generators_clauses_and_bad_ones_do_not(built):
    """clause_pattern, checked on the generator's own one-clause sentences, accepts the
    good sentences and rejects the reordered ones (words tagged with the lexicon; a bad
    sentence is not allowed the reading where its determiner is a noun)."""
    pairs, _ = built
    for lang in LANGUAGES:
        comma = SCRIPTS[lang.script].comma
        generated = [s for d in generate_documents(lang, 30_000) for s in split_sentences(d)
                     if comma not in s]
        assert _parses(lang, generated) > 0.99, lang.code
        for phenomenon in ("word_order", "adposition", "adjective_order"):
            rows = pairs[lang.code][phenomenon]
            assert _parses(lang, [r["good"] for r in rows]) > 0.99, (lang.code, phenomenon)
            bad = [r["bad"] for r in rows]
            assert _parses(lang, bad, strict=True) < 0.05, (lang.code, phenomenon)


def test_case_pairs_are_balanced_in_length(built):
    pairs, _ = built
    rows = [r for per in pairs.values() for r in per.get("case", [])]
    longer = sum(len(r["bad"]) > len(r["good"]) for r in rows) / len(rows)
    assert 0.35 < longer < 0.65 and {r["case_role"] for r in rows} == {"obj", "subj"}


def test_pairs_are_seeded():
    g = Grammar(LANGUAGES[0])
    donors = [Grammar(lg) for lg in LANGUAGES[3:6]]
    a = language_pairs(g, "lexical_unrelated", donors, 30, seed=1)
    assert a == language_pairs(g, "lexical_unrelated", donors, 30, seed=1)
    assert a != language_pairs(g, "lexical_unrelated", donors, 30, seed=2)
    assert {r["donor"] for r in a} <= {d.lang.code for d in donors}
    with pytest.raises(ValueError, match="unknown phenomena"):
        build_synthetic_pairs(LANGUAGES, phenomena=("gender",))
    with pytest.raises(ValueError, match="no synthetic language"):
        build_synthetic_pairs(LANGUAGES, only=["xx"])
