"""Language identification: sorting unlabelled documents, and the top1_langid method."""

from __future__ import annotations

import json

import pytest

from xelm_testing import cli_fails, tiny_args
from xelm.cli import main
from xelm.data.langid import LanguageDetector
from xelm.data.sources import read_unlabelled
from xelm.data.readers import CorpusError

SENTENCES = {
    "en": "The committee will publish its annual report on the state of the rivers next week.",
    "de": "Der Ausschuss wird seinen Jahresbericht über den Zustand der Flüsse nächste Woche veröffentlichen.",
    "ru": "Комитет опубликует свой ежегодный доклад о состоянии рек на следующей неделе.",
    "ja": "委員会は来週、河川の状態に関する年次報告書を発表する予定です。",
}
ITALIAN = "Il comitato pubblicherà la sua relazione annuale sullo stato dei fiumi la prossima settimana."


def test_detector_picks_each_language_and_refuses_unknown_ones():
    det = LanguageDetector(["en", "de", "ru", "ja"])
    assert det.detect(list(SENTENCES.values())) == list(SENTENCES)
    open_set = LanguageDetector(["en", "de"], closed=False)
    assert open_set.classify([SENTENCES["de"], ITALIAN, "12345 67890"]) == \
        ["de", "other", "undetected"]
    assert open_set.detect([ITALIAN, SENTENCES["en"]]) == [None, "en"]
    with pytest.raises(CorpusError) as err:
        LanguageDetector(["en", "qaa"])
    assert "qaa" in str(err.value) and "top1_tfidf" in str(err.value)


def test_unlabelled_documents_are_sorted_and_strays_counted(tmp_path):
    docs = [f"{SENTENCES[lang]} ({i})" for i in range(5) for lang in ("en", "de", "ru")]
    mixed = tmp_path / "mixed.jsonl"
    rows = [*docs, ITALIAN, "12345 67890"]
    mixed.write_text("\n".join(json.dumps({"text": t}) for t in rows), encoding="utf-8")
    corpus, counts = read_unlabelled(mixed, ["en", "de", "ru"])
    assert {lang: len(d) for lang, d in corpus.items()} == {"en": 5, "de": 5, "ru": 5}
    assert all(d.startswith(SENTENCES[lang]) for lang, ds in corpus.items() for d in ds)
    assert counts["other"] == 1 and counts["undetected"] == 1
    # a byte cap per language keeps whole documents, and no more
    one = len(docs[0].encode("utf-8"))
    capped, _ = read_unlabelled(mixed, ["en", "de", "ru"], max_bytes=2 * one + 1)
    assert len(capped["en"]) == 2
    with pytest.raises(CorpusError, match="identified as ja"):
        read_unlabelled(mixed, ["en", "ja"])


def test_unlabelled_source_prepares_per_language_data(tmp_path, corpus_dir, capsys):
    lines = [line for lang in ("en", "de", "fr")
             for line in (corpus_dir / f"{lang}.txt").read_text(encoding="utf-8").splitlines()]
    source = tmp_path / "crawl"
    source.mkdir()
    (source / "part-0.txt").write_text("\n".join(lines[::2]), encoding="utf-8")
    (source / "part-1.txt").write_text("\n".join(lines[1::2]), encoding="utf-8")
    out = tmp_path / "run"
    args = tiny_args(out, "corpus.source=unlabelled", f"corpus.path={source}",
                     "corpus.languages=[en, de, fr]")
    assert main(["prepare", *args]) == 0
    info = json.loads((out / "data" / "prepare.json").read_text())
    assert info["languages"] == ["en", "de", "fr"]
    for lang in info["languages"]:
        assert sum(info["stats"][lang][s]["docs"] for s in ("train", "valid", "test")) == 60
    cli_fails(capsys, ["prepare", *tiny_args(tmp_path / "r2", "corpus.source=unlabelled",
                                              f"corpus.path={source}")],
              "corpus.languages")


def test_top1_langid_refused_on_the_synthetic_corpus(tmp_path, capsys):
    cli_fails(capsys, ["prepare", *tiny_args(tmp_path / "run", "eval.methods=[top1_langid]")],
              "top1_langid", "synthetic")


@pytest.mark.slow
def test_top1_langid_routes_each_block_to_its_language_expert(tmp_path, corpus_dir):
    from xelm.evaluate.scoring import langid_weigher
    from xelm.experts.manifest import ExpertSet

    out = tmp_path / "run"
    args = tiny_args(out, "corpus.source=dir", f"corpus.path={corpus_dir}",
                     "allocate.method=languages", "allocate.experts=3",
                     "eval.methods=[top1, top1_langid]")
    assert main(["run", *args]) == 0
    results = json.loads((out / "results.json").read_text())
    es = ExpertSet.load(out)
    for lang in results["languages"]:
        text = (out / "data" / "text" / f"{lang}.test.txt").read_text(encoding="utf-8")
        log_w = langid_weigher(text.splitlines(), es)
        assert (log_w.argmax(0) == es.index(es.expert_for_language(lang))).all()
        assert (log_w.max(0).values == 0).all()  # all weight on one expert
        assert results["perplexity"]["xelm_top1_langid"][lang] > 1
    # the Python API: the detected language's expert scores exactly as top1 with the label
    import torch

    from xelm.infer.mixture import score_targets

    text = (out / "data" / "text" / "de.test.txt").read_text(encoding="utf-8").splitlines()[0]
    ids = es.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(score_targets(es, ids, "top1_langid", text=text),
                           score_targets(es, ids, "top1", lang="de"))
    # and generation: the detected language's expert continues the prompt
    from xelm.infer.generation import generate

    assert torch.equal(generate(es, ids, "top1_langid", text=text, max_new_tokens=6),
                       generate(es, ids, "top1", lang="de", max_new_tokens=6))
    # and lm-eval: each request goes to the expert of its context's detected language
    from types import SimpleNamespace

    from xelm.evaluate.lm_eval_model import XelmLM

    lines = {lang: (out / "data" / "text" / f"{lang}.test.txt").read_text(
        encoding="utf-8").splitlines()[0] for lang in ("de", "en", "fr")}
    enc = es.tokenizer.encode
    reqs = [(None, enc(text[:-20]), enc(text[-20:])) for text in lines.values()]
    reqs.append((None, [es.tokenizer.eos_token_id], enc(lines["de"][:20])))  # nothing to detect
    langid = XelmLM(expert_set=es, method="top1_langid", batch_size=2)
    got = langid._loglikelihood_tokens(reqs, disable_tqdm=True)
    for req, lang, result in zip(reqs, lines, got):
        assert result == XelmLM(expert_set=es, method="top1", lang=lang)._loglikelihood_tokens(
            [req], disable_tqdm=True)[0]
    posterior = XelmLM(expert_set=es, method="ensemble_posterior")
    assert got[-1] == posterior._loglikelihood_tokens(reqs[-1:], disable_tqdm=True)[0]
    prompt = SimpleNamespace(args=(lines["de"][:-20], {"max_gen_toks": 5, "until": []}))
    assert langid.generate_until([prompt], disable_tqdm=True) == XelmLM(
        expert_set=es, method="top1", lang="de").generate_until([prompt], disable_tqdm=True)
