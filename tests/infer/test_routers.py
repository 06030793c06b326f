import math

import pytest
import torch

from xelm.infer.routers import (Fixed, Posterior, TopOne, Uniform, estimate_prior,
                                tfidf_log_weights, top_k_log)


def sums_to_one(log_w, dim=0):
    return torch.allclose(torch.logsumexp(log_w.double(), dim=dim), torch.zeros(()).double(),
                          atol=1e-5)


def test_uniform_and_top_one():
    lp = torch.randn(3, 2, 4)
    assert torch.allclose(Uniform().log_weights(lp), torch.full_like(lp, -math.log(3)))
    router = TopOne(1)
    assert router.support(3, 2).tolist() == [[False, False], [True, True], [False, False]]
    w = router.log_weights(lp).exp()
    assert (w[1] == 1).all() and (w[[0, 2]] == 0).all()
    with pytest.raises(ValueError, match="out of range"):
        TopOne(3).support(3, 2)


def brute_posterior(lp, prior):
    k, batch, steps = lp.shape
    out = torch.empty(k, batch, steps, dtype=torch.float64)
    for b in range(batch):
        for t in range(steps):
            unnorm = [prior[e] * math.prod(math.exp(lp[e, b, s]) for s in range(t))
                      for e in range(k)]
            for e in range(k):
                out[e, b, t] = unnorm[e] / sum(unnorm)
    return out


def test_posterior_matches_brute_force():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(3, 2, 6, 5), -1)[..., 0]  # k=3, B=2, T=6
    prior = [0.2, 0.3, 0.5]
    w = Posterior(prior).log_weights(lp).exp().double()
    assert torch.allclose(w, brute_posterior(lp.double(), prior), atol=1e-6)
    assert torch.allclose(w[:, :, 0], torch.tensor(prior, dtype=torch.float64)[:, None])
    w_uniform = Posterior().log_weights(lp).exp().double()
    assert torch.allclose(w_uniform, brute_posterior(lp.double(), [1, 1, 1]), atol=1e-6)


def test_posterior_with_a_prior_per_sequence_matches_brute_force():
    torch.manual_seed(1)
    lp = torch.log_softmax(torch.randn(3, 2, 5, 4), -1)[..., 0]  # k=3, B=2, T=5
    priors = [[0.6, 0.3, 0.1], [0.0, 0.5, 0.5]]  # row 1 rules expert 0 out
    table = torch.tensor(priors).T.log()
    router = Posterior.per_sequence(table)
    assert router.support(3, 2).tolist() == [[True, False], [True, True], [True, True]]
    w = router.log_weights(lp).exp().double()
    for b, prior in enumerate(priors):
        expected = brute_posterior(lp[:, b:b + 1].double(), prior)[:, 0]
        assert torch.allclose(w[:, b], expected, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        router.support(3, 4)


def test_posterior_uses_only_the_prefix():
    lp = torch.randn(2, 1, 5)
    changed = lp.clone()
    changed[:, :, 3] = torch.tensor([[-50.0], [0.0]])
    a, b = Posterior().log_weights(lp), Posterior().log_weights(changed)
    assert torch.equal(a[..., :4], b[..., :4])  # weights up to target 3 ignore target 3
    assert not torch.allclose(a[..., 4], b[..., 4])


def test_posterior_stable_with_extreme_logprobs():
    lp = torch.stack([torch.full((2, 50), -1e4), torch.full((2, 50), -1.0)])
    log_w = Posterior().log_weights(lp)
    assert torch.isfinite(log_w[1]).all() and sums_to_one(log_w)
    assert torch.allclose(log_w[:, :, 0].exp(), torch.tensor(0.5))
    assert (log_w[0, :, 1:].exp() == 0).all() and (log_w[1, :, 1:] == 0).all()
    # every expert at -1e4 per token for 50 tokens: sums near -5e5, still exact
    lp = torch.full((3, 1, 50), -1e4)
    lp[2] -= 1.0
    w = Posterior().log_weights(lp).exp()
    assert sums_to_one(w.log()) and torch.allclose(w[0, 0, 1], torch.tensor(1 / (2 + math.e**-1)))


def test_posterior_all_experts_impossible_falls_back_to_prior():
    lp = torch.full((2, 1, 3), float("-inf"))
    w = Posterior([1.0, 3.0]).log_weights(lp).exp()
    assert torch.allclose(w[:, 0, 2], torch.tensor([0.25, 0.75]))


def test_posterior_mask_top_k_and_zero_prior():
    lp = torch.tensor([[[-1.0, -9.0, -1.0]], [[-2.0, -1.0, -2.0]], [[-3.0, -1.0, -3.0]]])
    masked = Posterior().log_weights(lp, mask=torch.tensor([[True, False, True]]))
    assert torch.allclose(masked[:, :, 2], Posterior().log_weights(lp)[:, :, 1])  # target 1 ignored
    top = Posterior(top_k=2).log_weights(lp)
    assert ((top > float("-inf")).sum(0) == 2).all() and sums_to_one(top)
    router = Posterior([1.0, 0.0, 1.0])
    assert router.support(3, 2).tolist() == [[True, True], [False, False], [True, True]]
    assert (router.log_weights(lp)[1] == float("-inf")).all()


def test_fixed_and_tfidf_weights():
    d = torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])  # [B=2, k=3]
    log_w = tfidf_log_weights(d, temperature=0.1)
    expected = torch.softmax(-(d ** 2) / 0.1, dim=1).T
    assert log_w.shape == (3, 2) and torch.allclose(log_w.exp(), expected)
    top1 = tfidf_log_weights(d, top_k=1).exp()
    assert top1.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    router = Fixed(tfidf_log_weights(d, top_k=2))
    assert router.support(3, 2).tolist() == [[True, False], [False, True], [True, True]]
    w = router.log_weights(torch.zeros(3, 2, 4))
    assert w.shape == (3, 2, 4) and sums_to_one(w)
    shared = Fixed.from_weights([1.0, 0.0, 3.0])
    assert torch.allclose(shared.log_weights(torch.zeros(3, 5, 2)).exp()[:, 4, 1],
                          torch.tensor([0.25, 0.0, 0.75]))
    with pytest.raises(ValueError, match="non-zero weight"):
        Fixed.from_weights([[0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="expected"):
        shared.log_weights(torch.zeros(2, 5, 2))


def test_top_k_log_and_estimate_prior():
    log_w = torch.log(torch.tensor([[0.1], [0.6], [0.3]]))
    assert torch.allclose(top_k_log(log_w, 2).exp().flatten(), torch.tensor([0.0, 2 / 3, 1 / 3]))
    lp = torch.stack([torch.full((4, 3), -1.0), torch.full((4, 3), -50.0)])
    prior = estimate_prior(lp)
    assert torch.allclose(prior.sum(), torch.tensor(1.0)) and prior[0] > 0.99
