import pytest
import torch

from xelm.experts.manifest import ExpertSet
from xelm.infer.generation import generate, generate_top1
from xelm.infer.mixture import expert_token_logprobs, mixture_logprobs, product_of_experts
from xelm.infer.routers import Posterior
from xelm_tiny import tiny_model

PROMPT = torch.tensor([[5, 9, 2, 7], [1, 3, 3, 8]])


@pytest.fixture(scope="module")
def models():
    return [tiny_model(seed) for seed in range(3)]


def test_one_expert_matches_hf_generate(models):
    ours = generate([models[0]], PROMPT, "ensemble", max_new_tokens=6)
    hf = models[0].generate(input_ids=PROMPT, max_new_tokens=6, do_sample=False,
                            attention_mask=torch.ones_like(PROMPT), pad_token_id=0)
    assert torch.equal(ours, hf)


@pytest.mark.parametrize("method", ["ensemble", "ensemble_posterior", "product_of_experts"])
def test_greedy_tokens_are_argmax_of_recomputed_mixture(models, method):
    out = generate(models, PROMPT, method, max_new_tokens=5)
    assert out.shape == (2, 9) and torch.equal(out[:, :4], PROMPT)
    full = torch.stack([expert_token_logprobs(m, torch.cat([out, out[:, :1]], 1)) for m in models])
    targets = torch.cat([out[:, 1:], out[:, :1]], 1)
    lp = full.gather(-1, targets.expand(3, -1, -1)[..., None]).squeeze(-1)
    log_w = (Posterior().log_weights(lp) if method == "ensemble_posterior"
             else torch.full_like(lp, -torch.log(torch.tensor(3.0))))
    combine = product_of_experts if method == "product_of_experts" else mixture_logprobs
    best = combine(full, log_w).argmax(-1)  # [B, L]: best next token after each position
    assert torch.equal(best[:, 3:8], out[:, 4:9])


def test_eos_sampling_and_top1(models, run_dir):
    out = generate(models, PROMPT, "ensemble", max_new_tokens=8, do_sample=True,
                   generator=torch.Generator().manual_seed(0), eos_token_id=3)
    for row in out[:, 4:]:
        hits = (row == 3).nonzero()
        if len(hits):
            assert (row[hits[0]:] == 3).all()
    es = ExpertSet.load(run_dir)
    got = generate(es, PROMPT, "top1", lang="qa1", max_new_tokens=4)
    assert torch.equal(got, generate_top1(es, PROMPT, "qa1", max_new_tokens=4, do_sample=False,
                                          attention_mask=torch.ones_like(PROMPT),
                                          pad_token_id=0))
