"""Typological allocation: languages -> URIEL vectors -> distances -> clusters of languages.

The paper (x-BTM, Blevins et al. 2024) groups its training languages by lang2vec
``syntax_average`` vectors, with a cosine distance that skips missing features and an
agglomerative clustering that, every round, greedily pairs the closest free clusters
(cluster distance = closest pair of members), halving their number until k remain.
``cluster`` (:mod:`xelm.allocate.tree`) records the *whole* merge history (down to one
root) as a ``TypologyTree``, so one tree answers ``groups(k)`` for every k and gives HMR
its parents.

URIEL comes from ``urielplus`` (maintained; its ``database/original_uriel`` holds URIEL's
``features.npz``, ``family_features.npz`` and ``geocoord_features.npz``, byte-identical to
lang2vec 1.1.2's). Feature sets keep lang2vec's names and values: per-source sets are read
as they are, and the ``*_average`` sets are the mean over a feature's known sources rounded
to 4 decimals, which is lang2vec's ``feature_averages.npz`` exactly, for all 7970 languages
and 289 features (``bench/uriel_compare.py``, ``docs/typology.md``). lang2vec itself, which
imports ``pkg_resources`` (setuptools<81), is no longer needed; only its kNN-imputed
``*_knn`` sets are not in urielplus, and they are read from an installed lang2vec's data
files (the ``xelm[lang2vec]`` extra) without importing it. Distances are computed here.
"""

from __future__ import annotations

import csv
import importlib.metadata
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from xelm.allocate.tree import (LINKAGES, TypologyNode, TypologyTree,  # noqa: F401
                                cluster, plot_dendrogram)

BACKEND = "urielplus"
LANG2VEC_EXTRA = "pip install 'xelm[lang2vec]'"


class TypologyError(ValueError):
    """Languages that cannot be placed typologically; the message says which and how to fix it."""


# --------------------------------------------------------------------------- vectors

# lang2vec's feature sets: name -> (URIEL file, source, feature-name prefix). Source "avg" is
# the mean over the known sources of features.npz; "predicted" (the *_knn sets) is lang2vec's.
FEATURE_SETS: dict[str, tuple[str, str, str]] = {
    "syntax_wals": ("features.npz", "WALS", "S_"),
    "phonology_wals": ("features.npz", "WALS", "P_"),
    "syntax_sswl": ("features.npz", "SSWL", "S_"),
    "syntax_ethnologue": ("features.npz", "ETHNO", "S_"),
    "phonology_ethnologue": ("features.npz", "ETHNO", "P_"),
    "inventory_ethnologue": ("features.npz", "ETHNO", "INV_"),
    "inventory_phoible_aa": ("features.npz", "PHOIBLE_AA", "INV_"),
    "inventory_phoible_gm": ("features.npz", "PHOIBLE_GM", "INV_"),
    "inventory_phoible_saphon": ("features.npz", "PHOIBLE_SAPHON", "INV_"),
    "inventory_phoible_spa": ("features.npz", "PHOIBLE_SPA", "INV_"),
    "inventory_phoible_ph": ("features.npz", "PHOIBLE_PH", "INV_"),
    "inventory_phoible_ra": ("features.npz", "PHOIBLE_RA", "INV_"),
    "inventory_phoible_upsid": ("features.npz", "PHOIBLE_UPSID", "INV_"),
    "syntax_knn": ("feature_predictions.npz", "predicted", "S_"),
    "phonology_knn": ("feature_predictions.npz", "predicted", "P_"),
    "inventory_knn": ("feature_predictions.npz", "predicted", "INV_"),
    "syntax_average": ("features.npz", "avg", "S_"),
    "phonology_average": ("features.npz", "avg", "P_"),
    "inventory_average": ("features.npz", "avg", "INV_"),
    "fam": ("family_features.npz", "FAM", ""),
    "id": ("family_features.npz", "ID", ""),
    "geo": ("geocoord_features.npz", "GEOCOORDS", ""),
}
LANG2VEC_ONLY = ("feature_predictions.npz",)


