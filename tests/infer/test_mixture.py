import math

import pytest
import torch

from xelm.experts.manifest import ExpertSet
from xelm.infer.mixture import (expert_token_logprobs, mixture_logprobs, product_of_experts,
                                score_targets, score_with_router, target_logprobs)
from xelm.infer.routers import Fixed, Posterior, tfidf_log_weights
from xelm_tiny import tiny_model

torch.manual_seed(0)
IDS = torch.randint(1, 64, (3, 9))


@pytest.fixture(scope="module")
def models():
    return [tiny_model(seed) for seed in range(3)]


class CountCalls:
    """Counts forward calls and the rows each call scored."""

    def __init__(self, models):
        self.rows = {i: [] for i in range(len(models))}
        for i, m in enumerate(models):
            m.register_forward_hook(lambda mod, args, kw, out, i=i:
                                    self.rows[i].append(kw["input_ids"].shape[0]),
                                    with_kwargs=True)


def each_expert(models, ids=IDS):
    return torch.stack([target_logprobs(m, ids) for m in models])


def test_expert_logprobs_are_normalised_and_agree(models):
    full = expert_token_logprobs(models[0], IDS)
    assert full.shape == (3, 8, 64)
    assert torch.allclose(torch.logsumexp(full, -1), torch.zeros(3, 8), atol=1e-5)
    picked, full2 = target_logprobs(models[0], IDS, return_full=True)
    assert torch.allclose(full, full2)
    assert torch.allclose(picked, full.gather(-1, IDS[:, 1:, None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(target_logprobs(models[0], IDS), picked, atol=1e-5)


def test_mixture_and_product_sum_to_one_over_vocab(models):
    full = torch.stack([expert_token_logprobs(m, IDS) for m in models])
    log_w = torch.log_softmax(torch.randn(3, 3, 8), 0)
    for combined in (mixture_logprobs(full, log_w), product_of_experts(full, log_w)):
        assert combined.shape == (3, 8, 64)
        assert torch.allclose(torch.logsumexp(combined, -1), torch.zeros(3, 8), atol=1e-5)
    expected = torch.log((full.exp() * log_w.exp()[..., None]).sum(0))
    assert torch.allclose(mixture_logprobs(full, log_w), expected, atol=1e-5)


def test_mixture_stable_with_extreme_logprobs():
    full = torch.full((2, 1, 1, 4), -1e4)  # exp underflows to 0 in any float type
    full[1] -= 1e4
    log_w = torch.log(torch.tensor([0.25, 0.75]))[:, None, None]
    mixed = mixture_logprobs(full, log_w)
    assert torch.allclose(mixed, torch.tensor(-1e4 + math.log(0.25)))
    zero_w = torch.tensor([0.0, float("-inf")])[:, None, None]
    full[1] = float("-inf")
    assert torch.equal(product_of_experts(full, zero_w), torch.full((1, 1, 4), -math.log(4)))


def test_ensemble_of_one_expert_equals_that_expert(models):
    own = target_logprobs(models[1], IDS)
    for method in ("top1", "ensemble", "ensemble_posterior", "product_of_experts"):
        got = score_targets([models[1]], IDS, method)
        assert torch.allclose(got, own, atol=1e-5), method


def test_top1_runs_only_its_expert(models, run_dir):
    es = ExpertSet.load(run_dir)
    calls = CountCalls([es.models["e0"], es.models["e1"]])
    got = score_targets(es, IDS, "top1", lang="qb1")
    assert calls.rows == {0: [], 1: [3]}
    assert torch.equal(got, target_logprobs(es.models["e1"], IDS))
    with pytest.raises(ValueError, match="needs lang="):
        score_targets(es, IDS, "top1")
    with pytest.raises(KeyError, match="known languages"):
        score_targets(es, IDS, "top1", lang="xx")


def test_uniform_ensemble_matches_brute_force(models):
    lp = each_expert(models)
    expected = torch.log(lp.exp().mean(0))
    assert torch.allclose(score_targets(models, IDS, "ensemble"), expected, atol=1e-5)


def test_prior_weighted_ensemble_skips_zero_weight_experts(models):
    calls = CountCalls(models)
    got = score_targets({"a": models[0], "b": models[1], "c": models[2]}, IDS, "ensemble",
                        prior={"a": 1.0, "c": 3.0})
    assert calls.rows[1] == []
    lp = each_expert(models)
    assert torch.allclose(got, torch.log(0.25 * lp[0].exp() + 0.75 * lp[2].exp()), atol=1e-5)
    with pytest.raises(ValueError, match="unknown experts"):
        score_targets({"a": models[0]}, IDS, "ensemble", prior={"z": 1.0})


def test_posterior_ensemble_matches_brute_force(models):
    lp = each_expert(models).double()
    prior = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    expected = torch.empty(3, 8, dtype=torch.float64)
    for b in range(3):
        for t in range(8):
            post = prior * lp[:, b, :t].sum(-1).exp()
            post = post / post.sum()
            expected[b, t] = torch.log((post * lp[:, b, t].exp()).sum())
    got = score_targets(models, IDS, "ensemble_posterior", prior=prior.tolist())
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_product_of_experts_matches_brute_force(models):
    full = torch.stack([expert_token_logprobs(m, IDS) for m in models])
    expected = torch.log_softmax(full.mean(0), -1).gather(-1, IDS[:, 1:, None]).squeeze(-1)
    assert torch.allclose(score_targets(models, IDS, "product_of_experts"), expected, atol=1e-5)
    # a router that reads the experts' scores takes the non-streaming path: same maths
    post = score_with_router(models, IDS, Posterior(), combine="product")
    lp = each_expert(models)
    w = Posterior().log_weights(lp).exp()[..., None]
    brute = torch.log_softmax((w * full).sum(0), -1).gather(-1, IDS[:, 1:, None]).squeeze(-1)
    assert torch.allclose(post, brute, atol=1e-5)


@pytest.mark.parametrize("combine", ["mixture", "product"])
def test_per_sequence_routing_runs_experts_on_their_rows_only(models, combine):
    distances = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # [B, k]
    calls = CountCalls(models)
    got = score_with_router(models, IDS, Fixed(tfidf_log_weights(distances, top_k=1)),
                            combine=combine)
    assert calls.rows == {0: [2], 1: [1], 2: []}
    own = each_expert(models)
    assert torch.allclose(got, torch.stack([own[0, 0], own[1, 1], own[0, 2]]), atol=1e-5)


def test_padding_scores_zero_and_leaves_real_tokens_alone(models):
    mask = torch.ones_like(IDS)
    mask[1, 6:] = 0  # right padding on sequence 1
    for method in ("ensemble", "ensemble_posterior", "product_of_experts"):
        got = score_targets(models, IDS, method, attention_mask=mask)
        alone = score_targets(models, IDS[1:2, :6], method)
        assert (got[1, 5:] == 0).all(), method
        assert torch.allclose(got[1, :5], alone[0], atol=1e-5), method


def test_unknown_method_and_short_input(models):
    with pytest.raises(ValueError, match="choose from"):
        score_targets(models, IDS, "mean")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        score_targets(models, IDS[:, :1], "ensemble")


def test_top_k_on_prior_renormalises_and_skips_the_rest(models):
    calls = CountCalls(models)
    got = score_targets(models, IDS, "ensemble", prior=[0.5, 0.2, 0.3], top_k=2)
    assert calls.rows[1] == []
    lp = each_expert(models)
    assert torch.allclose(got, torch.log(0.625 * lp[0].exp() + 0.375 * lp[2].exp()), atol=1e-5)
    with pytest.raises(ValueError, match="arbitrarily"):
        score_targets(models, IDS, "ensemble", top_k=2)
