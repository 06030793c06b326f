"""Streamed prepare (xelm.data.prepare): the files of the in-memory pipeline, byte for byte,
on every split method and worker count; resumable after SIGKILL at any point."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xelm.config import CorpusConfig
from xelm.data.prepare import SCRATCH, TokenizerPlan, prepare_corpus
from xelm.data.readers import CorpusError

SPLITS = ("train", "valid", "test")
PLAN = TokenizerPlan(vocab_size=400, sample_bytes_per_language=15_000)
WORDS = {"en": "the of cat sat mat dog run house tree river stone light".split(),
         "de": "der die das Katze Hund Haus Baum Fluss Stein Licht über".split(),
         "ru": "кот дом река камень свет дерево собака над под".split(),
         "sw": "paka mbwa nyumba mti mto jiwe mwanga juu chini".split()}


def _doc(rng: random.Random, lang: str) -> str:
    return " ".join(rng.choice(WORDS[lang]) for _ in range(rng.randint(3, 60)))


def make_corpus(root: Path, docs: int = 240, seed: int = 0) -> Path:
    """en.txt + en.keys (blank lines), de.jsonl (key field, line breaks inside texts),
    ru.parquet (id column), sw.txt without keys: every reader, keyed and not."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, keys = [], []
    for i in range(docs):
        lines.append("" if i % 17 == 5 else _doc(rng, "en"))
        keys.append(f"K{i % 50}")
    (root / "en.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "en.keys").write_text("\n".join(keys) + "\n", encoding="utf-8")
    rows = [{"text": _doc(rng, "de") + "\n " + _doc(rng, "de"), "key": f"K{(i * 7) % 60}"}
            for i in range(docs)]
    (root / "de.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                           for r in rows), encoding="utf-8")
    pq.write_table(pa.table({"text": [_doc(rng, "ru") for _ in range(docs)],
                             "id": [f"K{i % 45}" for i in range(docs)]}),
                   root / "ru.parquet", row_group_size=50)
    (root / "sw.txt").write_text("\n".join(_doc(rng, "sw") for _ in range(docs)) + "\n",
                                 encoding="utf-8")
    return root


def in_memory_prepare(cfg: CorpusConfig, out: Path, seed: int, plan: TokenizerPlan) -> None:
    """The pipeline before streaming (read everything, split lists, encode lists)."""
    from xelm.data import packing, readers, tokenizer
    from xelm.data.split import split_by_key, split_documents
    from xelm.io import atomic_write_text, write_json

    vf, tf = cfg.valid_fraction, cfg.test_fraction
    if cfg.split == "by_key":
        corpus, keys = readers.read_keyed_corpus(cfg)
        idx, held = split_by_key(corpus, keys, vf, tf, seed)
        write_json(out / "held_out_keys.json", held)
    else:
        corpus = readers.read_corpus(cfg)
        idx = {lang: split_documents(docs, vf, tf, seed, cfg.split, language=lang)
               for lang, docs in corpus.items()}
    splits = {lang: {s: [docs[i] for i in idx[lang][s]] for s in SPLITS}
              for lang, docs in corpus.items()}
    for lang, parts in splits.items():
        for split, docs in parts.items():
            atomic_write_text(out / "text" / f"{lang}.{split}.txt", "".join(d + "\n" for d in docs))
    tok = tokenizer.train_bpe({lang: p["train"] for lang, p in splits.items()}, plan.vocab_size,
                              plan.sample_bytes_per_language, out / "tokenizer")
    stats = {lang: {s: packing.write_shard(packing.shard_path(out, lang, s), tok, docs)
                    for s, docs in parts.items()} for lang, parts in splits.items()}
    write_json(out / "prepare.json", {"languages": list(corpus), "vocab_size": len(tok),
                                      "dtype": packing.token_dtype(len(tok)).name,
                                      "stats": stats})


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def assert_same_files(got: Path, want: Path) -> None:
    a, b = files(got), files(want)
    assert sorted(a) == sorted(b)
    different = [name for name in a if a[name] != b[name]]
    assert not different, different


@pytest.mark.parametrize("split, workers, cap", [("random", 1, None), ("every_nth", 2, None),
                                                 ("by_key", 2, None), ("by_key", 1, 9000)])
def test_streamed_prepare_writes_the_in_memory_pipelines_files(tmp_path, split, workers, cap):
    corpus = make_corpus(tmp_path / "corpus")
    cfg = CorpusConfig(source="dir", path=str(corpus), split=split, max_bytes_per_language=cap,
                       languages=["sw", "en", "ru", "de"])
    want, got = tmp_path / "want", tmp_path / "got"
    in_memory_prepare(cfg, want, seed=3, plan=PLAN)
    info = prepare_corpus(cfg, got, seed=3, tokenizer=PLAN, workers=workers, chunk_bytes=900)
    assert not (got / SCRATCH).exists()
    assert_same_files(got, want)
    assert info["languages"] == ["sw", "en", "ru", "de"]
    en = [info["stats"]["en"][s] for s in SPLITS]
    if cap is None:  # 240 lines, 14 of them blank
        assert sum(s["docs"] for s in en) == 226
    else:  # UTF-8 bytes of the documents kept, without their newlines
        assert cap - 400 < sum(s["bytes"] - s["docs"] for s in en) <= cap
    if split == "by_key":  # the keyed languages hold out the same keys
        held = json.loads((got / "held_out_keys.json").read_text())
        assert held["by_text"] == ["sw"] and held["test"]


def test_a_keyless_language_among_keyed_ones_and_errors(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", docs=60)
    with (corpus / "de.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "ohne Schlüssel"}) + "\n")
    cfg = CorpusConfig(source="dir", path=str(corpus), split="by_key")
    with pytest.raises(CorpusError, match=r"de.jsonl: 1 of 61 documents have no key"):
        prepare_corpus(cfg, tmp_path / "out", seed=0, tokenizer=PLAN)
    (corpus / "de.jsonl").unlink()
    (corpus / "ru.parquet").unlink()
    (corpus / "en.txt").write_text("one\ntwo\n", encoding="utf-8")
    (corpus / "en.keys").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="language en has 2 documents; the splits need"):
        prepare_corpus(cfg, tmp_path / "out", seed=0, tokenizer=PLAN)


# --------------------------------------------------------------------------- SIGKILL

PREPARE_SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from xelm.config import CorpusConfig
    from xelm.data.prepare import TokenizerPlan, prepare_corpus

    if __name__ == "__main__":
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        cfg = CorpusConfig(source="dir", path=sys.argv[1], split="by_key")
        plan = TokenizerPlan(vocab_size=400, sample_bytes_per_language=15_000)
        prepare_corpus(cfg, Path(sys.argv[2]), seed=0, tokenizer=plan, workers=int(sys.argv[3]),
                       chunk_bytes=600, checkpoint_bytes=1)
""")


def _run_until(script: Path, args: list[str], log: Path, ready) -> bool:
    """Run the prepare script; SIGKILL it once ``ready()``; False if it finished first."""
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=sink, stderr=sink,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            assert time.monotonic() < deadline, "prepare did not reach the kill point"
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    return False


def _checkpoint(out: Path, lang: str, min_docs: int = 1) -> bool:
    path = out / SCRATCH / f"{lang}.pack.json"
    try:
        return json.loads(path.read_text())["docs"] >= min_docs
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_prepare_killed_at_any_point_resumes_to_the_same_files(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", docs=400)
    script = tmp_path / "prepare.py"
    script.write_text(PREPARE_SCRIPT, encoding="utf-8")
    want = tmp_path / "want"
    cfg = CorpusConfig(source="dir", path=str(corpus), split="by_key")
    prepare_corpus(cfg, want, seed=0, tokenizer=PLAN, workers=1)
    out, log = tmp_path / "killed", tmp_path / "prepare.log"
    points = [lambda: (out / SCRATCH / "scan.json").exists(),  # before tokenizer or packing
              lambda: _checkpoint(out, "de", 1),  # in the first language
              lambda: _checkpoint(out, "en", 1),  # in the second, a worker pool running
              lambda: _checkpoint(out, "ru", 150)]
    killed = [_run_until(script, [str(corpus), str(out), "2"], log, ready) for ready in points]
    assert killed == [True] * len(points)
    assert not (out / "prepare.json").exists()
    assert list((out / "tokens").glob("*.part")), "killed between checkpoints: parts exist"
    assert not _run_until(script, [str(corpus), str(out), "1"], log, lambda: False)
    assert "resuming after" in log.read_text()
    assert_same_files(out, want)


@pytest.mark.slow
def test_a_corpus_changed_after_a_kill_is_prepared_again(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", docs=300)
    script = tmp_path / "prepare.py"
    script.write_text(PREPARE_SCRIPT, encoding="utf-8")
    out, log = tmp_path / "killed", tmp_path / "prepare.log"
    assert _run_until(script, [str(corpus), str(out), "1"], log, lambda: _checkpoint(out, "en"))
    with (corpus / "sw.txt").open("a", encoding="utf-8") as handle:
        handle.write("paka mpya kabisa\n")
    assert not _run_until(script, [str(corpus), str(out), "1"], log, lambda: False)
    assert "changed since prepare started" in log.read_text()
    want = tmp_path / "want"
    prepare_corpus(CorpusConfig(source="dir", path=str(corpus), split="by_key"), want, seed=0,
                   tokenizer=PLAN)
    assert_same_files(out, want)


@pytest.mark.parametrize("method", ["random", "every_nth"])
def test_languages_added_later_are_prepared_as_adapt_did_in_memory(tmp_path, method):
    """prepare_languages (for xelm adapt) = each language read whole, split alone, its text
    and shards written with the run's tokenizer (by_key: tests/test_adapt_by_key.py)."""
    from xelm.data import packing, readers
    from xelm.data.prepare import prepare_languages
    from xelm.data.tokenizer import load_tokenizer

    corpus = make_corpus(tmp_path / "corpus", docs=150)
    run = tmp_path / "run"
    prepare_corpus(CorpusConfig(source="dir", path=str(corpus), languages=["en", "de"]), run,
                   seed=1, tokenizer=PLAN)
    before = files(run)
    new = CorpusConfig(source="dir", path=str(corpus), languages=["ru", "sw"], split=method,
                       max_bytes_per_language=20_000)
    stats = prepare_languages(new, run, seed=1, tokenizer_dir=run / "tokenizer",
                              trained_here=True, workers=2)
    want = tmp_path / "want"
    tok = load_tokenizer(run / "tokenizer")
    for lang, docs in readers.read_corpus(new).items():
        idx = readers.split_documents(docs, 0.05, 0.05, 1, method, language=lang)
        for split in SPLITS:
            part = [docs[i] for i in idx[split]]
            (want / "text").mkdir(parents=True, exist_ok=True)
            (want / "text" / f"{lang}.{split}.txt").write_text("".join(d + "\n" for d in part),
                                                              encoding="utf-8")
            assert stats[lang][split] == packing.write_shard(
                packing.shard_path(want, lang, split), tok, part)
    after = files(run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else touched
    added = {k: v for k, v in after.items() if k not in before}
    assert added == files(want)
