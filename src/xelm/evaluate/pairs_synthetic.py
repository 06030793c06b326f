"""Minimal pairs from the synthetic corpus' own grammar (:mod:`xelm.data.synthetic`).

Each pair is a well-formed sentence of one artificial language, built as the generator
builds a clause (subject, verb, optional object and oblique phrase; Zipf-distributed
concepts; determiners and adjectives at the generator's rates), and a copy that differs
in exactly one property the generator controls. A model that learnt the language should
give the well-formed one the higher probability. Phenomena:

``word_order``        subject, verb and object in one of the two other orders (SVO/SOV/VSO)
``adposition``        the oblique phrase's adposition on the other side of its noun phrase
``adjective_order``   an adjective on the other side of its noun (AN <-> NA)
``agreement``         the verb in the other number than its subject (languages that mark
                      the verb for number and show plural on nouns; half the subjects plural)
``case``              the object without its accusative case, or (half the pairs, so that
                      the bad sentence is as often longer as shorter) the subject with it
                      (languages with case marking)
``affix_position``    the verb's affixes on the wrong side of its stem (suffixing <-> prefixing)
``lexical_related``   the subject noun's root replaced by the same concept's root in a
                      related language (same family), inflected and written as in this one
``lexical_unrelated`` the same with a root from a language of another family

A phenomenon a language's grammar does not have (e.g. agreement in an isolating
language) is skipped with the reason; so are lexical pairs whose foreign root equals
the language's own or is one of its words, and affix_position pairs whose misplaced
affixes happen to spell a word of the language, and adjective_order/adposition pairs
whose word roles still form a clause of the language (:func:`reads_as_grammatical`).
Everything is a function of the language
and ``seed``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from xelm.data.synthetic import (N_ADJECTIVES, N_ADPOSITIONS, N_NOUNS, N_VERBS, SCRIPTS,
                                 WORD_ORDERS, SyntheticLanguage, attach, lexicon,
                                 morphology)
from xelm.rundir import RunDir

PHENOMENA = ("word_order", "adposition", "adjective_order", "agreement", "case",
             "affix_position", "lexical_related", "lexical_unrelated")
_VERB0, _ADJ0 = N_NOUNS, N_NOUNS + N_VERBS
_ADP0 = N_NOUNS + N_VERBS + N_ADJECTIVES


def read_languages(corpus: str | Path) -> list[SyntheticLanguage] | None:
    """The synthetic languages behind ``corpus`` (a run directory, its ``data/synthetic``
    or a folder written by ``write_corpus``), or None for any other corpus."""
    corpus = Path(corpus)
    for path in (RunDir(corpus).synthetic / "languages.json", corpus / "languages.json"):
        if path.is_file():
            return [SyntheticLanguage(**e) for e in json.loads(path.read_text(encoding="utf-8"))]
    return None


class Grammar:
    """Word forms and phrases of one language, rebuilt from its morphology exactly as
    the generator inflects them; ``inflection`` and the order arguments can be
    overridden, which is how a perturbed form is made."""

    def __init__(self, lang: SyntheticLanguage):
        self.lang, self.m = lang, morphology(lang)
        self.script = SCRIPTS[lang.script]
        self.known_roots = frozenset(self.m.roots)
        iso = lang.inflection == "none"
        self.plural = ((self.m.function if iso else self.m.affixes)["plural"]
                       if lang.plural_marking else "")
        self.case = ({"acc": self.m.affixes["acc"], "obl": self.m.affixes["obl"]}
                     if lang.case_marking else {})
        self.past, self.agree = ((self.m.function["past"], "") if iso else
                                 (self.m.affixes["past"], self.m.affixes["agree"]))

    def _form(self, root: str, morphemes: tuple[str, ...], inflection: str | None) -> str:
        return self.script.render(attach(inflection or self.lang.inflection, root, morphemes))

    def noun(self, concept: int, case: str = "nom", plural: bool = False,
             root: str | None = None, inflection: str | None = None) -> str:
        morphemes = (self.case.get(case, ""), self.plural if plural else "")
        return self._form(root or self.m.roots[concept], morphemes, inflection)

    def verb(self, concept: int, past: bool, plural: bool, inflection: str | None = None) -> str:
        morphemes = (self.agree if plural else "", self.past if past else "")
        return self._form(self.m.roots[_VERB0 + concept], morphemes, inflection)

    def adjective(self, concept: int, plural: bool) -> str:
        marked = plural and self.lang.inflection != "none"
        return self._form(self.m.roots[_ADJ0 + concept], (self.plural if marked else "",), None)

    def adposition(self, concept: int) -> str:
        return self._form(self.m.roots[_ADP0 + concept], (), None)

    @cached_property
    def known_forms(self) -> frozenset[str]:
        """Every word form the generator can write in this language."""
        lex = lexicon(self.lang)
        forms = [*lex.adpositions, *lex.function.values()]
        for table in (lex.nouns, lex.verbs, lex.adjectives):
            forms += [w for words in table.values() for w in words]
        return frozenset(forms)

    def word(self, name: str) -> str:
        return self.script.render(self.m.function[name])

    def sentence(self, words: list[str]) -> str:
        text = " ".join(words) + self.script.stop
        return text[0].upper() + text[1:] if self.script.cased else text


class _Draw:
    """Concept choice as the generator makes it without topics: Zipf over each part of
    speech (exponent 1.05)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._cdf = {}
        for pos, n in (("noun", N_NOUNS), ("verb", N_VERBS), ("adj", N_ADJECTIVES),
                       ("adp", N_ADPOSITIONS)):
            cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** 1.05)
            self._cdf[pos] = cdf / cdf[-1]

    def __call__(self, pos: str) -> int:
        cdf = self._cdf[pos]
        return int(min(np.searchsorted(cdf, self.rng.random()), len(cdf) - 1))

    def p(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)


