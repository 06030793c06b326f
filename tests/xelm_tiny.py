"""Test helpers shared by tests/experts and tests/infer: tiny random Llama experts, a
word-level tokenizer and run directories with an xelm.json, all built in-process.

Imported by the conftest files as ``xelm_tiny`` (a unique name, so it never clashes with
other test helpers whatever order pytest collects directories in).
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 64


def tiny_tokenizer(vocab: int = VOCAB):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, **{f"w{i}": i for i in range(1, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def tiny_model(seed: int, vocab: int = VOCAB, init: float = 0.3):
    """A random 1-layer Llama; `init` (std of the weights) large enough that experts differ."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         initializer_range=init)
    return LlamaForCausalLM(config).eval()


def make_run(run_dir: Path, n_experts: int = 2, vocab: int = VOCAB, **manifest_kwargs) -> Path:
    """A run dir with ``n_experts`` random experts (languages qa<i>, qb<i>) and xelm.json."""
    from xelm.experts.manifest import write_manifest

    tiny_tokenizer(vocab).save_pretrained(run_dir / "data" / "tokenizer")
    specs = []
    for i in range(n_experts):
        tiny_model(seed=i, vocab=vocab).save_pretrained(run_dir / "experts" / f"e{i}")
        specs.append({"name": f"e{i}", "path": f"experts/e{i}", "languages": [f"qa{i}", f"qb{i}"],
                      "parent": "seed", "round": 1, "tokens": 1000 * (i + 1), "flops": 1.5e9})
    return write_manifest(run_dir, specs, "data/tokenizer", **manifest_kwargs)
