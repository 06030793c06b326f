"""A finished-looking run built in-process in about a second, for the export tests.

Four languages with disjoint vocabularies (qa0..qa3), three experts (e0: qa0 qa1, e1: qa2,
e2: qa3) that differ from the seed **only in their MLPs** (trained for a moment on their
own languages, everything else frozen) -- so the MoE with the experts'
average (or the seed's) shared parts computes exactly expert e when routed to e alone --
plus seed/, dense/, data/ (token shards, text, prepare.json), config.yaml, xelm.json and
a results.json. Session-scoped: tests that change it work on a copy (``run_copy``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

VOCAB, HIDDEN, LAYERS, CONTEXT = 96, 16, 2, 16
LANGS = ["qa0", "qa1", "qa2", "qa3"]
EXPERTS = {"e0": ["qa0", "qa1"], "e1": ["qa2"], "e2": ["qa3"]}


def _seed_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                         num_attention_heads=2, intermediate_size=32, initializer_range=0.3,
                         max_position_embeddings=CONTEXT, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=None)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # as in a trained model, each language's tokens share a direction
        emb = model.get_input_embeddings().weight
        for i in range(len(LANGS)):
            lo = 4 + 22 * i
            emb[lo:lo + 20] = torch.randn(HIDDEN) + 0.3 * torch.randn(20, HIDDEN)
    return model


def _expert_from(seed, index: int, docs: list[np.ndarray]):
    """The seed with its MLPs (only) trained briefly on ``docs``: the experts differ from
    the seed and each other in their MLPs alone, and each is better at its languages."""
    import copy

    model = copy.deepcopy(seed).train()
    mlp = [p for name, p in model.named_parameters() if ".mlp." in name]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in mlp:
        p.requires_grad_(True)
    opt = torch.optim.Adam(mlp, lr=2e-2)
    stream = np.concatenate(docs).astype(np.int64)
    rng = np.random.default_rng(index)
    for _ in range(40):
        starts = rng.integers(0, len(stream) - CONTEXT - 1, size=8)
        batch = torch.from_numpy(np.stack([stream[s:s + CONTEXT + 1] for s in starts]))
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _language_tokens(lang_index: int, n: int, seed: int) -> list[np.ndarray]:
    """Documents of one language: a noisy walk over its own 20 token ids, EOS-ended."""
    rng = np.random.default_rng(seed)
    lo = 4 + 22 * lang_index
    docs = []
    for _ in range(n):
        walk = (np.cumsum(rng.integers(1, 4, size=40)) % 20) + lo
        docs.append(np.concatenate([walk, [0]]).astype(np.uint16))
    return docs


def build_export_run(root: Path) -> Path:
    from xelm.config import from_dict
    from xelm.data.packing import shard_path, write_tokens
    from xelm.experts.manifest import write_manifest
    from xelm.io import write_json
    from xelm_tiny import tiny_tokenizer

    cfg = from_dict({"out_dir": str(root), "random_seed": 3,
                     "corpus": {"source": "synthetic", "synthetic": {"languages": 4}},
                     "model": {"hidden_size": HIDDEN, "layers": LAYERS, "heads": 2,
                               "intermediate_size": 32, "context": CONTEXT},
                     "train": {"batch_size": 4, "tokens": 4096, "lr": 1e-2},
                     "eval": {"batch_size": 8}})
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    tokenizer = tiny_tokenizer(VOCAB)
    tokenizer.pad_token = tokenizer.eos_token = "<unk>"
    tokenizer.save_pretrained(root / "data" / "tokenizer")
    stats, train = {}, {}
    for i, lang in enumerate(LANGS):
        stats[lang] = {}
        for j, (split, n) in enumerate((("train", 60), ("valid", 12), ("test", 12))):
            docs = _language_tokens(i, n, seed=10 * i + j)
            if split == "train":
                train[lang] = docs
            stats[lang][split] = write_tokens(shard_path(root / "data", lang, split), docs,
                                              [len(d) * 3 for d in docs], "uint16")
            text = root / "data" / "text" / f"{lang}.{split}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("".join(" ".join(f"w{t}" for t in d[:-1]) + "\n" for d in docs[:4]),
                            encoding="utf-8")
    write_json(root / "data" / "prepare.json", {"languages": LANGS, "vocab_size": VOCAB,
                                                "dtype": "uint16", "stats": stats})
    seed = _seed_model()
    experts = [(f"experts/{name}", _expert_from(seed, i, [d for lang in langs for d in train[lang]]))
               for i, (name, langs) in enumerate(EXPERTS.items())]
    for folder, model in [("seed", seed), ("dense", seed)] + experts:
        model.save_pretrained(root / folder)
        tokenizer.save_pretrained(root / folder)  # as xelm's training saves it
        write_json(root / folder / "train_state.json", {"done": True, "tokens": 3000})
    specs = [{"name": n, "path": f"experts/{n}", "languages": langs, "parent": "seed",
              "tokens": 1000} for n, langs in EXPERTS.items()]
    write_manifest(root, specs, "data/tokenizer")
    ppl = {lang: 10.0 + i for i, lang in enumerate(LANGS)}
    write_json(root / "results.json", {"languages": LANGS, "perplexity": {
        "seed": ppl, "dense": {k: v - 1 for k, v in ppl.items()},
        "xelm_top1": {k: v - 2 for k, v in ppl.items()}},
        "budget": {"dense_tokens": 3000, "seed_tokens": 3000,
                   "expert_tokens": {n: 1000 for n in EXPERTS}}})
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The shared tiny run (do not write into it)."""
    return build_export_run(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, for tests that write cards or exports into it."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))
