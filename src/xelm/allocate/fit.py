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


def expert_router_dir(rd: RunDir):
    """The TF-IDF router of the run's expert set: ``xelm.json``'s ``tfidf`` (``xelm adapt``
    writes one with the new experts' centres added), else ``allocation.json``'s; None
    when the run has neither."""
    from xelm.experts.store import check_inside

    folder = read_json(rd.manifest).get("tfidf") if rd.manifest.is_file() else None
    folder = folder or read_json(rd.allocation).get("router")
    return check_inside(rd.root, folder) if folder else None


def load_expert_router(rd: RunDir):
    """(router, names): the expert set's TF-IDF router and the expert of each of its
    centres (``meta["experts"]`` when ``xelm adapt`` extended it, else the allocation's
    experts in order)."""
    from xelm.allocate.tfidf import TfidfRouter

    folder = expert_router_dir(rd)
    if folder is None:
        raise FileNotFoundError(f"{rd.root} has no TF-IDF router (allocation.json names none)")
    router = TfidfRouter.load(folder)
    names = router.meta.get("experts") or list(read_json(rd.allocation)["experts"])
    return router, list(names)


def extend_router(cfg: Config, rd: RunDir, experts: dict[str, str], out) -> bool:
    """Save to ``out`` the expert set's router with a centre added for each new expert
    (``experts``: new language -> its expert): the TF-IDF centre of at most
    ``allocate.fit_docs`` of that language's training documents, under the router's own
    vocabulary (so a script the router never saw gets an empty centre: equally far from
    every text). False, and nothing written, when the run has no router."""
    from dataclasses import replace

    from xelm.allocate.tfidf import centroids_from_groups

    if expert_router_dir(rd) is None:
        return False
    router, names = load_expert_router(rd)
    new = {lang: name for lang, name in experts.items() if name not in names}
    texts, groups = [], []
    rng = np.random.default_rng(cfg.random_seed)
    for g, lang in enumerate(new):
        docs = read_lines(rd.text(lang, "train"))
        keep = np.sort(rng.permutation(len(docs))[: cfg.allocate.fit_docs])
        texts += [docs[i] for i in keep]
        groups += [g] * len(keep)
    centres = centroids_from_groups(router, texts, np.asarray(groups)) if new else \
        np.zeros((0, router.centroids.shape[1]), np.float32)
    names = names + list(new.values())
    meta = {**router.meta, "k": len(names), "experts": names,
            "added_centres": {**router.meta.get("added_centres", {}), **new}}
    replace(router, centroids=np.vstack([router.centroids, centres]), meta=meta).save(out)
    return True


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