@dataclass
class Phrase:
    """A noun phrase: concept ids (``adj``/``adp`` None when absent)."""

    noun: int
    case: str
    plural: bool
    det: bool
    adj: int | None = None
    adp: int | None = None


@dataclass
class Clause:
    subject: Phrase
    verb: int
    past: bool
    neg: bool
    obj: Phrase | None
    oblique: Phrase | None


def sample_clause(d: _Draw, phenomenon: str) -> Clause:
    """A clause as the generator draws one (plural 30%, past 40%, negation 10%, object
    70%, oblique 35%, adjective 35%, determiner 40%), with what ``phenomenon`` needs."""
    def phrase(case: str, plural: bool, adjective: bool = False) -> Phrase:
        noun = d("noun")
        adj = d("adj") if adjective or d.p(0.35) else None
        return Phrase(noun, case, plural, d.p(0.4), adj, d("adp") if case == "obl" else None)

    subject = phrase("nom", d.p(0.5 if phenomenon == "agreement" else 0.3),
                     adjective=phenomenon == "adjective_order")
    verb, past, neg = d("verb"), phenomenon == "affix_position" or d.p(0.4), d.p(0.1)
    obj = phrase("acc", d.p(0.3)) if phenomenon in ("word_order", "case") or d.p(0.7) else None
    oblique = None if phenomenon == "word_order" else (
        phrase("obl", d.p(0.3)) if phenomenon == "adposition" or d.p(0.35) else None)
    return Clause(subject, verb, past, neg, obj, oblique)