def _urielplus_dir() -> Path:
    """urielplus's copy of the original URIEL files (read, never written: ``URIELPlus()``
    copies them into its own ``database/`` and can rewrite that copy)."""
    try:
        import urielplus  # the package is empty; urielplus.urielplus would pull in pandas
    except ImportError as error:
        raise TypologyError("urielplus is not installed; xelm reads URIEL from it: "
                            "pip install 'urielplus>=1.3.2'") from error
    folder = Path(urielplus.__file__).parent / "database" / "original_uriel"
    if not (folder / "features.npz").is_file():
        raise TypologyError(f"urielplus has no URIEL data at {folder}; xelm was tested with "
                            "urielplus 1.3.2 (reinstall it: pip install 'urielplus>=1.3.2')")
    return folder


def _lang2vec_dir() -> Path | None:
    """lang2vec's data folder, found from its installed metadata and never imported (its
    module needs pkg_resources; a ``lang2vec.py`` script on ``sys.path`` cannot shadow it)."""
    try:
        folder = Path(importlib.metadata.distribution("lang2vec").locate_file("lang2vec/data"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return folder if folder.is_dir() else None


def _path(filename: str) -> Path:
    if filename in LANG2VEC_ONLY:
        folder = _lang2vec_dir()
        if folder is None or not (folder / filename).is_file():
            sets = ", ".join(n for n, (f, _, _) in FEATURE_SETS.items() if f == filename)
            raise TypologyError(f"the feature sets {sets} (lang2vec's kNN-imputed URIEL) are "
                                f"not in urielplus; install lang2vec for them: {LANG2VEC_EXTRA}")
        return folder / filename
    return _urielplus_dir() / filename


@lru_cache(maxsize=None)
def _index(filename: str) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """A URIEL file's language -> row, feature names and sources (not its data)."""
    with np.load(_path(filename)) as table:
        langs, feats, sources = table["langs"], table["feats"], table["sources"]
    return {str(code): row for row, code in enumerate(langs)}, feats, sources


@lru_cache(maxsize=32)
def _rows(filename: str, rows: tuple[int, ...]) -> np.ndarray:
    """Rows ``[n, features, sources]`` of a URIEL file's data (float64; -1 = missing)."""
    with np.load(_path(filename)) as table:
        data = table["data"][list(rows)].astype(np.float64)
    data.flags.writeable = False
    return data


def _named_set(codes: list[str], name: str) -> tuple[list[str], np.ndarray]:
    """lang2vec's ``get_named_set``: feature names and values ``[n, f]`` (-1 = missing)."""
    filename, source, prefix = FEATURE_SETS[name]
    rows, feats, sources = _index(filename)
    if name == "id":
        names = ["ID_" + str(code).upper() for code in rows]
        values = np.zeros((len(codes), len(names)))
        values[np.arange(len(codes)), [rows[code] for code in codes]] = 1.0
        return names, values
    columns = np.flatnonzero(np.char.startswith(feats.astype(str), prefix))
    data = _rows(filename, tuple(rows[code] for code in codes))[:, columns, :]
    if source == "avg":  # lang2vec's feature_averages.npz, exactly
        known = data != -1.0
        count = known.sum(axis=2)
        total = np.where(known, data, 0.0).sum(axis=2)
        values = np.where(count > 0, np.round(total / np.maximum(count, 1), 4), -1.0)
    else:
        values = data[:, :, int(np.flatnonzero(sources == source)[0])]
    return [str(f) for f in feats[columns]], values


def uriel_features(codes: list[str], features: str) -> tuple[list[str], np.ndarray]:
    """lang2vec's ``get_features(codes, features, minimal=False)`` from urielplus's URIEL:
    feature names and values ``[n, f]`` (NaN = missing). ``+`` concatenates sets, ``|``
    takes their element-wise maximum (a known value beats a missing one), as lang2vec."""
    names: list[str] = []
    blocks = []
    for part in _parse_feature_sets(features):
        union = part.split("|")
        part_names, values = _named_set(codes, union[0])
        for other in union[1:]:
            other_names, more = _named_set(codes, other)
            if len(other_names) != len(part_names):
                raise TypologyError(f"cannot take the union {part!r} of feature sets of "
                                    f"different sizes ({len(part_names)}, {len(other_names)})")
            values = np.maximum(values, more)
        names += part_names
        blocks.append(values)
    vectors = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(codes), 0))
    # C order, as lang2vec's rows: BLAS sums x @ x.T in another order for other layouts,
    # which moves cosine distances by an ulp
    vectors = np.ascontiguousarray(vectors, dtype=np.float64)
    return [name.replace(" ", "_") for name in names], np.where(vectors == -1.0, math.nan, vectors)


