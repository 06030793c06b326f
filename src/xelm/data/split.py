"""Train/valid/test splits of a corpus: by document (random, every n-th) or by key.

'random' and 'every_nth' split each language alone (:func:`split_documents`). 'by_key'
splits all languages together (:func:`split_by_key`): every document carries a key (a
Bible chapter such as ``GEN.1``, from a ``<code>.keys`` sidecar or a ``key``/``id``
field, see :func:`xelm.data.readers.read_keyed_corpus`), the held-out keys are drawn
once from the union of all languages' keys, and a document goes wherever its key goes.
So the same chapters are valid/test in every language, even when line N is not the same
chapter in every file, and no translation of a test document is trained on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from xelm.data.errors import CorpusError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
METHODS = ("random", "every_nth", "by_key")


def split_documents(docs: list[str], valid_fraction: float, test_fraction: float, seed: int,
                    method: str = "random", *, language: str = "?",
                    keys: list[str] | None = None) -> dict[str, list[int]]:
    """Deterministic ``{"train", "valid", "test"}`` -> sorted, disjoint document indices.

    'random': held-out documents come from ``numpy.random.default_rng(seed)``'s
    permutation of the indices, so the split depends on the seed and the document count
    only. 'every_nth': with ``n = max(3, round(1 / test_fraction))`` (at most the
    document count), test is every index with ``i % n == n - 1`` and valid the
    ``round(valid_fraction * n)`` indices after each test index (``i % n < k``); no
    randomness, so parallel corpora of equal length hold out the same lines. Both give
    valid and test at least one document and train the rest (at least one).
    'by_key': :func:`split_by_key` on this one language with ``keys`` (one per document;
    ``None``: a hash of each document's text decides, see there). To hold out the same
    keys in several languages, call :func:`split_by_key` on all of them at once.
    """
    _check_count(len(docs), language)
    _check_fractions(valid_fraction, test_fraction)
    if method == "by_key":
        return split_by_key({language: docs}, {language: keys}, valid_fraction, test_fraction,
                            seed)[0][language]
    count = len(docs)
    if method == "random":
        valid, test = _random_holdout(count, valid_fraction, test_fraction, seed)
    elif method == "every_nth":
        valid, test = _every_nth_holdout(count, valid_fraction, test_fraction)
    else:
        raise ValueError(f"unknown split method {method!r}: use one of {', '.join(METHODS)}")
    held = set(valid) | set(test)
    return {"train": [i for i in range(count) if i not in held], "valid": valid, "test": test}


def _check_count(count: int, language: str) -> None:
    if count < 3:
        raise CorpusError(f"language {language} has {count} documents; the splits need at "
                          "least 3 (train, valid and test): add text or drop the language")


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    for name, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 < fraction < 0.5:
            raise ValueError(f"{name} must be in (0, 0.5), got {fraction}")


def _held_out_counts(count: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(valid, test) sizes: at least one each, and at least one item left for train."""
    n_test = min(max(1, round(count * test_fraction)), count - 2)
    n_valid = min(max(1, round(count * valid_fraction)), count - 1 - n_test)
    return n_valid, n_test


def _random_holdout(count: int, valid_fraction: float, test_fraction: float,
                    seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(count)
    n_valid, n_test = _held_out_counts(count, valid_fraction, test_fraction)
    test = sorted(order[:n_test].tolist())
    valid = sorted(order[n_test:n_test + n_valid].tolist())
    return valid, test


def _every_nth_holdout(count: int, valid_fraction: float,
                       test_fraction: float) -> tuple[list[int], list[int]]:
    period = min(max(3, round(1 / test_fraction)), count)
    per_period = min(max(1, round(valid_fraction * period)), period - 2)
    test = [i for i in range(count) if i % period == period - 1]
    valid = [i for i in range(count) if i % period < per_period]
    return valid, test


# --------------------------------------------------------------------------- by key

def held_out_keys(keys: Iterable[str], valid_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[str]]:
    """``{"valid": [...], "test": [...]}``: sorted keys drawn from the distinct ``keys``.

    The distinct keys are ranked by a BLAKE2b hash of ``seed`` and the key (not Python's
    salted ``hash``), so the draw depends on the seed and the set of keys only: not on
    their order, the languages they came from or the process. Test takes the first
    ``round(test_fraction * n)``, valid the next ``round(valid_fraction * n)`` (each at
    least one, leaving at least one key for train).
    """
    distinct = set(keys)
    if len(distinct) < 3:
        raise CorpusError(f"corpus.split by_key needs at least 3 distinct document keys (for "
                          f"train, valid and test); found {len(distinct)}")
    ranked = sorted(distinct, key=lambda key: (_rank(seed, key), key))
    n_valid, n_test = _held_out_counts(len(ranked), valid_fraction, test_fraction)
    return {"valid": sorted(ranked[n_test:n_test + n_valid]), "test": sorted(ranked[:n_test])}


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8"), digest_size=8).digest()


def split_by_key(corpus: dict[str, list[str]], keys: dict[str, list[str] | None],
                 valid_fraction: float, test_fraction: float,
                 seed: int) -> tuple[dict[str, dict[str, list[int]]], dict]:
    """Split every language by its documents' keys; the same keys are held out in all.

    ``keys[lang]`` holds one key per document of ``corpus[lang]``. The valid and test keys
    are drawn once (:func:`held_out_keys`) from the union of all languages' keys, so
    ``valid_fraction``/``test_fraction`` are fractions of that union, and every document
    goes to the split of its key: documents sharing a key (duplicates) stay together, and
    a language missing some keys simply has fewer held-out documents.

    A language whose keys are ``None`` (a ``.txt`` without a ``.keys`` sidecar, records
    without a ``key``/``id`` field) is split alone, with each document's own text as its
    key: deterministic, identical documents on one side, and its share of held-out
    documents is the fractions of its distinct texts. Its held-out documents are not
    aligned with the other languages, which is harmless for text with no translation in
    the corpus (the reader logs a warning naming the file).

    Returns ``({lang: {"train", "valid", "test"} -> sorted indices}, record)``; the record
    (``seed``, ``keys``: the union's size, the ``valid`` and ``test`` keys, ``by_text``:
    the languages split by text) is what ``prepare`` writes to the run directory.
    A language left with an empty split is a :class:`CorpusError` saying what to change.
    """
    _check_fractions(valid_fraction, test_fraction)
    for lang, docs in corpus.items():
        _check_count(len(docs), lang)
        if keys.get(lang) is not None and len(keys[lang]) != len(docs):
            raise ValueError(f"language {lang}: {len(keys[lang])} keys for {len(docs)} documents")
    keyed = [lang for lang in corpus if keys.get(lang) is not None]
    union = {key for lang in keyed for key in keys[lang]}
    held = held_out_keys(union, valid_fraction, test_fraction, seed) if keyed else {
        "valid": [], "test": []}
    out = {}
    for lang, docs in corpus.items():
        if lang in keyed:
            out[lang] = _assign(keys[lang], held, lang, len(union))
        else:
            own = held_out_keys(docs, valid_fraction, test_fraction, seed)
            out[lang] = _assign(docs, own, lang, len(set(docs)))
    record = {"method": "by_key", "seed": seed, "valid_fraction": valid_fraction,
              "test_fraction": test_fraction, "keys": len(union), **held,
              "by_text": [lang for lang in corpus if lang not in keyed]}
    return out, record


def _assign(keys: list[str], held: dict[str, list[str]], lang: str,
            universe: int) -> dict[str, list[int]]:
    """Indices of the documents whose key is in ``held[split]``; train takes the rest."""
    side = {key: split for split in ("valid", "test") for key in held[split]}
    out: dict[str, list[int]] = {split: [] for split in SPLITS}
    for i, key in enumerate(keys):
        out[side.get(key, "train")].append(i)
    for split in SPLITS:
        if not out[split]:
            raise CorpusError(_empty_split(lang, split, len(set(keys)), len(held.get(split, [])),
                                           universe))
    return out


def _empty_split(lang: str, split: str, own: int, drawn: int, universe: int) -> str:
    if split == "train":
        return (f"corpus.split by_key: every one of language {lang}'s {own} distinct keys is "
                "held out (valid or test), so it has no training document; give it more "
                "documents, or use corpus.split: random")
    return (f"corpus.split by_key: language {lang} has no {split} document: none of its {own} "
            f"distinct keys is among the {drawn} {split} keys drawn from the {universe} keys "
            f"of all languages; raise corpus.{split}_fraction, or use corpus.split: random")


# --------------------------------------------------------------------------- streaming
# ``prepare`` never holds a language's documents: it counts them (and collects their
# keys) in a first pass, decides every document's split as one byte per document, and
# routes each document by that label in the second pass. The labels are exactly the
# indices the functions above return.

LABEL = {split: i for i, split in enumerate(SPLITS)}  # train 0, valid 1, test 2


def split_labels(count: int, valid_fraction: float, test_fraction: float, seed: int,
                 method: str = "random", *, language: str = "?") -> np.ndarray:
    """Each of ``count`` documents' split (``LABEL``) as :func:`split_documents` decides it
    for 'random' and 'every_nth' (by_key needs the keys: :class:`KeyedSplit`).

    Memory: one byte per document, and 8 while 'random' draws its permutation.
    """
    _check_count(count, language)
    _check_fractions(valid_fraction, test_fraction)
    labels = np.zeros(count, dtype=np.uint8)
    if method == "random":
        order = np.random.default_rng(seed).permutation(count)
        n_valid, n_test = _held_out_counts(count, valid_fraction, test_fraction)
        labels[order[:n_test]] = LABEL["test"]
        labels[order[n_test:n_test + n_valid]] = LABEL["valid"]
    elif method == "every_nth":
        period = min(max(3, round(1 / test_fraction)), count)
        per_period = min(max(1, round(valid_fraction * period)), period - 2)
        phase = np.arange(count) % period
        labels[phase < per_period] = LABEL["valid"]
        labels[phase == period - 1] = LABEL["test"]
    else:
        raise ValueError(f"split_labels does not do {method!r}: use 'random' or 'every_nth' "
                         "(by_key: KeyedSplit)")
    return labels


def text_rank(seed: int, text: str) -> int:
    """:func:`held_out_keys`' rank of a key (here a document's text) as an integer: the
    BLAKE2b digest read big-endian, so integers sort as the digests do."""
    return int.from_bytes(_rank(seed, text), "big")


class KeyedSplit:
    """``split: by_key`` over streams: keys are collected language by language (first
    pass), then every document's label is decided at once (:meth:`labels`).

    The result is :func:`split_by_key`'s: the held-out keys are drawn once from the union
    of all keyed languages' distinct keys (:func:`held_out_keys`), and a language without
    keys is split by its documents' text. For those, each document is kept as its 64-bit
    text rank (:func:`text_rank`), not its text: the split is the same unless two distinct
    texts of one language share a 64-bit digest (odds about n^2 / 2^65). Memory: the
    distinct keys, plus 8 bytes per document.
    """

    def __init__(self, valid_fraction: float, test_fraction: float, seed: int,
                 drawn: dict | None = None):
        """``drawn``: held-out keys drawn before (a run's ``held_out_keys.json``, for
        languages added to it later): keyed languages hold out exactly its valid and test
        keys, and keys it does not list go to train."""
        _check_fractions(valid_fraction, test_fraction)
        self.valid_fraction, self.test_fraction, self.seed = valid_fraction, test_fraction, seed
        self.drawn = drawn
        self._ids: dict[str, int] = {}  # every keyed language's distinct keys
        self._docs: dict[str, tuple[str, np.ndarray]] = {}  # lang -> ("keys"|"text", per doc)

    def key_id(self, key: str) -> int:
        """A number for ``key``, the same in every language (keys are held once)."""
        return self._ids.setdefault(key, len(self._ids))

    def add_keys(self, lang: str, key_ids: Sequence[int] | np.ndarray) -> None:
        """A keyed language: its documents' :meth:`key_id`, in document order."""
        self._docs[lang] = ("keys", np.asarray(key_ids, dtype=np.int64))

    def add_text_ranks(self, lang: str, ranks: Sequence[int] | np.ndarray) -> None:
        """A language without keys: its documents' :func:`text_rank`, in document order."""
        self._docs[lang] = ("text", np.asarray(ranks, dtype=np.uint64))

    def labels(self) -> tuple[dict[str, np.ndarray], dict]:
        """``({lang: labels}, record)``, the record as :func:`split_by_key` returns it."""
        for lang, (_, per_doc) in self._docs.items():
            _check_count(len(per_doc), lang)
        universe = list(self._ids)
        keyed = [lang for lang, (kind, _) in self._docs.items() if kind == "keys"]
        if self.drawn is not None:
            held, size = {s: self.drawn[s] for s in ("valid", "test")}, self.drawn["keys"]
        else:
            held = (held_out_keys(universe, self.valid_fraction, self.test_fraction, self.seed)
                    if keyed else {"valid": [], "test": []})
            size = len(universe)
        side = np.zeros(len(universe), dtype=np.uint8)
        for split in ("valid", "test"):
            side[[self._ids[key] for key in held[split] if key in self._ids]] = LABEL[split]
        out = {}
        for lang, (kind, per_doc) in self._docs.items():
            if kind == "keys":
                out[lang] = side[per_doc]
                _check_sides(out[lang], lang, len(np.unique(per_doc)), held, size)
            else:
                out[lang] = self._by_text(lang, per_doc)
        record = {"method": "by_key", "seed": self.seed, "valid_fraction": self.valid_fraction,
                  "test_fraction": self.test_fraction, "keys": size, **held,
                  "by_text": [lang for lang in self._docs if lang not in keyed]}
        return out, record

    def _by_text(self, lang: str, ranks: np.ndarray) -> np.ndarray:
        distinct = np.unique(ranks)  # sorted: the order held_out_keys ranks the texts in
        if len(distinct) < 3:
            raise CorpusError(f"corpus.split by_key needs at least 3 distinct document keys "
                              f"(for train, valid and test); found {len(distinct)}")
        n_valid, n_test = _held_out_counts(len(distinct), self.valid_fraction,
                                           self.test_fraction)
        labels = np.zeros(len(ranks), dtype=np.uint8)
        labels[ranks <= distinct[n_test + n_valid - 1]] = LABEL["valid"]
        labels[ranks <= distinct[n_test - 1]] = LABEL["test"]
        counts = {"valid": n_valid, "test": n_test}
        _check_sides(labels, lang, len(distinct), counts, len(distinct))
        return labels


def _check_sides(labels: np.ndarray, lang: str, own: int, held: dict, universe: int) -> None:
    """:func:`_assign`'s check: every split of a language must get a document."""
    present = np.bincount(labels, minlength=len(SPLITS))
    for split in SPLITS:
        if not present[LABEL[split]]:
            drawn = held.get(split, 0)
            drawn = drawn if isinstance(drawn, int) else len(drawn)
            raise CorpusError(_empty_split(lang, split, own, drawn, universe))
