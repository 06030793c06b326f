"""Branching from a Hugging Face base model given as a local folder (the hub path, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xelm_testing import tiny_args
from xelm.cli import main
from xelm.data.synthetic import generate_documents, make_languages
from xelm.data.tokenizer import train_bpe

pytestmark = pytest.mark.slow


@pytest.fixture
def base_model(tmp_path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "base"
    langs = make_languages(3, seed=0)
    corpus = {lang.code: generate_documents(lang, 20_000, seed=0) for lang in langs}
    tok = train_bpe(corpus, 300, 100_000, folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_run_branches_from_a_local_base_model(tmp_path, base_model):
    out = tmp_path / "run"
    assert main(["run", *tiny_args(out, f"model.base={base_model}")]) == 0
    seed = load_file(str(out / "seed" / "model.safetensors"))
    base = load_file(str(base_model / "model.safetensors"))
    assert all(torch.equal(seed[k], base[k]) for k in base)  # imported, not retrained
    assert json.loads((out / "data" / "tokenizer" / "tokenizer.json").read_text()) == \
        json.loads((base_model / "tokenizer.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["seed_tokens"] == 0
    assert all(results["perplexity"]["dense"][l] < results["perplexity"]["seed"][l]
               for l in results["languages"])


def test_base_model_without_safetensors_is_refused(tmp_path, base_model, capsys):
    (base_model / "model.safetensors").unlink()
    args = tiny_args(tmp_path / "run", f"model.base={base_model}")
    assert main(["prepare", *args]) == 0
    assert main(["seed", *args]) == 2
    assert "safetensors" in capsys.readouterr().err.lower()
    assert not (tmp_path / "run" / "seed" / "train_state.json").exists()
