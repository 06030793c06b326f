"""The allocation: which expert learns from which data (``allocation.json``).

Three methods, one output shape: ``{"method", "experts": {name: {"languages": [...],
"shard": optional cluster shard}}, "language_to_expert", "tree"?, "router"?}``. Language
allocations (explicit groups, one per language, typology clusters) give each expert the
train shards of its languages; TF-IDF allocations give each expert its own shard of
documents, and top-1 routing by language picks the expert holding most of that
language's documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xelm.config import AllocateConfig


class AllocationError(ValueError):
    """The allocation cannot be made as configured."""


def expert_names(k: int) -> list[str]:
    width = len(str(k - 1))
    return [f"e{i:0{width}d}" for i in range(k)]


def language_groups(cfg: AllocateConfig, languages: list[str],
                    features_file: str | None) -> tuple[list[list[str]], dict | None]:
    """Groups of languages for ``languages`` or ``typology``; (groups, tree as dict)."""
    if cfg.method == "typology":
        from xelm.allocate.typology import allocate_typology

        groups, tree = allocate_typology(languages, cfg.experts, cfg.features, features_file,
                                         cfg.linkage)
        return groups, tree.to_dict()
    if cfg.groups:
        return _explicit_groups(cfg, languages), None
    if cfg.experts != len(languages):
        raise AllocationError(
            f"allocate.method=languages without allocate.groups makes one expert per "
            f"language ({len(languages)}), but allocate.experts={cfg.experts}; set "
            f"allocate.experts={len(languages)}, give allocate.groups, or use "
            "allocate.method=typology")
    return [[lang] for lang in languages], None


def _explicit_groups(cfg: AllocateConfig, languages: list[str]) -> list[list[str]]:
    from xelm.data.readers import normalize_language

    groups = [[normalize_language(c) for c in members] for members in cfg.groups.values()]
    flat = [lang for g in groups for lang in g]
    missing = sorted(set(languages) - set(flat))
    unknown = sorted(set(flat) - set(languages))
    dupes = sorted({lang for lang in flat if flat.count(lang) > 1})
    if missing or unknown or dupes or any(not g for g in groups):
        raise AllocationError(
            "allocate.groups must place every corpus language in exactly one non-empty "
            f"group; not placed: {missing or '-'}; not in the corpus: {unknown or '-'}; "
            f"in several groups: {dupes or '-'}")
    if len(groups) != cfg.experts:
        raise AllocationError(f"allocate.groups has {len(groups)} groups but "
                              f"allocate.experts={cfg.experts}; make them equal")
    return groups


def from_groups(method: str, groups: list[list[str]], tree: dict | None) -> dict:
    names = expert_names(len(groups))
    return {"method": method,
            "experts": {n: {"languages": g} for n, g in zip(names, groups)},
            "language_to_expert": {lang: n for n, g in zip(names, groups) for lang in g},
            "tree": tree}


def from_clusters(assign: np.ndarray, doc_langs: list[str], doc_tokens: np.ndarray,
                  k: int) -> dict:
    """Allocation for TF-IDF clusters: per expert its language mix; top-1 map by majority."""
    names = expert_names(k)
    langs = sorted(set(doc_langs))
    mix = np.zeros((k, len(langs)))
    index = {lang: j for j, lang in enumerate(langs)}
    for cluster, lang, tokens in zip(assign, doc_langs, doc_tokens):
        mix[cluster, index[lang]] += tokens
    experts = {}
    for i, name in enumerate(names):
        share = {lang: int(mix[i, j]) for j, lang in enumerate(langs) if mix[i, j] > 0}
        experts[name] = {"languages": sorted(share, key=share.get, reverse=True),
                         "tokens_by_language": share, "tokens": int(mix[i].sum())}
    best = {lang: names[int(mix[:, j].argmax())] for j, lang in enumerate(langs)}
    return {"method": "tfidf", "experts": experts, "language_to_expert": best, "tree": None}


def cluster_shard(data_dir: Path, name: str) -> Path:
    return data_dir / "clusters" / f"{name}.bin"
