"""Property-based tests (hypothesis): the config parser and the mixture arithmetic.

Config: any ``--set`` text either loads or raises :class:`ConfigError` (never another
exception), valid values round-trip, and a resolved config read back from its YAML is
the same config (so a run directory never refuses its own config). Mixtures: weights are
normalised and the mixture is a distribution for any log-probs, from 0 down to -1e30
and -inf, with no NaN anywhere.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xelm import config
from xelm.infer.mixture import mixture_logprobs, product_of_experts
from xelm.infer.routers import (
    Fixed,
    Posterior,
    estimate_prior,
    normalise_log,
    tfidf_log_weights,
    top_k_log,
)
from xelm.rundir import config_differences

# database=None: no .hypothesis/ folder in the working tree; failures print their example.
SETTINGS = settings(max_examples=50, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- config
KNOWN_KEYS = ["out_dir", "random_seed", "corpus.source", "corpus.path", "corpus.languages",
              "corpus.valid_fraction", "corpus.synthetic.languages", "tokenizer.vocab_size",
              "model.base", "model.hidden_size", "model.heads", "model.trust_remote_code",
              "seed.tokens", "seed.lr", "train.tokens", "train.betas", "train.alpha",
              "train.resources_per_expert", "allocate.method", "allocate.experts",
              "allocate.groups", "allocate.ngram_range", "eval.methods", "eval.top_k",
              "eval.temperature"]
segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=0, max_size=12)
key = st.one_of(st.sampled_from(KNOWN_KEYS),
                st.builds(lambda k, s: f"{k}{s}", st.sampled_from(KNOWN_KEYS), segment), segment)
raw_value = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "null", "~", "[]", "{}", "[1, 2", "{a: [", ".inf", "-.inf", ".nan",
                     "1e400", "-1", "0", "true", "2020-01-01", "!!python/object:os.system",
                     "&a [*a]", "&a {x: *a}", "[en, de]", "{en: [en]}", "'quoted'", "- a",
                     "\x00", "\ud7ff", "[[1, 2], [3]]", "99999999999999999999999999"]),
    st.integers().map(str), st.floats(allow_nan=True).map(repr))


@SETTINGS
@given(st.lists(st.tuples(key, st.sampled_from(["=", " = ", "==", ""]), raw_value), max_size=4))
def test_any_override_loads_or_raises_config_error(items):
    overrides = [f"{k}{sep}{v}" for k, sep, v in items]
    try:
        cfg = config.load(None, overrides)
    except config.ConfigError as exc:
        assert str(exc).strip()
        return
    assert isinstance(cfg, config.Config)


@SETTINGS
@given(st.text(max_size=200))
def test_any_yaml_file_loads_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config.load(path)
    except config.ConfigError:
        pass


VALID = {
    "random_seed": st.integers(-2**31, 2**31),
    "seed.tokens": st.integers(1, 10**12),
    "train.tokens": st.integers(1, 10**12),
    "train.lr": st.floats(1e-8, 10, allow_nan=False),
    "train.alpha": st.floats(1e-6, 1.0),
    "train.betas": st.tuples(st.floats(0, 1), st.floats(0, 1)),
    "allocate.experts": st.integers(1, 1000),
    "allocate.method": st.sampled_from(["languages", "typology", "tfidf"]),
    "corpus.languages": st.lists(st.sampled_from(["en", "de", "fr", "qaa", "ceb"]), max_size=4),
    "corpus.valid_fraction": st.floats(1e-4, 0.49),
    # (top1_langid is refused with the default synthetic corpus: tested in test_config)
    "eval.methods": st.lists(st.sampled_from([m for m in config.EVAL_METHODS
                                              if m != "top1_langid"]), min_size=1, max_size=3),
    "eval.temperature": st.floats(1e-4, 100),
    # (an override's value is stripped of surrounding whitespace, Unicode's included)
    "out_dir": st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                       max_size=20).filter(lambda s: s == s.strip()),
}


def _as_yaml(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), min_size=1).flatmap(
    lambda keys: st.fixed_dictionaries({k: VALID[k] for k in keys})))
def test_valid_overrides_round_trip(values):
    overrides = [f"{k}={_as_yaml(list(v) if isinstance(v, tuple) else v)}"
                 for k, v in values.items()]
    cfg = config.load(None, overrides)
    for k, v in values.items():
        got = _get(cfg, k)
        if isinstance(v, float):
            assert got == pytest.approx(v, rel=1e-12, abs=0)
        elif isinstance(v, tuple):
            assert tuple(got) == pytest.approx(v)
        else:
            assert got == v, k
    # the resolved config, read back as a run directory reads it, is the same config
    saved = yaml.safe_load(cfg.to_yaml())
    assert config.from_dict(saved) == cfg
    assert config_differences(saved, cfg.model_dump(mode="json")) == []


# --------------------------------------------------------------------------- mixtures
EXTREME = st.sampled_from([0.0, -1e-8, -1.0, -30.0, -1e4, -1e10, -1e30, float("-inf")])
dims = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 5))  # k, B, T


def _sums_to_one(log_w, dim):
    total = log_w.double().exp().sum(dim)
    return torch.allclose(total, torch.ones_like(total), atol=1e-5)


def _no_nan(*tensors):
    return all(not torch.isnan(t).any() for t in tensors)


@st.composite
def expert_logprobs(draw):
    k, b, t = draw(dims)
    values = draw(st.lists(st.one_of(EXTREME, st.floats(-1e6, 0)), min_size=k * b * t,
                           max_size=k * b * t))
    return torch.tensor(values, dtype=torch.float32).reshape(k, b, t)


@SETTINGS
@given(expert_logprobs(), st.data())
def test_posterior_weights_are_normalised_and_finite(logprobs, data):
    k, b, t = logprobs.shape
    prior = data.draw(st.one_of(st.none(), st.lists(st.floats(0, 10), min_size=k, max_size=k)
                                .filter(lambda w: sum(w) > 0)))
    top_k = data.draw(st.one_of(st.none(), st.integers(1, k)))
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))
                        ).reshape(b, t)
    log_w = Posterior(prior, top_k).log_weights(logprobs, mask=mask)
    assert log_w.shape == (k, b, t)
    assert _no_nan(log_w) and not (log_w == float("inf")).any()
    assert _sums_to_one(log_w, 0)
    if top_k is not None:
        assert ((log_w > float("-inf")).sum(0) <= top_k).all()
    if prior is not None:  # no weight where the prior is 0
        zero = torch.tensor([w == 0 for w in prior])
        assert (log_w[zero] == float("-inf")).all()


@SETTINGS
@given(expert_logprobs(), st.data())
def test_posterior_weight_at_t_ignores_targets_from_t_on(logprobs, data):
    """Causality: changing targets >= t never changes the weights used to predict t."""
    k, b, t = logprobs.shape
    cut = data.draw(st.integers(0, t - 1))
    changed = logprobs.clone()
    changed[..., cut:] = torch.tensor(data.draw(st.lists(EXTREME, min_size=k * b * (t - cut),
                                                         max_size=k * b * (t - cut)))
                                      ).reshape(k, b, t - cut)
    a, b_ = Posterior().log_weights(logprobs), Posterior().log_weights(changed)
    assert torch.equal(a[..., : cut + 1], b_[..., : cut + 1])


@st.composite
def full_logprobs(draw):
    """[k, B, T, V] normalised log-probs whose logits span up to ``scale`` (1e30)."""
    k, b, t = draw(dims)
    v = draw(st.integers(2, 6))
    scale = draw(st.sampled_from([1.0, 100.0, 1e4, 1e30]))
    seed = draw(st.integers(0, 2**16))
    logits = torch.randn(k, b, t, v, generator=torch.Generator().manual_seed(seed)) * scale
    if draw(st.booleans()):
        logits[..., 0] = float("-inf")  # a token some expert can never produce
    return torch.log_softmax(logits.double(), dim=-1).float()


@SETTINGS
@given(full_logprobs(), st.data())
def test_mixture_and_product_are_distributions(full, data):
    k, b, t, _ = full.shape
    raw = torch.tensor(data.draw(st.lists(st.one_of(EXTREME, st.floats(-50, 50)),
                                          min_size=k * b * t, max_size=k * b * t))
                       ).reshape(k, b, t).float()
    raw[0] = torch.where(torch.isinf(raw[0]), torch.zeros_like(raw[0]), raw[0])  # some weight
    log_w = top_k_log(raw, data.draw(st.one_of(st.none(), st.integers(1, k))))
    assert _no_nan(log_w) and _sums_to_one(log_w, 0)
    mixed = mixture_logprobs(full, log_w)
    assert mixed.shape == (b, t, full.shape[-1]) and _no_nan(mixed)
    assert _sums_to_one(mixed, -1)
    product = product_of_experts(full, log_w)
    assert _no_nan(product) and _sums_to_one(product, -1)


@SETTINGS
@given(st.data())
def test_tfidf_and_fixed_weights_are_normalised(data):
    b, k = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    distances = torch.tensor(data.draw(st.lists(st.floats(0, 1e6), min_size=b * k,
                                                max_size=b * k))).reshape(b, k)
    temperature = data.draw(st.floats(1e-4, 1e3))
    top_k = data.draw(st.one_of(st.none(), st.integers(1, k)))
    log_w = tfidf_log_weights(distances, temperature, top_k)
    assert log_w.shape == (k, b) and _no_nan(log_w) and _sums_to_one(log_w, 0)
    assert ((log_w > float("-inf")).sum(0) == (top_k or k)).all()
    # the nearest centre always gets the largest weight (ties allowed)
    nearest = distances.argmin(1)
    assert torch.equal(log_w[nearest, torch.arange(b)], log_w.max(0).values)
    router = Fixed(log_w)
    scores = router.log_weights(torch.zeros(k, b, 3))
    assert _sums_to_one(scores, 0) and _no_nan(scores)


@SETTINGS
@given(expert_logprobs())
def test_estimated_prior_is_a_distribution(logprobs):
    finite = torch.where(torch.isinf(logprobs), torch.full_like(logprobs, -1e30), logprobs)
    prior = estimate_prior(finite)
    assert prior.shape == (logprobs.shape[0],) and _no_nan(prior)
    assert math.isclose(float(prior.sum()), 1.0, abs_tol=1e-5)


def test_equal_huge_log_weights_normalise_exactly():
    """Found by the properties above: ``x - logsumexp(x)`` at x ~ -1e10 lost ``log k``."""
    for value in (-1e4, -1e10, -1e30):
        assert _sums_to_one(normalise_log(torch.full((3, 2), value)), 0)
    assert _sums_to_one(tfidf_log_weights(torch.tensor([[5243.0, 5243.0]]), 1e-4), 0)


def test_a_tiny_distance_does_not_tie_with_zero():
    """Found by the properties above: 7.5e-34 squared underflowed to 0 in float32, tied the
    nearest centre (distance 0) and top-1 kept the farther one."""
    log_w = tfidf_log_weights(torch.tensor([[1.0, 1.0, 7.5e-34, 0.0]]), 1.0, top_k=1)
    assert log_w[:, 0].tolist() == [float("-inf")] * 3 + [0.0]