def _feature_sets() -> list[str]:
    """The feature sets this environment can read (``*_knn`` only with lang2vec's data)."""
    knn = _lang2vec_dir() is not None and all(
        (_lang2vec_dir() / f).is_file() for f in LANG2VEC_ONLY)
    return [name for name, (filename, _, _) in FEATURE_SETS.items()
            if knn or filename not in LANG2VEC_ONLY]


def to_iso639_3(code: str) -> str:
    """A corpus language code (ISO 639-1, 639-3, a BCP 47 tag) as ISO 639-3, via langcodes."""
    import langcodes

    try:
        return langcodes.Language.get(code).to_alpha3()
    except (LookupError, ValueError) as error:
        raise TypologyError(f"language code {code!r} is not a known ISO 639 code ({error}); "
                            "give a features_file that lists it instead") from error


def _parse_feature_sets(features: str) -> list[str]:
    parts = [part.strip() for part in features.split("+")]
    known = list(FEATURE_SETS)
    for part in parts:
        for name in part.split("|"):
            if name == "learned":
                raise TypologyError(
                    "the lang2vec feature set 'learned' is not supported: lang2vec 1.1.2 ships "
                    "it as a pickled array that fails to load, and urielplus does not have it. "
                    "Choose one of " + ", ".join(known))
            if name not in known:
                raise TypologyError(f"unknown URIEL feature set {name!r} in {features!r}; "
                                    f"choose from {', '.join(known)} (join several with '+')")
    return parts


def covering_feature_sets(code3: str) -> list[str]:
    """The feature sets with at least one known value for an ISO 639-3 code."""
    if code3 not in _index("features.npz")[0]:
        return []
    covering = []
    for name in _feature_sets():
        _, values = _named_set([code3], name)
        if name == "id" or np.any(values != -1.0):
            covering.append(name)
    return covering


def _check_uriel(languages: list[str], codes: list[str]) -> None:
    known = _index("features.npz")[0]
    unknown = [f"{lang} ({code})" for lang, code in zip(languages, codes) if code not in known]
    if unknown:
        raise TypologyError(f"not in URIEL: {', '.join(unknown)}. Give a features_file "
                            "(CSV: language, feature columns) that lists them, or drop them")


def language_vectors(languages: list[str], features: str = "syntax_average",
                     features_file: str | None = None) -> np.ndarray:
    """Feature vectors ``[n, f]`` (NaN = missing) for corpus language codes.

    ``features`` is any lang2vec feature set name or a '+' concatenation (e.g.
    ``syntax_average+phonology_average``); every language's vector is its own full row (as
    lang2vec's ``minimal=False``), so it does not depend on which other languages are asked
    for. The ``*_knn`` sets need lang2vec installed (``xelm[lang2vec]``). A CSV
    ``features_file`` replaces URIEL. Unknown languages, or languages with no value in the
    chosen set, raise :class:`TypologyError` naming them (and the sets that do cover them).
    """
    if features_file is not None:
        return _read_feature_table(features_file, languages)
    _parse_feature_sets(features)
    codes = [to_iso639_3(lang) for lang in languages]
    _check_uriel(languages, codes)
    _, vectors = uriel_features(codes, features)
    empty = np.all(np.isnan(vectors), axis=1)
    if empty.any():
        hint = ""
        if not any(FEATURE_SETS[name][0] in LANG2VEC_ONLY for name in _feature_sets()):
            hint = (". The *_knn sets (syntax_knn, phonology_knn, inventory_knn: kNN-imputed, "
                    f"a value for every URIEL language) need lang2vec: {LANG2VEC_EXTRA}")
        lines = [f"{languages[i]} ({codes[i]}): covered by "
                 f"{', '.join(covering_feature_sets(codes[i])) or 'none'}"
                 for i in np.flatnonzero(empty)]
        raise TypologyError(f"no {features!r} features for: " + "; ".join(lines) + hint)
    return vectors


