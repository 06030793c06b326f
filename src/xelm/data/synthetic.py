"""The embedded default corpus: artificial languages generated from a seed.

What it is: a controlled testbed for the X-ELM pipeline. 2-16 languages (default 12) in
families of about three. Family members share cognate roots (a family proto-lexicon put
through per-language sound changes, i.e. phoneme substitutions), mostly their grammar and
usually their script; 10-35 % of each lexicon is language-specific. ~2,500 concepts (1,500
nouns, 600 verbs, 400 adjectives, 12 adpositions) are drawn Zipf-like: a short frequent
head, a long tail. Languages differ in word order (SVO/SOV/VSO), adpositions, adjective
order, inflection (suffixing/prefixing/isolating, with or without case and plural marking)
and script, from ten Unicode scripts (:mod:`xelm.data.phonology`). In each family of three or more, one member uses another script: borrowed from
another family, or its own. Each document has one of 8 topics that boosts a topic set of
noun and verb concepts (the same concept ids in every language), so TF-IDF finds topics
within a language (or a family, through cognates) as well as languages.

What it is not: natural language. No semantics, no agreement beyond number, no dependency
across sentences beyond the topic; the generator sets the entropy, so perplexities compare
models on this corpus only. Latin letters take 1 byte, the other scripts 2-3, so 1 MB is
65k-125k words (2.5k-9k word types) depending on script and morphology.

Speed, measured on the 2-core development machine (numpy, one core): ``write_corpus`` for
12 languages x 1 MB takes ~1.2 s of CPU, ~2.6 s wall with Python start and fsync.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np

from xelm.data.phonology import (CONSONANTS, SCRIPTS, VOWELS, apply_changes, family_phonology,
                                  sound_changes)
from xelm.io import atomic_write_text, write_json

N_NOUNS, N_VERBS, N_ADJECTIVES, N_ADPOSITIONS = 1500, 600, 400, 12
N_TOPICS = 8
WORD_ORDERS = ("SVO", "SOV", "VSO")
INFLECTIONS = ("suffixing", "prefixing", "none")
_FUNCTION_WORDS = ("det", "and", "but", "neg", "plural", "past")
_AFFIXES = ("acc", "obl", "plural", "past", "agree")


@dataclass(frozen=True)
class SyntheticLanguage:
    """One artificial language. Its fields rebuild its lexicon, so it can generate text
    alone; ``SyntheticLanguage(**entry)`` of a ``languages.json`` entry is the same language."""

    code: str
    name: str
    family: str
    script: str
    word_order: str
    adposition: str
    adjective_order: str
    inflection: str
    case_marking: bool
    plural_marking: bool
    syllable: str
    n_consonants: int
    n_vowels: int
    sound_changes: tuple[str, ...]
    cognate_rate: float
    seed: int
    family_index: int
    index: int

    def __post_init__(self):
        object.__setattr__(self, "sound_changes", tuple(self.sound_changes))


def _family_typology(n_families: int, rng: np.random.Generator) -> list[dict]:
    """Distinct-ish grammars: word orders and inflections cycle, adpositions follow OV/VO."""
    orders = rng.permutation(np.resize(WORD_ORDERS, n_families))
    inflections = rng.permutation(np.resize(INFLECTIONS, n_families))
    families = []
    for order, inflection in zip(orders.tolist(), inflections.tolist()):
        post = (order == "SOV") != (rng.random() < 0.2)
        families.append({"word_order": order, "adposition": "post" if post else "pre",
                         "adjective_order": "AN" if rng.random() < 0.5 else "NA",
                         "inflection": inflection, "case_marking": bool(rng.random() < 0.7),
                         "plural_marking": bool(rng.random() < 0.8)})
    return families


_TYPOLOGY = ("word_order", "adposition", "adjective_order", "inflection")
_CHOICES = {"word_order": WORD_ORDERS, "adposition": ("pre", "post"),
            "adjective_order": ("AN", "NA"), "inflection": INFLECTIONS,
            "case_marking": (True, False), "plural_marking": (True, False)}


def _mutate(typology: dict, rng: np.random.Generator, rate: float = 0.12) -> dict:
    out = dict(typology)
    for key, values in _CHOICES.items():
        if rng.random() < rate:
            out[key] = values[int(rng.integers(len(values)))]
    if out["inflection"] == "none":
        out["case_marking"] = False
    return out


def _assign_scripts(sizes: list[int], rng: np.random.Generator) -> list[list[str]]:
    """Each family one script; in families of 3+, the last member borrows or gets its own."""
    pool = rng.permutation(list(SCRIPTS)).tolist()
    primary, extra = pool[:len(sizes)], pool[len(sizes):]
    scripts = []
    for f, size in enumerate(sizes):
        own = [primary[f]] * size
        if size >= 3:
            own[-1] = primary[(f + 1) % len(sizes)] if f % 2 == 0 or not extra else extra.pop(0)
        scripts.append(own)
    return scripts


def make_languages(n_languages: int = 12, seed: int = 0) -> list[SyntheticLanguage]:
    """The language set: families of about three, typology mostly inherited per family."""
    if not 2 <= n_languages <= 16:
        raise ValueError(f"n_languages must be between 2 and 16, got {n_languages}")
    rng = np.random.default_rng([seed, 0])
    n_families = max(2, round(n_languages / 3))
    sizes = [len(part) for part in np.array_split(np.arange(n_languages), n_families)]
    typologies, scripts = _family_typology(n_families, rng), _assign_scripts(sizes, rng)
    languages = []
    for f, size in enumerate(sizes):
        cons, vows, syllable = family_phonology(seed, f)
        for member in range(size):
            i = len(languages)
            changes = sound_changes(cons, vows, rng)
            code = "q" + chr(ord("a") + i // 26) + chr(ord("a") + i % 26)
            languages.append(SyntheticLanguage(
                code=code, name=f"Synthetic {code[1:].capitalize()}",
                family=f"Family {chr(ord('A') + f)}", script=scripts[f][member],
                **_mutate(typologies[f], rng), syllable=syllable,
                n_consonants=len(set(apply_changes(changes, cons))),
                n_vowels=len(set(apply_changes(changes, vows))), sound_changes=changes,
                cognate_rate=round(float(rng.uniform(0.65, 0.9)), 3),
                seed=seed, family_index=f, index=i))
    return languages


def _roots(rng: np.random.Generator, syllables: np.ndarray, cons: str, vows: str,
           cvc: bool) -> list[str]:
    """Random words of the given syllable counts in one phonology."""
    n, width = len(syllables), int(syllables.max())
    onsets = np.array(list(cons))[rng.integers(len(cons), size=(n, width))]
    nuclei = np.array(list(vows))[rng.integers(len(vows), size=(n, width))]
    codas = np.array(list(cons))[rng.integers(len(cons), size=(n, width))]
    codas[rng.random((n, width)) >= (0.35 if cvc else 0.0)] = ""
    onsets[:, 0][rng.random(n) < 0.1] = ""
    parts = np.char.add(np.char.add(onsets, nuclei), codas)
    return ["".join(row[:k]) for row, k in zip(parts.tolist(), syllables.tolist())]


def _syllable_counts(rng: np.random.Generator) -> np.ndarray:
    """Syllables per concept: the frequent (low-rank) concepts of each part of speech are short."""
    rank = np.concatenate([np.arange(n) for n in (N_NOUNS, N_VERBS, N_ADJECTIVES, N_ADPOSITIONS)])
    extra = rng.random((2, len(rank)))
    return 1 + (rank >= 40) + ((rank >= 400) & (extra[0] < 0.6)) + (extra[1] < 0.2)


@lru_cache(maxsize=64)
def _proto_lexicon(seed: int, family_index: int) -> tuple[list[str], list[str]]:
    """Family proto-roots for every concept, then proto function words and affixes."""
    cons, vows, syllable = family_phonology(seed, family_index)
    rng = np.random.default_rng([seed, 2, family_index])
    grammar = _roots(rng, np.ones(len(_FUNCTION_WORDS) + len(_AFFIXES), int), cons, vows, False)
    roots = _roots(rng, _syllable_counts(rng), cons, vows, syllable == "CVC")
    return roots, _unique(grammar, rng, vows)


def _unique(words: list[str], rng: np.random.Generator, vows: str) -> list[str]:
    seen, out = set(), []
    for word in words:
        while word in seen:
            word += vows[int(rng.integers(len(vows)))]
        seen.add(word)
        out.append(word)
    return out


@dataclass(frozen=True)
class _Lexicon:
    """Rendered word forms of one language, indexed by concept id."""

    nouns: dict[tuple[str, bool], list[str]]
    verbs: dict[tuple[bool, bool], list[str]]
    adjectives: dict[bool, list[str]]
    adpositions: list[str]
    function: dict[str, str]


@dataclass(frozen=True)
class Morphology:
    """A language's word material in phonemes, before inflection and script: ``roots`` in
    concept order (nouns, verbs, adjectives, adpositions), ``function`` words (det, and,
    but, neg, plural, past) and ``affixes`` (acc, obl, plural, past, agree). Minimal pairs
    (:mod:`xelm.evaluate.pairs_synthetic`) rebuild word forms from it."""

    roots: tuple[str, ...]
    function: dict[str, str]
    affixes: dict[str, str]


@lru_cache(maxsize=32)
def morphology(lang: SyntheticLanguage) -> Morphology:
    proto, grammar = _proto_lexicon(lang.seed, lang.family_index)
    cons, vows, syllable = family_phonology(lang.seed, lang.family_index)
    cons, vows = apply_changes(lang.sound_changes, cons), apply_changes(lang.sound_changes, vows)
    rng = np.random.default_rng([lang.seed, 3, lang.index])
    own = _roots(rng, _syllable_counts(rng), cons, vows, syllable == "CVC")
    cognate = rng.random(len(proto)) < lang.cognate_rate
    roots = _unique([apply_changes(lang.sound_changes, p) if c else o
                     for p, o, c in zip(proto, own, cognate)], rng, vows)
    grammar = [apply_changes(lang.sound_changes, g) for g in grammar]
    return Morphology(tuple(roots), dict(zip(_FUNCTION_WORDS, grammar)),
                      dict(zip(_AFFIXES, grammar[len(_FUNCTION_WORDS):])))


@lru_cache(maxsize=32)
def _lexicon(lang: SyntheticLanguage) -> _Lexicon:
    m = morphology(lang)
    return _inflect(lang, list(m.roots), m.function, m.affixes)


def lexicon(lang: SyntheticLanguage) -> _Lexicon:
    """Every rendered word form of ``lang``, as the generator writes them."""
    return _lexicon(lang)


def attach(inflection: str, stem: str, morphemes: tuple[str, ...]) -> str:
    """Morphemes listed innermost last: suffixes go stem+inner+outer, prefixes outer+inner+stem;
    an isolating language writes them as particles before the word."""
    present = [m for m in morphemes if m]
    if inflection == "none":
        return " ".join(present + [stem])
    return "".join(present + [stem] if inflection == "prefixing" else [stem] + present[::-1])


def _inflect(lang: SyntheticLanguage, roots: list[str], words: dict, affix: dict) -> _Lexicon:
    """Every word form, built in phonemes and rendered once, so generation only indexes."""
    render, isolating = SCRIPTS[lang.script].render, lang.inflection == "none"
    plural = (words["plural"] if isolating else affix["plural"]) if lang.plural_marking else ""
    case = {"acc": affix["acc"], "obl": affix["obl"]} if lang.case_marking else {}
    past, agree = (words["past"], "") if isolating else (affix["past"], affix["agree"])

    def forms(stems: list[str], *morphemes: str) -> list[str]:
        return [render(attach(lang.inflection, stem, morphemes)) for stem in stems]

    nouns, verbs = roots[:N_NOUNS], roots[N_NOUNS:N_NOUNS + N_VERBS]
    adjectives = roots[N_NOUNS + N_VERBS:-N_ADPOSITIONS]
    return _Lexicon(
        nouns={(c, pl): forms(nouns, case.get(c, ""), plural if pl else "")
               for c in ("nom", "acc", "obl") for pl in (False, True)},
        verbs={(t, pl): forms(verbs, agree if pl else "", past if t else "")
               for t in (False, True) for pl in (False, True)},
        adjectives={pl: forms(adjectives, "" if isolating or not pl else plural)
                    for pl in (False, True)},
        adpositions=forms(roots[-N_ADPOSITIONS:]),
        function={k: render(v) for k, v in words.items()})


def _stream(draw: Callable[[int], np.ndarray], block: int = 4096) -> Callable[[], float]:
    """Random draws made a block at a time with numpy, handed out one per call."""
    def values():
        while True:
            yield from draw(block).tolist()
    return partial(next, values())


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> Callable[[], int]:
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** exponent)
    cdf /= cdf[-1]
    return _stream(lambda k: np.minimum(np.searchsorted(cdf, rng.random(k)), n - 1))


@lru_cache(maxsize=8)
def _topics(seed: int, n_concepts: int, head: int = 30) -> list[list[int]]:
    """Concept ids (outside the frequent head) that each topic boosts; same in every language."""
    order = head + np.random.default_rng([seed, 4, n_concepts]).permutation(n_concepts - head)
    return [part.tolist() for part in np.array_split(order, N_TOPICS)]


class _Sampler:
    """Word choice: Zipf over concepts, with topic-specific nouns and verbs boosted."""

    TOPIC_SHARE = {"noun": 0.5, "verb": 0.4}

    def __init__(self, seed: int, rng: np.random.Generator):
        self.uniform = _stream(rng.random)
        sizes = {"noun": N_NOUNS, "verb": N_VERBS, "adj": N_ADJECTIVES, "adp": N_ADPOSITIONS}
        self._global = {pos: _zipf(rng, n, 1.05) for pos, n in sizes.items()}
        self._topics = {pos: _topics(seed, sizes[pos]) for pos in self.TOPIC_SHARE}
        self._in_topic = {pos: _zipf(rng, min(map(len, t)), 1.0) for pos, t in self._topics.items()}

    def word(self, pos: str, topic: int) -> int:
        if pos in self.TOPIC_SHARE and self.uniform() < self.TOPIC_SHARE[pos]:
            return self._topics[pos][topic][self._in_topic[pos]()]
        return self._global[pos]()


def _noun_phrase(lang, lex: _Lexicon, draw: _Sampler, topic: int, case: str,
                 plural: bool) -> list[str]:
    phrase = [lex.nouns[case, plural][draw.word("noun", topic)]]
    if draw.uniform() < 0.35:
        adjective = lex.adjectives[plural][draw.word("adj", topic)]
        phrase = [adjective] + phrase if lang.adjective_order == "AN" else phrase + [adjective]
    if draw.uniform() < 0.4:
        phrase.insert(0, lex.function["det"])
    if case == "obl":
        adposition = lex.adpositions[draw.word("adp", topic)]
        phrase = [adposition] + phrase if lang.adposition == "pre" else phrase + [adposition]
    return phrase


def _clause(lang, lex: _Lexicon, draw: _Sampler, topic: int) -> list[str]:
    subject_plural = draw.uniform() < 0.3
    phrase = partial(_noun_phrase, lang, lex, draw, topic)
    subject = phrase("nom", subject_plural)
    verb = [lex.verbs[draw.uniform() < 0.4, subject_plural][draw.word("verb", topic)]]
    if draw.uniform() < 0.1:
        verb.insert(0, lex.function["neg"])
    obj = phrase("acc", draw.uniform() < 0.3) if draw.uniform() < 0.7 else []
    oblique = phrase("obl", draw.uniform() < 0.3) if draw.uniform() < 0.35 else []
    if lang.word_order == "SOV":
        return subject + oblique + obj + verb
    core = subject + verb + obj if lang.word_order == "SVO" else verb + subject + obj
    return core + oblique


def _sentence(lang, lex: _Lexicon, draw: _Sampler, topic: int) -> str:
    script = SCRIPTS[lang.script]
    words = _clause(lang, lex, draw, topic)
    if draw.uniform() < 0.25:
        conjunction = lex.function["and" if draw.uniform() < 0.7 else "but"]
        words[-1] += script.comma
        words += [conjunction] + _clause(lang, lex, draw, topic)
    text = " ".join(words) + script.stop
    return text[0].upper() + text[1:] if script.cased else text


def generate_documents(language: SyntheticLanguage, n_bytes: int, seed: int = 0) -> list[str]:
    """Documents of 3-12 sentences, one topic each, until their UTF-8 size (plus one
    newline each) reaches ``n_bytes``."""
    rng = np.random.default_rng([seed, 5, language.index])
    lex, draw = _lexicon(language), _Sampler(language.seed, rng)
    documents, total = [], 0
    while total < n_bytes:
        topic, n_sentences = int(draw.uniform() * N_TOPICS), 3 + int(draw.uniform() * 10)
        document = " ".join(_sentence(language, lex, draw, topic) for _ in range(n_sentences))
        documents.append(document)
        total += len(document.encode("utf-8")) + 1
    return documents


def feature_table(languages: list[SyntheticLanguage]) -> tuple[list[str], np.ndarray]:
    """Typological features (generator parameters, no family id): names, [n_lang, n_feat].

    One-hot columns keep every row non-zero, so cosine distances are always defined.
    """
    one_hot = {**{k: _CHOICES[k] for k in _TYPOLOGY}, "syllable": ("CV", "CVC")}
    columns = ([f"{key}_{value.lower()}" for key, values in one_hot.items() for value in values]
               + ["case_marking", "plural_marking", "consonant_inventory", "vowel_inventory"])
    rows = [[float(getattr(lang, key) == value) for key, values in one_hot.items()
             for value in values]
            + [float(lang.case_marking), float(lang.plural_marking),
               lang.n_consonants / len(CONSONANTS), lang.n_vowels / len(VOWELS)]
            for lang in languages]
    return columns, np.array(rows, dtype=float).reshape(len(languages), len(columns))


def write_corpus(out_dir: str | Path, n_languages: int = 12, bytes_per_language: int = 1_000_000,
                 seed: int = 0) -> list[SyntheticLanguage]:
    """Write ``<code>.txt`` per language, ``features.csv`` and ``languages.json``.

    Each file is written atomically; ``languages.json`` comes last, so its presence means
    the corpus is complete.
    """
    out_dir = Path(out_dir)
    languages = make_languages(n_languages, seed)
    for lang in languages:
        documents = generate_documents(lang, bytes_per_language, seed)
        atomic_write_text(out_dir / f"{lang.code}.txt", "".join(d + "\n" for d in documents))
    columns, matrix = feature_table(languages)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerows([["language", *columns]] + [[lang.code, *(f"{v:.6g}" for v in row)]
                                                 for lang, row in zip(languages, matrix.tolist())])
    atomic_write_text(out_dir / "features.csv", table.getvalue())
    write_json(out_dir / "languages.json", [asdict(lang) for lang in languages])
    return languages