def clause_words(g: Grammar, c: Clause, change: str | None = None, *,
                 order: str | None = None, root: str | None = None,
                 case_role: str = "obj") -> list[tuple[str, str]]:
    """``(word form, role)`` of each word of ``c`` in ``g``'s language, or with the one
    ``change`` (a phenomenon): ``order`` for word_order, the foreign ``root`` for the
    lexical ones, ``case_role`` (``obj``: unmarked, ``subj``: accusative) for case. Roles: D(eterminer), A(djective), N(oun), P (adposition), V(erb), NEG;
    a moved adjective or adposition is ``A*`` or ``P*``."""
    lang = g.lang

    def phrase(p: Phrase | None, role: str) -> list[tuple[str, str]]:
        if p is None:
            return []
        case = p.case
        if change == "case" and role == case_role:
            case = "nom" if role == "obj" else "acc"
        lexical = change in ("lexical_related", "lexical_unrelated") and role == "subj"
        words = [(g.noun(p.noun, case, p.plural, root=root if lexical else None), "N")]
        if p.adj is not None:
            flip = change == "adjective_order" and role == "subj"
            adj = (g.adjective(p.adj, p.plural), "A*" if flip else "A")
            words = [adj] + words if (lang.adjective_order == "AN") != flip else words + [adj]
        if p.det:
            words.insert(0, (g.word("det"), "D"))
        if p.adp is not None:
            flip = change == "adposition"
            adp = (g.adposition(p.adp), "P*" if flip else "P")
            words = [adp] + words if (lang.adposition == "pre") != flip else words + [adp]
        return words

    inflection = None
    if change == "affix_position":
        inflection = "prefixing" if lang.inflection == "suffixing" else "suffixing"
    plural = c.subject.plural != (change == "agreement")
    verb = ([(g.word("neg"), "NEG")] if c.neg else []) + [
        (g.verb(c.verb, c.past, plural, inflection), "V")]
    s, o, x = phrase(c.subject, "subj"), phrase(c.obj, "obj"), phrase(c.oblique, "obl")
    order = order or lang.word_order
    if order == "SOV":
        return s + x + o + verb
    return (s + verb + o if order == "SVO" else verb + s + o) + x


def render(g: Grammar, c: Clause, change: str | None = None, **kw) -> str:
    """The sentence of :func:`clause_words`."""
    return g.sentence([w for w, _ in clause_words(g, c, change, **kw)])


_ROLE_LETTERS = {"D": "D", "A": "A", "N": "N", "P": "P", "V": "V", "NEG": "G"}


def clause_pattern(lang: SyntheticLanguage) -> re.Pattern:
    """The language's one-clause sentences as a regular expression over word roles (one
    letter each: D A N P V, G for negation), as the generator orders them."""
    core = "D?A?N" if lang.adjective_order == "AN" else "D?NA?"
    oblique = f"(?:P{core})" if lang.adposition == "pre" else f"(?:{core}P)"
    np_, verb = f"(?:{core})", "G?V"
    order = {"SOV": f"{np_}{oblique}?{np_}?{verb}", "SVO": f"{np_}{verb}{np_}?{oblique}?",
             "VSO": f"{verb}{np_}{np_}?{oblique}?"}[lang.word_order]
    return re.compile(order)


def reads_as_grammatical(lang: SyntheticLanguage, words: list[tuple[str, str]]) -> bool:
    """Whether the roles of ``words`` (moved ones as what they are) still form a clause of
    the language: then, without case or number cues, a "bad" sentence could be read as
    well-formed (e.g. ``N A N V`` in an AN, SOV language: the adjective moved after the
    subject reads as the object's). Such pairs are not used."""
    roles = "".join(_ROLE_LETTERS[r.rstrip("*")] for _, r in words)
    return clause_pattern(lang).fullmatch(roles) is not None


def _unsupported(g: Grammar, phenomenon: str, donors: list[Grammar]) -> str | None:
    lang = g.lang
    if phenomenon == "agreement" and (lang.inflection == "none" or not lang.plural_marking):
        return ("isolating: the verb does not agree" if lang.inflection == "none" else
                "nouns do not show plural, so the subject's number is invisible")
    if phenomenon == "case" and not lang.case_marking:
        return "no case marking"
    if phenomenon == "affix_position" and lang.inflection == "none":
        return "isolating: no affixes"
    if phenomenon.startswith("lexical_") and not donors:
        return f"no {phenomenon.removeprefix('lexical_')} language in the corpus"
    return None


