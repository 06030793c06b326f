"""Minimal pairs from held-out sentences of real text, by perturbations a small LM can see.

The good sentence is a held-out sentence as written; the bad one differs by one edit:

``swap_adjacent``   two adjacent units swapped: words where the language writes spaces,
                    else characters (a base character with its combining marks). Never the
                    first unit in a cased script (its capital would give it away); the two
                    units differ and are made of letters and marks only.
``foreign_word``    one lower-case word (count >= ``min_count``) replaced by a word of
                    another language written in the same script, of about the same
                    frequency (relative frequency within a factor 2 in its own language's
                    text), the closest in length among those, and never seen in this
                    language's text. Languages whose script no other language uses
                    (e.g. el, hi, ko, th in the paper's set) get none.
``affix_swap``      the endings of two words of the sentence exchanged, where each ending
                    is one of the language's 30 most productive (the endings that the most
                    stems carry alongside another ending: a rough, unsupervised suffix list)
                    and at least one of the two new words never occurs in the text.
                    Spaced scripts only; an ending never starts with a combining mark.

Sentences come from :func:`xelm.evaluate.tasks.split_sentences`; longer ones are cut into
consecutive pieces of at most 30 units (words, or characters in unspaced text); pieces
of fewer than 4 units, or (given ``fits``) over the token budget, are not used.
Everything is a function of the text and ``seed``; a run's training text (when given)
only widens the set of words the language is known to use.
"""

from __future__ import annotations

import bisect
import math
import random
import unicodedata
from collections import Counter

from xelm.evaluate.tasks import split_sentences

PERTURBATIONS = ("swap_adjacent", "foreign_word", "affix_swap")
MIN_UNITS, MAX_UNITS = 4, 30
N_ENDINGS = 30


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


def is_word(unit: str) -> bool:
    """Letters and combining marks only, starting with a letter."""
    return bool(unit) and unicodedata.category(unit[0]).startswith("L") and all(
        unicodedata.category(ch)[0] in "LM" for ch in unit)


def script_of(text: str) -> str | None:
    """The most common script among the letters of ``text`` (the first word of their
    Unicode names: LATIN, CYRILLIC, CJK, HANGUL, ...)."""
    counts = Counter(unicodedata.name(ch, "?").split()[0] for ch in text[:200_000]
                     if unicodedata.category(ch).startswith("L"))
    return counts.most_common(1)[0][0] if counts else None


def clusters(text: str) -> list[str]:
    """Characters with their combining marks attached (a rough grapheme split)."""
    out: list[str] = []
    for ch in text:
        if out and _is_mark(ch):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def is_spaced(sentences: list[str]) -> bool:
    """Whether the language separates words by spaces: at least 5% of the characters of
    its sentences are spaces (17-26% in the paper's spaced languages, 0-2% in zh, ja, th)."""
    sample = sentences[:2000]
    chars = sum(len(s) for s in sample)
    return chars > 0 and sum(s.count(" ") for s in sample) / chars >= 0.05


class LanguageText:
    """One language's held-out sentences and the statistics the perturbations need."""

    def __init__(self, lang: str, docs: list[str], fits=None, vocab_docs: list[str] = ()):
        self.lang = lang
        sentences = [s for d in docs for s in split_sentences(d)]
        self.spaced = is_spaced(sentences)
        self.script = script_of(" ".join(sentences))
        self.cased = any(ch != ch.lower() for s in sentences[:500] for ch in s)
        pieces = [p for s in sentences for p in self._pieces(s)]
        self.sentences = [s for s in dict.fromkeys(pieces)
                          if len(self.units(s)) >= MIN_UNITS and (fits is None or fits(s))]
        words = [w for d in docs for w in d.split() if is_word(w)]
        self.counts = Counter(words)
        self.total = max(1, sum(self.counts.values()))
        self.vocab = {w.lower() for w in self.counts} | {
            w.lower() for d in vocab_docs for w in d.split()}
        self.endings = productive_endings(self.counts) if self.spaced else []

    def units(self, sentence: str) -> list[str]:
        return sentence.split(" ") if self.spaced else clusters(sentence)

    def _pieces(self, sentence: str) -> list[str]:
        """The sentence, or consecutive pieces of at most ``MAX_UNITS`` units of it."""
        units = self.units(sentence)
        return [self.join(units[i:i + MAX_UNITS]) for i in range(0, len(units), MAX_UNITS)]

    def join(self, units: list[str]) -> str:
        return (" " if self.spaced else "").join(units)

    def frequency(self, word: str) -> float:
        return self.counts[word] / self.total


