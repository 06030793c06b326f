"""What ``xelm generate`` and ``xelm merge`` do, so that cli.py only wires arguments."""

from __future__ import annotations

from pathlib import Path

from xelm.methods import GENERATE_METHODS


def generate_text(run: str, prompt: str, method: str = "ensemble_posterior",
                  lang: str | None = None, max_new_tokens: int = 64, sample: bool = False,
                  temperature: float = 1.0, seed: int = 0, top_p: float = 1.0) -> str:
    """Continue ``prompt`` with the run's expert set; returns prompt + continuation.

    Greedy, or with ``sample`` drawn from the whole ensemble distribution at
    ``temperature``, limited to the nucleus of probability ``top_p`` (1.0: no limit);
    the same ``seed`` gives the same text."""
    import torch

    from xelm.experts.manifest import ExpertSet
    from xelm.infer.generation import generate

    if method not in GENERATE_METHODS:
        raise ValueError(f"--method {method!r}: choose from {', '.join(GENERATE_METHODS)}")
    if method == "top1" and not lang:
        raise ValueError("--method top1 needs --lang (the expert of that language); or use "
                         "--method ensemble_posterior, which needs no language label")
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {top_p}")
    if not sample and (temperature != 1.0 or top_p != 1.0):
        raise ValueError("--temperature and --top-p apply to sampling: add --sample")
    # top_k=0: HF's own default keeps only the 50 likeliest tokens when sampling
    options = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
               if sample else {"do_sample": False})
    experts = ExpertSet.load(run)
    ids = experts.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        ids = torch.tensor([[experts.tokenizer.eos_token_id]])
    out = generate(experts, ids, method, lang=lang, text=prompt, max_new_tokens=max_new_tokens, seed=seed,
                   eos_token_id=experts.tokenizer.eos_token_id, **options)
    return experts.tokenizer.decode(out[0], skip_special_tokens=True)


def merge_run(run: str, out: str, weights: str | None = None, force: bool = False) -> Path:
    """Average the run's experts into one HF model folder (``--weights``: ``prior``, or
    ``name=w,name=w``; default uniform). ``out`` must be new, empty or an earlier merge's
    (``force``: any folder but a run's own)."""
    from xelm.experts.manifest import ExpertSet
    from xelm.infer.average import merge_to_folder
    from xelm.outputs import claim_out_dir

    parsed: str | dict | None = weights
    if weights and weights != "prior":
        try:
            parsed = {k.strip(): float(v) for k, v in (p.split("=") for p in weights.split(","))}
        except ValueError:
            raise ValueError(f"--weights {weights!r}: give 'prior' or name=weight pairs, "
                             "e.g. e0=0.5,e1=0.5") from None
    experts = ExpertSet.load(run)  # a missing or broken run is refused before --out is made
    return merge_to_folder(experts, claim_out_dir(out, "merge", force=force), weights=parsed)
