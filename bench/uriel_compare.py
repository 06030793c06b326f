"""lang2vec vs urielplus as the source of URIEL typology vectors; writes bench/results/uriel_compare.json.

lang2vec 1.1.2 imports ``pkg_resources`` (gone in setuptools 81), so it forces
``setuptools<81`` on every environment. urielplus is maintained and ships URIEL too. This
measures, for the paper's 16 languages, whether urielplus gives lang2vec's ``syntax_average``
vectors and so the paper's 8 typology pairs:

* the data files: lang2vec's ``features.npz`` (per-source URIEL values) against the copy in
  urielplus's ``database/original_uriel``, and lang2vec's ``feature_averages.npz`` against
  the mean over known sources of ``features.npz`` (raw and rounded to 4 decimals), for every
  URIEL language and feature;
* the vectors: lang2vec ``get_features(codes, "syntax_average")`` against urielplus's
  public API ``URIELPlus().get_vector("syntactic", codes)`` with ``set_aggregation("A")``
  (average over sources; the default "U" takes the maximum) and the same rounded to 4
  decimals, and against xelm's own ``language_vectors`` (whatever backend it uses): feature
  names and order, exact-equality count, max abs difference, missing-value pattern;
* xelm's cosine distances (both norms) and xelm's clustering (the paper's linkage, every k,
  and the SciPy linkages at k=8) on each set of vectors;
* import times (fresh interpreters, median of ``--repeats``) and what each needs of
  setuptools (declared requirements, ``pkg_resources`` in the source, and an import with
  ``pkg_resources`` made unimportable, as under setuptools>=81).

``--integrated`` adds URIEL+'s own updated data (``integrate_databases()``, ~2 minutes):
other vectors, Glottocodes, and ara/swa/zho replaced by arb/swh/cmn (macrolanguages have no
Glottocode in its map).

    OMP_NUM_THREADS=1 .venv/bin/python bench/uriel_compare.py [--integrated]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata as metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from xelm.allocate import typology
from xelm.allocate.typology import cluster, cosine_distances, language_vectors, to_iso639_3

ROOT = Path(__file__).resolve().parents[1]
PAPER_16 = "en fr es de el bg ru tr ar vi zh hi sw ur ja ko".split()
PAPER_PAIRS = [["en", "es"], ["de", "el"], ["ja", "ko"], ["hi", "ur"], ["bg", "ru"],
               ["fr", "ar"], ["tr", "zh"], ["sw", "vi"]]
SCIPY_LINKAGES = ("average", "complete", "single", "ward")


def _sorted(groups):
    return sorted(sorted(g) for g in groups)


def _package_dir(name: str) -> Path:
    return Path(metadata.distribution(name).locate_file(name))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- sources


def lang2vec_vectors(codes: list[str]) -> tuple[list[str], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation
        import lang2vec.lang2vec as l2v
    names, _ = l2v.get_named_set(codes, "syntax_average")
    table = l2v.get_features(codes, "syntax_average", minimal=False)
    vectors = np.array([[math.nan if v == "--" else float(v) for v in table[c]] for c in codes])
    return list(names), vectors


def urielplus_vectors(codes: list[str], aggregation: str) -> tuple[list[str], np.ndarray, object]:
    from urielplus.urielplus import URIELPlus

    uriel = URIELPlus()
    uriel.set_aggregation(aggregation)
    names = [str(f) for f in uriel.feats[1] if str(f).startswith("S_")]
    table = uriel.get_vector("syntactic", codes)
    vectors = np.array([table[c] for c in codes], dtype=np.float64)
    return names, np.where(vectors == -1.0, math.nan, vectors), uriel


# --------------------------------------------------------------------------- comparisons


def compare_vectors(ref: np.ndarray, other: np.ndarray, languages: list[str]) -> dict:
    if ref.shape != other.shape:
        return {"same_shape": False, "shapes": [list(ref.shape), list(other.shape)]}
    ref_missing, other_missing = np.isnan(ref), np.isnan(other)
    both = ~ref_missing & ~other_missing
    equal = (ref == other) | (ref_missing & other_missing)
    diff = np.abs(ref - other)[both]
    return {
        "same_shape": True,
        "cells": int(ref.size),
        "exactly_equal_cells": int(equal.sum()),
        "unequal_cells": int((~equal).sum()),
        "max_abs_difference": float(diff.max()) if diff.size else 0.0,
        "unequal_values": sorted({f"{a:.6g} vs {b:.10g}" for a, b in
                                  zip(ref[~equal & both], other[~equal & both])}),
        "same_missing_pattern": bool(np.array_equal(ref_missing, other_missing)),
        "missing_per_language": {lang: [int(ref_missing[i].sum()), int(other_missing[i].sum())]
                                 for i, lang in enumerate(languages)},
    }


def clustering(vectors: np.ndarray, languages: list[str]) -> dict:
    distances = {norms: cosine_distances(vectors, norms=norms) for norms in ("own", "shared")}
    tree = cluster(distances["own"], languages, 8, "paper")
    groups = tree.groups(8)
    return {
        "distances": distances,
        "tree": tree,
        "paper_k8_groups": groups,
        "paper_8_pairs_reproduced": _sorted(groups) == _sorted(PAPER_PAIRS),
        "scipy_k8": {link: cluster(distances["own"], languages, 8, link).groups(8)
                     for link in SCIPY_LINKAGES},
    }


def compare_clusterings(ref: dict, other: dict, n: int) -> dict:
    return {
        "cosine_own_max_abs_difference":
            float(np.abs(ref["distances"]["own"] - other["distances"]["own"]).max()),
        "cosine_shared_max_abs_difference":
            float(np.abs(ref["distances"]["shared"] - other["distances"]["shared"]).max()),
        "distances_exactly_equal": bool(np.array_equal(ref["distances"]["own"],
                                                       other["distances"]["own"])),
        "paper_groups_equal_for_every_k": all(
            _sorted(ref["tree"].groups(k)) == _sorted(other["tree"].groups(k))
            for k in range(1, n + 1)),
        "paper_tree_same_merges": [(n.children, n.round) for n in ref["tree"].nodes]
        == [(n.children, n.round) for n in other["tree"].nodes],
        "paper_tree_identical_with_distances": ref["tree"].to_dict() == other["tree"].to_dict(),
        "scipy_k8_equal": {link: _sorted(ref["scipy_k8"][link]) == _sorted(other["scipy_k8"][link])
                           for link in SCIPY_LINKAGES},
    }


def summary(result: dict) -> dict:
    return {"paper_k8_groups": result["paper_k8_groups"],
            "paper_8_pairs_reproduced": result["paper_8_pairs_reproduced"]}


# --------------------------------------------------------------------------- whole database


def database_check() -> dict:
    l2v_dir = _package_dir("lang2vec") / "data"
    up_dir = _package_dir("urielplus") / "database" / "original_uriel"
    files = {}
    for name in ("features.npz", "family_features.npz", "geocoord_features.npz"):
        a, b = l2v_dir / name, up_dir / name
        files[name] = {"lang2vec_sha256": _sha256(a), "urielplus_sha256": _sha256(b),
                       "identical": _sha256(a) == _sha256(b)}
    files["feature_averages.npz"] = {"in_urielplus": (up_dir / "feature_averages.npz").exists()}
    files["feature_predictions.npz (the *_knn sets)"] = {
        "in_urielplus": (up_dir / "feature_predictions.npz").exists()}
    files["script_features.npz"] = {"in_lang2vec": (l2v_dir / "script_features.npz").exists()}

    with np.load(up_dir / "features.npz") as f:
        data, feats = f["data"].astype(np.float64), f["feats"]
        langs = f["langs"]
    with np.load(l2v_dir / "feature_averages.npz") as f:
        averages, avg_langs, avg_feats = f["data"][:, :, 0], f["langs"], f["feats"]
    known = data != -1.0
    count = known.sum(axis=2)
    mean = np.where(count > 0, np.where(known, data, 0.0).sum(axis=2) / np.maximum(count, 1), -1.0)
    rounded = np.round(mean, 4)
    per_prefix = {}
    for prefix in ("S_", "P_", "INV_"):
        cols = np.array([str(x).startswith(prefix) for x in feats])
        per_prefix[prefix] = {
            "features": int(cols.sum()),
            "raw_mean_unequal_cells": int((averages[:, cols] != mean[:, cols]).sum()),
            "raw_mean_max_abs_difference": float(np.abs(averages[:, cols] - mean[:, cols]).max()),
            "rounded_mean_equal": bool(np.array_equal(averages[:, cols], rounded[:, cols])),
        }
    return {
        "files": files,
        "feature_averages_vs_mean_of_features": {
            "languages": int(len(langs)), "features": int(len(feats)),
            "same_languages_and_features": bool(np.array_equal(langs, avg_langs)
                                                and np.array_equal(feats, avg_feats)),
            "same_missing_pattern": bool(np.array_equal(averages == -1.0, mean == -1.0)),
            "raw_mean_unequal_cells": int((averages != mean).sum()),
            "raw_mean_max_abs_difference": float(np.abs(averages - mean).max()),
            "rounded_to_4_decimals_equal_everywhere": bool(np.array_equal(averages, rounded)),
            "per_prefix": per_prefix,
        },
    }


# --------------------------------------------------------------------------- imports


def _fresh(code: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    lines = (out.stdout.strip() or out.stderr.strip()).splitlines()
    return out.returncode, lines[-1] if lines else ""


def _timed(statement: str, repeats: int) -> dict:
    code = ("import time; t = time.perf_counter()\n" + statement +
            "\nprint(round(time.perf_counter() - t, 4))")
    times = []
    for _ in range(repeats):
        rc, out = _fresh(code)
        if rc != 0:
            return {"error": out}
        times.append(float(out))
    return {"median_s": round(statistics.median(times), 3), "runs_s": times}


def imports(repeats: int) -> dict:
    block = "import sys; sys.modules['pkg_resources'] = None  # as with setuptools>=81\n"
    sources = {}
    for name in ("lang2vec", "urielplus"):
        hits = [str(p.relative_to(_package_dir(name).parent))
                for p in sorted(_package_dir(name).rglob("*.py"))
                if "pkg_resources" in p.read_text("utf-8", errors="replace")]
        sources[name] = {"version": metadata.version(name),
                         "requires_dist": metadata.requires(name) or [],
                         "files_using_pkg_resources": hits}
    lang16 = repr(PAPER_16)
    return {
        "baseline_import_numpy": _timed("import numpy", repeats),
        "import_lang2vec": _timed("import lang2vec.lang2vec", repeats),
        "import_urielplus": _timed("import urielplus.urielplus", repeats),
        "import_urielplus_and_URIELPlus()": _timed(
            "from urielplus.urielplus import URIELPlus; URIELPlus()", repeats),
        f"xelm_language_vectors_16 ({typology.BACKEND})": _timed(
            f"from xelm.allocate.typology import language_vectors; language_vectors({lang16})",
            repeats),
        "without_pkg_resources": {
            "lang2vec": _fresh(block + "import lang2vec.lang2vec; print('imports')"),
            "urielplus": _fresh(block + "from urielplus.urielplus import URIELPlus; "
                                "URIELPlus(); print('imports')"),
            "xelm_language_vectors": _fresh(
                block + f"from xelm.allocate.typology import language_vectors; "
                f"print(language_vectors({lang16}).shape)"),
        },
        "packages": sources,
    }


# --------------------------------------------------------------------------- URIEL+ data


def integrated(uriel) -> dict:
    """URIEL+'s updated databases (Grambank, APiCS, ...): a different data set on purpose."""
    import csv

    map_path = _package_dir("urielplus") / "database" / "urielplus_csvs" / "uriel_glottocode_map.csv"
    with open(map_path, newline="", encoding="utf-8") as handle:
        glotto = {row["iso_code"].strip(): row["glottocode"].strip() for row in csv.DictReader(handle)}
    substitutes = {"ara": "arb", "swa": "swh", "zho": "cmn"}
    codes3 = [to_iso639_3(lang) for lang in PAPER_16]
    no_glottocode = [c for c in codes3 if not glotto.get(c)]
    start = time.perf_counter()
    uriel.set_aggregation("A")
    uriel.integrate_databases()
    seconds = time.perf_counter() - start
    codes = [glotto[substitutes.get(c, c)] if not glotto.get(c) else glotto[c] for c in codes3]
    table = uriel.get_vector("syntactic", codes)
    vectors = np.array([table[c] for c in codes], dtype=np.float64)
    vectors = np.where(vectors == -1.0, math.nan, vectors)
    result = clustering(vectors, PAPER_16)
    return {
        "seconds_to_integrate": round(seconds, 1),
        "codes": "Glottocodes", "no_glottocode": no_glottocode,
        "substituted": {k: v for k, v in substitutes.items() if k in no_glottocode},
        "syntactic_features": int(vectors.shape[1]),
        "known_features_per_language": {lang: int((~np.isnan(vectors[i])).sum())
                                        for i, lang in enumerate(PAPER_16)},
        **summary(result), "_result": result,
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "uriel_compare.json")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-interpreter import timings")
    parser.add_argument("--integrated", action="store_true",
                        help="also URIEL+'s integrated databases (~2 minutes)")
    args = parser.parse_args()

    codes = [to_iso639_3(lang) for lang in PAPER_16]
    l2v_names, l2v = lang2vec_vectors(codes)
    up_names, up_avg, uriel = urielplus_vectors(codes, "A")
    _, up_union, _ = urielplus_vectors(codes, "U")
    up_rounded = np.round(up_avg, 4)
    xelm = language_vectors(PAPER_16, "syntax_average")

    variants = {"urielplus get_vector(syntactic, aggregation=A)": up_avg,
                "urielplus get_vector(syntactic, aggregation=A), rounded to 4 decimals": up_rounded,
                "urielplus get_vector(syntactic, aggregation=U, its default)": up_union,
                f"xelm language_vectors(syntax_average) [{typology.BACKEND}]": xelm}
    ref = clustering(l2v, PAPER_16)
    out = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/uriel_compare.py"
                   + (" --integrated" if args.integrated else ""),
        "python": platform.python_version(),
        "versions": {name: metadata.version(name)
                     for name in ("lang2vec", "urielplus", "numpy", "setuptools")},
        "languages": PAPER_16, "iso639_3": codes,
        "paper_pairs": PAPER_PAIRS,
        "features": {
            "lang2vec_syntax_average": len(l2v_names),
            "urielplus_syntactic": len(up_names),
            "same_names_and_order": l2v_names == up_names,
        },
        "database": database_check(),
        "lang2vec_syntax_average": summary(ref),
        "vs_lang2vec": {},
    }
    for name, vectors in variants.items():
        result = clustering(vectors, PAPER_16)
        out["vs_lang2vec"][name] = {"vectors": compare_vectors(l2v, vectors, PAPER_16),
                                    "clustering": compare_clusterings(ref, result, len(PAPER_16)),
                                    **summary(result)}
    if args.integrated:
        result = integrated(uriel)
        other = result.pop("_result")
        result["cosine_own_max_abs_difference_vs_lang2vec"] = float(
            np.abs(ref["distances"]["own"] - other["distances"]["own"]).max())
        out["urielplus_integrated_databases"] = result
    out["imports"] = imports(args.repeats)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, entry in out["vs_lang2vec"].items():
        v, c = entry["vectors"], entry["clustering"]
        print(f"{name}: equal cells {v.get('exactly_equal_cells')}/{v.get('cells')}, "
              f"max |diff| {v.get('max_abs_difference')}, same missing "
              f"{v.get('same_missing_pattern')}, distances max |diff| "
              f"{c['cosine_own_max_abs_difference']:.3g}, paper pairs "
              f"{entry['paper_8_pairs_reproduced']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