def productive_endings(counts: Counter, k: int = N_ENDINGS, longest: int = 3) -> list[str]:
    """The ``k`` endings (1-``longest`` characters, not starting with a mark, leaving a
    stem of 3+ characters) carried by the most stems that also occur with another ending."""
    stems: dict[str, set[str]] = {}
    for word in counts:
        for n in range(1, longest + 1):
            if len(word) - n >= 3 and not _is_mark(word[-n]):
                stems.setdefault(word[:-n], set()).add(word[-n:])
    score: Counter = Counter()
    for endings in stems.values():
        if len(endings) >= 2:
            score.update(endings)
    return [e for e, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def _swap_adjacent(t: LanguageText, units: list[str], rng: random.Random):
    start = 1 if t.cased else 0
    spots = [i for i in range(start, len(units) - 1) if units[i] != units[i + 1]
             and is_word(units[i]) and is_word(units[i + 1])]
    if not spots:
        return None
    i = rng.choice(spots)
    bad = units[:i] + [units[i + 1], units[i]] + units[i + 2:]
    return bad, {"position": i}


def foreign_candidates(t: LanguageText, others: list[LanguageText], min_count: int = 3):
    """Words of the other same-script languages that ``t`` never uses, lower-case in a
    cased script: ``(words, their frequencies in their own language)``, rarest first."""
    out = {}
    for o in others:
        for w, c in o.counts.items():
            if c >= min_count and w.lower() not in t.vocab and (not t.cased or w == w.lower()):
                out[w] = max(out.get(w, 0.0), o.frequency(w))
    ranked = sorted(out.items(), key=lambda wf: (wf[1], wf[0]))
    return [w for w, _ in ranked], [f for _, f in ranked]


def _foreign_word(t: LanguageText, units: list[str], rng: random.Random, candidates,
                  min_count: int = 3):
    spots = [i for i, u in enumerate(units) if is_word(u) and t.counts[u] >= min_count
             and (not t.cased or u == u.lower())]
    rng.shuffle(spots)
    for i in spots[:5]:
        f = t.frequency(units[i])
        words, freqs = candidates
        lo, hi = bisect.bisect_left(freqs, f / 2), bisect.bisect_right(freqs, 2 * f)
        band = list(zip(words[lo:hi], freqs[lo:hi]))
        if band:
            w, g = min(band, key=lambda wg: (abs(len(wg[0]) - len(units[i])),
                                              abs(math.log(wg[1] / f)), wg[0]))
            return units[:i] + [w] + units[i + 1:], {"position": i, "word": units[i],
                                                    "replacement": w}
    return None


def _ending(t: LanguageText, word: str) -> str | None:
    if not is_word(word):
        return None
    return next((e for e in sorted(t.endings, key=len, reverse=True)
                 if word.endswith(e) and len(word) - len(e) >= 3), None)


def _affix_swap(t: LanguageText, units: list[str], rng: random.Random):
    found = [(i, e) for i, u in enumerate(units) if (e := _ending(t, u))]
    options = [(a, b) for a in found for b in found if a[0] < b[0] and a[1] != b[1]]
    rng.shuffle(options)
    for (i, ei), (j, ej) in options:
        wi, wj = units[i][:-len(ei)] + ej, units[j][:-len(ej)] + ei
        if wi.lower() in t.vocab and wj.lower() in t.vocab:
            continue
        bad = list(units)
        bad[i], bad[j] = wi, wj
        return bad, {"positions": [i, j], "endings": [ei, ej]}
    return None


def _unsupported(t: LanguageText, perturbation: str, candidates) -> str | None:
    if perturbation == "affix_swap" and not t.spaced:
        return "the script does not separate words by spaces"
    if perturbation == "foreign_word" and not candidates[0]:
        return f"no other language in the {t.script} script"
    return None


def text_pairs(t: LanguageText, perturbation: str, n: int, seed: int = 0,
               others: list[LanguageText] = ()) -> list[dict]:
    """Up to ``n`` pairs, one per held-out sentence; ValueError when the perturbation does
    not apply to the language (the message says why)."""
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; choose from "
                         f"{', '.join(PERTURBATIONS)}")
    same_script = [o for o in others if o.lang != t.lang and o.script == t.script]
    candidates = foreign_candidates(t, same_script) if perturbation == "foreign_word" else None
    why = _unsupported(t, perturbation, candidates)
    if why:
        raise ValueError(f"{t.lang} has no {perturbation} pairs: {why}")
    rng = random.Random(f"xelm-pairs/{seed}/{t.lang}/{perturbation}")
    order = list(t.sentences)
    rng.shuffle(order)
    out = []
    for sentence in order:
        if len(out) == n:
            break
        units = t.units(sentence)
        if perturbation == "foreign_word":
            made = _foreign_word(t, units, rng, candidates)
        else:
            made = (_swap_adjacent if perturbation == "swap_adjacent" else _affix_swap)(
                t, units, rng)
        if made is None or t.join(made[0]) == sentence:
            continue
        out.append({"id": f"{t.lang}-{perturbation}-{len(out)}", "lang": t.lang,
                    "phenomenon": perturbation, "good": sentence, "bad": t.join(made[0]),
                    **made[1]})
    return out
