"""The parts of streamed preparation: split labels, append-only shards, regrouping, and the
streamed TF-IDF allocation; each against the in-memory function it replaces."""

from __future__ import annotations

import random

import numpy as np
import pytest

from xelm.allocate.balance import balanced_assign_in_groups
from xelm.allocate.tfidf import allocate_tfidf, allocate_tfidf_stream
from xelm.data.errors import CorpusError
from xelm.data.packing import AppendFile, Shard, ShardWriter, regroup, text_batches, write_tokens
from xelm.data.split import (LABEL, KeyedSplit, split_by_key, split_documents, split_labels,
                             text_rank)


def _indices(labels: np.ndarray) -> dict[str, list[int]]:
    return {split: np.flatnonzero(labels == i).tolist() for split, i in LABEL.items()}


@pytest.mark.parametrize("method", ["random", "every_nth"])
def test_split_labels_are_split_documents(method):
    for count in (3, 4, 10, 37, 1001):
        for vf, tf in ((0.05, 0.05), (0.1, 0.2), (0.3, 0.4)):
            for seed in (0, 7):
                assert _indices(split_labels(count, vf, tf, seed, method)) == \
                    split_documents(["x"] * count, vf, tf, seed, method)


def test_keyed_split_is_split_by_key_including_its_errors():
    rng = random.Random(0)
    errors = 0
    for _ in range(300):
        corpus, keys = {}, {}
        for lang in range(rng.randint(1, 4)):
            n = rng.randint(2, 50)
            corpus[f"l{lang}"] = [f"doc {rng.randint(0, 30)}" for _ in range(n)]
            keys[f"l{lang}"] = (None if rng.random() < 0.3 else
                                [f"k{rng.randint(0, 25)}" for _ in range(n)])
        vf, tf, seed = rng.choice([0.05, 0.1, 0.3]), rng.choice([0.05, 0.2, 0.4]), rng.randint(0, 5)
        try:
            want, want_record = split_by_key(corpus, keys, vf, tf, seed)
        except CorpusError as exc:
            want = str(exc)
        streamed = KeyedSplit(vf, tf, seed)
        for lang, docs in corpus.items():
            if keys[lang] is None:
                streamed.add_text_ranks(lang, [text_rank(seed, d) for d in docs])
            else:
                streamed.add_keys(lang, [streamed.key_id(k) for k in keys[lang]])
        try:
            labels, record = streamed.labels()
        except CorpusError as exc:
            assert str(exc) == want
            errors += 1
            continue
        assert record == want_record
        assert {lang: _indices(lab) for lang, lab in labels.items()} == want
    assert 20 < errors < 280  # both outcomes were exercised


def _docs(rng, n, vocab=300):
    return [rng.integers(0, vocab, rng.integers(1, 40)).astype(np.uint16) for _ in range(n)]


def test_shard_writer_cut_back_to_a_checkpoint_writes_write_tokens_bytes(tmp_path):
    rng = np.random.default_rng(0)
    docs = _docs(rng, 50)
    sizes = rng.integers(2, 200, 50)
    want = tmp_path / "want.bin"
    stats = write_tokens(want, docs, sizes, "uint16")

    def append(writer, part):
        writer.append(np.concatenate([docs[i] for i in part]),
                      np.array([len(docs[i]) for i in part]), sizes[part])

    got = tmp_path / "got.bin"
    writer = ShardWriter(got, "uint16")
    append(writer, range(0, 20))
    writer.sync()
    state = writer.state()
    append(writer, range(20, 35))  # written after the checkpoint, then "killed"
    writer.close()
    resumed = ShardWriter(got, "uint16", state)
    append(resumed, range(20, 50))
    assert resumed.finish() == stats
    for suffix in (".bin", ".docs.npy"):
        assert got.with_suffix(suffix).read_bytes() == want.with_suffix(suffix).read_bytes()
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(FileNotFoundError, match="missing or shorter"):
        AppendFile(tmp_path / "gone.txt", size=10)