def _read_feature_table(path: str | os.PathLike, languages: list[str]) -> np.ndarray:
    """Rows of a CSV (``language`` column, then numeric features; blank = missing)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or not rows[0] or rows[0][0].strip() != "language" or len(rows[0]) < 2:
        raise TypologyError(f"{path}: the first row must be a header 'language,<feature>,...'")
    table = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            table[row[0].strip()] = [float(v) if v.strip() else math.nan for v in row[1:]]
        except ValueError as error:
            raise TypologyError(f"{path}, line {line}: non-numeric feature ({error})") from None
        if len(table[row[0].strip()]) != len(rows[0]) - 1:
            raise TypologyError(f"{path}, line {line}: {len(row)} columns, header has "
                                f"{len(rows[0])}")
    missing = [lang for lang in languages if lang not in table]
    empty = [lang for lang in languages if lang in table and np.all(np.isnan(table[lang]))]
    if missing or empty:
        raise TypologyError(f"{path}: no row for {', '.join(missing) or '-'}; "
                            f"no values for {', '.join(empty) or '-'}")
    return np.array([table[lang] for lang in languages], dtype=np.float64)


# --------------------------------------------------------------------------- distances


def cosine_distances(vectors: np.ndarray, *, norms: str = "own") -> np.ndarray:
    """Pairwise cosine distances ``[n, n]`` between vectors with NaN (missing) features.

    The dot product skips features missing in either vector. ``norms="own"`` (default)
    takes each vector's norm over all its own known features, as the paper's released code
    (``lang_clustering.py``) does; it reproduces the paper's 8 published groups.
    ``norms="shared"`` takes both norms over the features the pair shares, a true cosine of
    the shared sub-vectors. Pairs with no usable features get distance 1.
    """
    if norms not in ("own", "shared"):
        raise ValueError(f"norms must be 'own' or 'shared', not {norms!r}")
    known = ~np.isnan(vectors)
    x = np.where(known, vectors, 0.0)
    dot = x @ x.T
    if norms == "own":
        squares = (x * x).sum(axis=1)
        norm2 = np.outer(squares, squares)
    else:
        shared_sq = (x * x) @ known.T.astype(float)  # [i, j]: sum of x_i^2 over j's known
        norm2 = shared_sq * shared_sq.T
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = np.where(norm2 > 0, dot / np.sqrt(norm2), 0.0)
    distances = 1.0 - np.clip(similarity, -1.0, 1.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def allocate_typology(languages: list[str], k: int, features: str = "syntax_average",
                      features_file: str | None = None,
                      linkage: str = "paper") -> tuple[list[list[str]], TypologyTree]:
    """Group corpus languages into k typological clusters: ``(groups, tree)``."""
    if len(set(languages)) != len(languages):
        raise ValueError(f"duplicate languages in {languages}")
    if not 1 <= k <= len(languages):
        raise ValueError(f"cannot make k={k} typology groups from {len(languages)} languages: "
                         f"each expert needs at least one language, so 1 <= k <= "
                         f"{len(languages)}")
    vectors = language_vectors(languages, features, features_file)
    tree = cluster(cosine_distances(vectors), list(languages), k, linkage)
    return tree.groups(k), tree