def _one_pair(g: Grammar, d: _Draw, phenomenon: str, donors: list[Grammar]) -> dict | None:
    c = sample_clause(d, phenomenon)
    detail: dict = {}
    if phenomenon == "word_order":
        orders = [o for o in WORD_ORDERS if o != g.lang.word_order]
        detail["order"] = orders[int(d.rng.integers(len(orders)))]
    elif phenomenon.startswith("lexical_"):
        donor = donors[int(d.rng.integers(len(donors)))]
        detail["root"] = donor.m.roots[c.subject.noun]
        foreign = g.noun(c.subject.noun, "nom", c.subject.plural, root=detail["root"])
        if detail["root"] in g.known_roots or foreign in g.known_forms:
            return None  # its own root, or a word of the language
        detail["donor"] = donor.lang.code
    elif phenomenon == "case":
        detail["case_role"] = "subj" if d.p(0.5) else "obj"
    elif phenomenon == "affix_position":
        inflection = "prefixing" if g.lang.inflection == "suffixing" else "suffixing"
        plural = c.subject.plural
        if g.verb(c.verb, c.past, plural, inflection) in g.known_forms:
            return None  # the misplaced affixes happen to spell another word
    good = render(g, c)
    bad_words = clause_words(g, c, phenomenon, order=detail.get("order"),
                             root=detail.pop("root", None),
                             case_role=detail.get("case_role", "obj"))
    bad = g.sentence([w for w, _ in bad_words])
    order_change = phenomenon in ("word_order", "adposition", "adjective_order")
    if good == bad or (order_change and reads_as_grammatical(g.lang, bad_words)):
        return None
    return {"good": good, "bad": bad, **detail}


def language_pairs(g: Grammar, phenomenon: str, donors: list[Grammar], n: int,
                   seed: int = 0) -> list[dict]:
    """Up to ``n`` pairs with distinct good sentences (fewer if 20 n draws do not give
    them). Raises ValueError when the language does not have the phenomenon."""
    if phenomenon not in PHENOMENA:
        raise ValueError(f"unknown phenomenon {phenomenon!r}; choose from {', '.join(PHENOMENA)}")
    why = _unsupported(g, phenomenon, donors)
    if why:
        raise ValueError(f"{g.lang.code} has no {phenomenon} pairs: {why}")
    d = _Draw(np.random.default_rng([seed, g.lang.index, PHENOMENA.index(phenomenon)]))
    out, seen = [], set()
    for _ in range(20 * n):
        if len(out) == n:
            break
        pair = _one_pair(g, d, phenomenon, donors)
        if pair is None or pair["good"] in seen:
            continue
        seen.add(pair["good"])
        out.append({"id": f"{g.lang.code}-{phenomenon}-{len(out)}", "lang": g.lang.code,
                    "phenomenon": phenomenon, **pair})
    return out


def build_synthetic_pairs(languages: list[SyntheticLanguage], *, n: int = 300, seed: int = 0,
                          only: list[str] | None = None,
                          phenomena: tuple[str, ...] = PHENOMENA):
    """``({lang: {phenomenon: [pair, ...]}}, {lang: {phenomenon: why skipped}})`` for the
    languages ``only`` names (default all); donors for the lexical pairs are all of
    ``languages`` (related: same family; unrelated: another family)."""
    bad = [p for p in phenomena if p not in PHENOMENA]
    if bad:
        raise ValueError(f"unknown phenomena {bad}; choose from {', '.join(PHENOMENA)}")
    grammars = {lang.code: Grammar(lang) for lang in languages}
    wanted = only or list(grammars)
    unknown = sorted(set(wanted) - set(grammars))
    if unknown:
        raise ValueError(f"no synthetic language {unknown}; the corpus has "
                         f"{', '.join(grammars)}")
    pairs: dict = {}
    skipped: dict = {}
    for code in wanted:
        g = grammars[code]
        donors = {"lexical_related": [o for o in grammars.values() if o is not g
                                      and o.lang.family == g.lang.family],
                  "lexical_unrelated": [o for o in grammars.values()
                                        if o.lang.family != g.lang.family]}
        for phenomenon in phenomena:
            try:
                pairs.setdefault(code, {})[phenomenon] = language_pairs(
                    g, phenomenon, donors.get(phenomenon, []), n, seed)
            except ValueError as exc:
                skipped.setdefault(code, {})[phenomenon] = str(exc).split(": ", 1)[1]
    return pairs, skipped
