"""Allocation over a prepared run directory: language groups with their TF-IDF router
(c-BTM routing for language or typology experts), or TF-IDF document clusters with their
cluster shards. The ``allocate`` stage calls :func:`allocate_run` and writes the result.
"""

from __future__ import annotations

import numpy as np

from xelm.config import Config
from xelm.io import read_json
from xelm.rundir import RunDir

ROUTER = "router"  # the router's folder, relative to the run (allocation.json's "router")


def read_lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def features_file(cfg: Config, rd: RunDir, given: str | None = None) -> str | None:
    """The typology feature table: ``given``, else ``allocate.features_file``, else the
    synthetic corpus' own table (none for a real corpus: URIEL's features are used)."""
    if given or cfg.allocate.features_file:
        return given or cfg.allocate.features_file
    if cfg.corpus.source == "synthetic":
        return str(rd.synthetic / "features.csv")
    return None


def allocate_run(cfg: Config, rd: RunDir) -> dict:
    """Languages or documents -> experts (the content of ``allocation.json``)."""
    from xelm.allocate import allocation as al

    languages = read_json(rd.prepare_json)["languages"]
    if cfg.allocate.method == "tfidf":
        return allocate_tfidf(cfg, rd, languages)
    groups, tree = al.language_groups(cfg.allocate, languages, features_file(cfg, rd))
    result = al.from_groups(cfg.allocate.method, groups, tree)
    from xelm.extras import installed

    if tree is not None and installed("matplotlib"):  # the tree before any training
        from xelm.allocate.typology import TypologyTree, plot_dendrogram

        plot_dendrogram(TypologyTree.from_dict(tree), rd.typology_plot)
    result["router"] = fit_group_router(cfg, rd, result)
    return result


def fit_group_router(cfg: Config, rd: RunDir, result: dict) -> str:
    """A TF-IDF router whose centres are the experts' training documents (c-BTM routing
    for language or typology experts); fitted on at most ``allocate.fit_docs`` documents."""
    from xelm.allocate.tfidf import TfidfRouter

    names = list(result["experts"])
    texts, groups = [], []
    for lang, expert in result["language_to_expert"].items():
        docs = read_lines(rd.text(lang, "train"))
        texts += docs
        groups += [names.index(expert)] * len(docs)
    rng = np.random.default_rng(cfg.random_seed)
    keep = np.sort(rng.permutation(len(texts))[: cfg.allocate.fit_docs])
    a = cfg.allocate
    router = TfidfRouter.from_groups([texts[i] for i in keep], np.asarray(groups)[keep],
                                     analyzer=a.analyzer, ngram_range=tuple(a.ngram_range),
                                     max_features=a.max_features)
    router.save(rd.router)
    return ROUTER


def allocate_tfidf(cfg: Config, rd: RunDir, languages: list[str]) -> dict:
    """Cluster the training documents; each cluster's shard reuses the packed tokens.

    Streamed (:func:`xelm.allocate.tfidf.allocate_tfidf_stream`): the router is fitted on
    ``allocate.fit_docs`` documents, the others are read and routed in batches, and the
    cluster shards are copied from the language shards a block of documents at a time.
    """
    from xelm.allocate import allocation as al
    from xelm.allocate.tfidf import allocate_tfidf_stream
    from xelm.data.packing import Shard, regroup, shard_path, text_batches

    dtype = read_json(rd.prepare_json)["dtype"]
    shards = [Shard(shard_path(rd.data, lang, "train"), dtype) for lang in languages]
    ends = [shard.documents[:, 0] for shard in shards]
    counts = np.concatenate([np.diff(e, prepend=0) for e in ends])
    langs = [lang for lang, e in zip(languages, ends) for _ in range(len(e))]
    texts = [rd.text(lang, "train") for lang in languages]
    a = cfg.allocate
    assign, router = allocate_tfidf_stream(
        lambda: text_batches(texts), counts, a.experts, fit_docs=a.fit_docs,
        seed=cfg.random_seed, analyzer=a.analyzer, ngram_range=tuple(a.ngram_range),
        max_features=a.max_features)
    router.save(rd.router)
    result = al.from_clusters(assign, langs, counts, a.experts)
    regroup(shards, assign, [al.cluster_shard(rd.data, name) for name in result["experts"]])
    result["router"] = ROUTER
    return result