def test_regroup_writes_each_groups_documents_as_write_tokens_would(tmp_path):
    rng = np.random.default_rng(1)
    shards, docs, sizes = [], [], []
    for lang in ("a", "b"):
        mine = _docs(rng, 30)
        size = rng.integers(2, 90, 30)
        write_tokens(tmp_path / f"{lang}.bin", mine, size, "uint16")
        shards.append(Shard(tmp_path / f"{lang}.bin", "uint16"))
        docs += mine
        sizes += size.tolist()
    groups = rng.integers(0, 3, 60)
    groups[groups == 2] = 0  # group 2 stays empty
    outputs = [tmp_path / f"g{g}.bin" for g in range(3)]
    stats = regroup(shards, groups, outputs, block_docs=7)
    for g, out in enumerate(outputs):
        mine = np.flatnonzero(groups == g)
        want = write_tokens(tmp_path / "want.bin", [docs[i] for i in mine],
                            [sizes[i] for i in mine], "uint16")
        assert stats[g] == want
        for suffix in (".bin", ".docs.npy"):
            assert out.with_suffix(suffix).read_bytes() == \
                (tmp_path / "want").with_suffix(suffix).read_bytes()


def test_text_batches_read_the_lines_of_text_files(tmp_path):
    lines = ["première ligne", "", "  spaced  ", "x" * 5000, "last"]
    (tmp_path / "a.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (tmp_path / "b.txt").write_text("no newline at the end", encoding="utf-8")
    batches = list(text_batches([tmp_path / "a.txt", tmp_path / "b.txt"], batch_docs=2))
    assert [len(b) for b in batches] == [2, 2, 2]
    assert sum(batches, []) == lines + ["no newline at the end"]


def _toy_languages(docs_per_language=60, seed=0):
    """Four languages with disjoint alphabets, in corpus order (one after another)."""
    rng = random.Random(seed)
    texts, langs = [], []
    for lang, alphabet in enumerate(["abcdef", "ghijkl", "mnopqr", "stuvwx"]):
        for _ in range(docs_per_language):
            words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
                     for _ in range(rng.randint(5, 30))]
            texts.append(" ".join(words))
            langs.append(lang)
    return texts, np.array(langs)


def test_streamed_tfidf_allocation_in_batches_is_the_in_memory_one():
    texts, _ = _toy_languages()
    tokens = np.array([len(t) // 3 + 1 for t in texts])
    want, router = allocate_tfidf(texts, tokens, 4, fit_docs=70, seed=2, progress=False)
    batches = lambda: (texts[i:i + 13] for i in range(0, len(texts), 13))  # noqa: E731
    got, streamed = allocate_tfidf_stream(batches, tokens, 4, fit_docs=70, seed=2,
                                          batch_size=5, progress=False)
    assert np.array_equal(got, want)
    assert np.array_equal(streamed.centroids, router.centroids)


def test_groups_balance_big_corpora_and_keep_the_clusters():
    """With the distances spilled to a file and balanced in interleaved groups, every
    cluster still holds its share, and each language still goes (almost) whole to one
    cluster although the corpus comes ordered by language."""
    texts, langs = _toy_languages(docs_per_language=90)
    tokens = np.array([len(t) // 3 + 1 for t in texts])
    batches = lambda: (texts[i:i + 50] for i in range(0, len(texts), 50))  # noqa: E731
    assign, _ = allocate_tfidf_stream(batches, tokens, 4, fit_docs=120, seed=0,
                                      progress=False, group_docs=100, tolerance=0.1)
    shares = np.bincount(assign, weights=tokens, minlength=4) / tokens.sum()
    assert np.all(np.abs(shares - 0.25) <= 0.25 * 0.1)
    purity = [np.bincount(assign[langs == lang], minlength=4).max() / 90 for lang in range(4)]
    assert min(purity) > 0.8, purity


def test_balanced_assign_in_groups_holds_every_group_to_the_tolerance():
    rng = np.random.default_rng(0)
    distances = rng.random((1000, 3))
    weights = rng.integers(1, 10, 1000).astype(float)
    assign = balanced_assign_in_groups(lambda g, m: distances[g::m], weights, 0.05, 300)
    for g in range(4):
        part = np.bincount(assign[g::4], weights=weights[g::4], minlength=3)
        assert np.all(np.abs(part / part.sum() - 1 / 3) <= 0.05 / 3)
