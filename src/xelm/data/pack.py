"""Pass 3 of ``prepare`` (:mod:`xelm.data.prepare`): split, tokenise and append.

Every language is read again from its start; its documents go, in chunks of about
``chunk_bytes`` characters with their split labels, to the tokenising processes
(:class:`xelm.data.encode.ChunkEncoder`), and each chunk's text and tokens are appended,
in document order, to the split's ``.part`` files. Every ``checkpoint_bytes`` of text, once
the parts are on disk, a checkpoint (``<scratch>/<lang>.pack.json``) records their sizes
and the documents done; a killed run cuts the parts back to it and goes on from the next
document (documents before it are read, not tokenised), so the finished files are byte for
byte those of an uninterrupted run. A finished language is renamed into place and
recorded (``<lang>.done.json``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from xelm.data.encode import ChunkEncoder, TokenizerSpec
from xelm.data.errors import CorpusError
from xelm.data.packing import AppendFile, ShardWriter, shard_path
from xelm.data.sources import Source
from xelm.data.split import SPLITS
from xelm.io import read_json, write_json

log = logging.getLogger("xelm.data.prepare")


def pack_all(sources: dict[str, Source], scan: dict, spec: TokenizerSpec, workers: int,
             data_dir: Path, scratch: Path, chunk_bytes: int, checkpoint_bytes: int) -> dict:
    """Pack every language (:func:`pack_language`); ``{lang: {split: stats}}``."""
    total = sum(s["bytes"] for s in scan.values())
    with ChunkEncoder(spec, workers) as encoder, _progress(total) as bar:
        return {lang: pack_language(source, scan[lang]["docs"], encoder, data_dir, scratch,
                                    chunk_bytes, checkpoint_bytes, bar)
                for lang, source in sources.items()}


def _progress(total: int):
    from xelm.io import progress

    return progress(total=total, desc="tokenising", unit="B", unit_scale=True)


def pack_language(source: Source, count: int, encoder: ChunkEncoder, data_dir: Path,
                  scratch: Path, chunk_bytes: int, checkpoint_bytes: int, bar) -> dict:
    """Split, tokenise and append one language's documents; its stats per split."""
    lang = source.lang
    done, checkpoint = scratch / f"{lang}.done.json", scratch / f"{lang}.pack.json"
    if done.is_file():
        stats = read_json(done)
        bar.update(sum(s["bytes"] - s["docs"] for s in stats.values()))
        return stats
    state = read_json(checkpoint) if checkpoint.is_file() else None
    try:
        texts, shards = _writers(lang, data_dir, encoder.spec.dtype, state)
    except FileNotFoundError:  # killed while renaming the finished files: do it again
        state = None
        texts, shards = _writers(lang, data_dir, encoder.spec.dtype, None)
    if state:
        log.info("packing %s: resuming after %d of %d documents", lang, state["docs"], count)
        bar.update(sum(w.size for w in texts.values()) - state["docs"])
    labels = np.load(scratch / f"{lang}.labels.npy")
    records = source.records(keyed=False)
    since = 0
    with contextlib.closing(records):
        chunks = _chunks(records, labels, state["docs"] if state else 0, chunk_bytes, source)
        for end, parts in encoder.map(chunks):
            for split, part in zip(SPLITS, parts):
                if part is not None:
                    texts[split].write(part.text)
                    shards[split].append(part.tokens, part.lengths, part.sizes)
                    since += len(part.text)
                    bar.update(len(part.text) - len(part.lengths))
            if since >= checkpoint_bytes:
                _checkpoint(checkpoint, end, texts, shards)
                since = 0
    if records.docs != count:
        raise _changed(source, count, records.docs)
    for text in texts.values():
        text.finish()
    stats = {split: shards[split].finish() for split in SPLITS}
    write_json(done, stats)
    checkpoint.unlink(missing_ok=True)
    return stats


def _writers(lang: str, data_dir: Path, dtype: str, state: dict | None):
    texts = {split: AppendFile(data_dir / "text" / f"{lang}.{split}.txt",
                               state["text"][split] if state else None) for split in SPLITS}
    shards = {split: ShardWriter(shard_path(data_dir, lang, split), dtype,
                                 state["shards"][split] if state else None) for split in SPLITS}
    return texts, shards


def _chunks(records, labels: np.ndarray, start: int, chunk_bytes: int,
            source: Source) -> Iterator[tuple[int, list[str], list[int]]]:
    """``(index after the chunk's last document, documents, labels)`` from ``start``."""
    docs: list[str] = []
    size, first = 0, start
    for i, (_, doc) in enumerate(records):
        if i < start:
            continue
        if i >= len(labels):
            raise _changed(source, len(labels), i + 1)
        docs.append(doc)
        size += len(doc)
        if size >= chunk_bytes:
            yield i + 1, docs, labels[first:i + 1].tolist()
            docs, size, first = [], 0, i + 1
    if docs:
        yield first + len(docs), docs, labels[first:first + len(docs)].tolist()


def _checkpoint(path: Path, end: int, texts: dict, shards: dict) -> None:
    """Record the parts' sizes after ``end`` documents, once they are on disk."""
    for writer in (*texts.values(), *shards.values()):
        writer.sync()
    write_json(path, {"docs": end, "text": {s: texts[s].size for s in SPLITS},
                      "shards": {s: shards[s].state() for s in SPLITS}})


def _changed(source: Source, expected: int, found: int) -> CorpusError:
    return CorpusError(f"{source.where} changed while prepare ran: {expected} documents "
                       f"when counted, {found} now; run prepare again (it starts over)")
