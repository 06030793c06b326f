"""Generation through HF ``generate()`` with ExpertEnsembleForCausalLM: per-expert caches
and posterior weights (against a no-cache brute force), sampling with top-p under a seed,
experts at weight 0 never run, batches with left padding, top-1."""

import pytest
import torch
from xelm_tiny import tiny_model

from xelm.experts.manifest import ExpertSet
from xelm.infer.generation import (
    EnsembleCache,
    ExpertEnsembleForCausalLM,
    generate,
    generate_top1,
)
from xelm.infer.routers import Fixed

PROMPT = torch.tensor([[5, 9, 2, 7], [1, 3, 3, 8]])
NO_EOS = {"eos_token_id": None, "pad_token_id": 0}  # run the full length: tiny llamas have eos=2


@pytest.fixture(scope="module")
def models():
    return [tiny_model(seed) for seed in range(3)]


def _brute_force(models, ids, method, prior, steps):
    """Greedy decoding that recomputes every expert on the whole sequence at each step
    (no cache) and mixes the next-token distributions by the textbook formulas; the
    tokens and each step's log-probs ``[B, V]``."""
    log_prior = torch.tensor(prior, dtype=torch.float64).log()
    scores = []
    for _ in range(steps):
        with torch.no_grad():
            lp = torch.stack([torch.log_softmax(m(input_ids=ids, use_cache=False).logits, -1)
                              for m in models]).double()  # [k, B, L, V]
        if method == "ensemble_posterior":  # w_e ∝ prior(e) · p_e(whole sequence so far)
            seen = lp[:, :, :-1].gather(-1, ids[None, :, 1:, None].expand(len(models), -1, -1, 1))
            log_w = torch.log_softmax(log_prior[:, None] + seen.squeeze(-1).sum(-1), dim=0)
        else:
            log_w = torch.log_softmax(log_prior, 0)[:, None].expand(-1, ids.shape[0])
        nxt = lp[:, :, -1]  # [k, B, V]
        if method == "product_of_experts":
            logp = torch.log_softmax((log_w.exp()[..., None] * nxt).sum(0), -1)
        else:
            logp = torch.logsumexp(log_w[..., None] + nxt, dim=0)
        ids = torch.cat([ids, logp.argmax(-1, keepdim=True)], dim=1)
        scores.append(logp.float())
    return ids, scores


@pytest.mark.parametrize("method", ["ensemble", "ensemble_posterior", "product_of_experts"])
def test_greedy_equals_no_cache_brute_force(models, method):
    prior = [0.5, 0.3, 0.2]
    out = generate(models, PROMPT, method, prior=prior, max_new_tokens=6, output_logits=True,
                   return_dict_in_generate=True, **NO_EOS)
    assert out.sequences.shape == (2, 10) and torch.equal(out.sequences[:, :4], PROMPT)
    tokens, scores = _brute_force(models, PROMPT, method, prior, 6)
    assert torch.equal(out.sequences, tokens)
    for ours, expected in zip(out.logits, scores, strict=True):  # the distributions too
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_one_expert_matches_its_own_hf_generate(models):
    hf = {"max_new_tokens": 6, "do_sample": False, "attention_mask": torch.ones_like(PROMPT),
          "pad_token_id": 0}
    assert torch.equal(generate([models[0]], PROMPT, "ensemble", max_new_tokens=6),
                       models[0].generate(input_ids=PROMPT, **hf))
    ensemble = ExpertEnsembleForCausalLM.from_method([models[1]], "ensemble_posterior")
    for extra in ({}, {"num_beams": 3}):  # greedy and beam search, through HF generate()
        assert torch.equal(ensemble.generate(input_ids=PROMPT, **hf, **extra),
                           models[1].generate(input_ids=PROMPT, **hf, **extra))


def test_sampling_with_top_p_is_deterministic_under_a_seed(models):
    def sample(seed, **kw):
        opts = {"do_sample": True, "temperature": 3.0, "top_p": 0.95, **kw}
        return generate(models, PROMPT, "ensemble_posterior", max_new_tokens=10, seed=seed,
                        **NO_EOS, **opts)

    first = sample(1)
    assert torch.equal(first, sample(1))
    # at temperature 3 dozens of tokens stay in the nucleus at every step: 2 x 10 draws
    # agreeing across seeds would be a broken seed, not chance
    assert not torch.equal(first, sample(2))
    # the same seed through the object, with torch's global seed, as HF samples
    ensemble = ExpertEnsembleForCausalLM.from_method(models, "ensemble_posterior")
    torch.manual_seed(1)
    direct = ensemble.generate(input_ids=PROMPT, attention_mask=torch.ones_like(PROMPT),
                               max_new_tokens=10, do_sample=True, temperature=3.0, top_p=0.95,
                               **NO_EOS)
    assert torch.equal(direct, first)
    # a nucleus that holds only the most likely token makes sampling greedy
    greedy = generate(models, PROMPT, "ensemble_posterior", max_new_tokens=10, **NO_EOS)
    assert torch.equal(sample(5, top_p=1e-6, temperature=1.0), greedy)


def _count_calls(models):
    rows: list[list[int]] = [[] for _ in models]
    handles = [m.register_forward_hook(lambda mod, args, kw, out, e=e:
                                       rows[e].append(kw["input_ids"].shape[0]),
                                       with_kwargs=True)
               for e, m in enumerate(models)]
    return rows, handles


def test_zero_weight_experts_are_never_run(models):
    calls, handles = _count_calls(models)
    try:
        generate(models, PROMPT, "ensemble_posterior", prior=[0.7, 0.3, 0.0], max_new_tokens=5,
                 **NO_EOS)
        assert [len(c) for c in calls] == [5, 5, 0]  # prefill + 4 cached steps each
        calls[0].clear(), calls[1].clear()
        generate(models, PROMPT, "ensemble", prior=[0.2, 0.5, 0.3], experts_top_k=2,
                 max_new_tokens=3, do_sample=True, seed=0, **NO_EOS)
        assert [len(c) for c in calls] == [0, 3, 3]
        calls[1].clear(), calls[2].clear()
        # weights per sequence: e0 only on row 0, e2 only on row 1, e1 on both
        table = torch.tensor([[0.5, 0.0], [0.5, 0.5], [0.0, 0.5]])
        out = ExpertEnsembleForCausalLM(models, Fixed.from_weights(table)).generate(
            input_ids=PROMPT, max_new_tokens=4, do_sample=False, **NO_EOS)
        assert calls == [[1] * 4, [2] * 4, [1] * 4]
    finally:
        for h in handles:
            h.remove()
    for row, pair in ((0, [0.5, 0.5, 0.0]), (1, [0.0, 0.5, 0.5])):
        alone = generate(models, PROMPT[row:row + 1], "ensemble", prior=pair, max_new_tokens=4,
                         **NO_EOS)
        assert torch.equal(out[row], alone[0])


def test_batch_of_two_left_padded_prompts(models):
    """Each row of a left-padded batch continues as its prompt alone would: padding is
    neither attended to nor evidence for the posterior."""
    short, long = [4, 11, 6], [9, 2, 13, 5, 8, 1]
    batch = torch.tensor([[0] * 3 + short, long])
    mask = torch.tensor([[0] * 3 + [1] * 3, [1] * 6])
    for method in ("ensemble_posterior", "product_of_experts"):
        out = generate(models, batch, method, attention_mask=mask, max_new_tokens=5, **NO_EOS)
        for row, prompt in enumerate((short, long)):
            alone = generate(models, torch.tensor([prompt]), method, max_new_tokens=5, **NO_EOS)
            assert out[row, 6:].tolist() == alone[0, len(prompt):].tolist()


def test_cache_carries_every_expert_and_the_posterior_history(models):
    ensemble = ExpertEnsembleForCausalLM.from_method(models, "ensemble_posterior")
    out = ensemble.generate(input_ids=PROMPT, max_new_tokens=3, do_sample=False,
                            return_dict_in_generate=True, **NO_EOS)
    cache = out.cache
    assert isinstance(cache, EnsembleCache) and sorted(cache.caches) == [0, 1, 2]
    # the last generated token is not fed back: 4 prompt + 2 generated tokens consumed
    assert cache.get_seq_length() == 6
    assert all(c.get_seq_length() == 6 for c in cache.caches.values())
    assert cache.history.shape == (3, 2, 5)  # each expert's log-prob of tokens 1..5


def test_eos_and_top1(models, run_dir):
    out = generate(models, PROMPT, "ensemble", max_new_tokens=8, do_sample=True, seed=0,
                   eos_token_id=3)
    for row in out[:, 4:]:
        hits = (row == 3).nonzero()
        if len(hits):
            assert (row[hits[0]:] == 3).all()
    es = ExpertSet.load(run_dir)
    got = generate(es, PROMPT, "top1", lang="qa1", max_new_tokens=4)
    assert torch.equal(got, generate_top1(es, PROMPT, "qa1", max_new_tokens=4, do_sample=False,
                                          attention_mask=torch.ones_like(PROMPT),
                                          pad_token_id=0))
    with pytest.raises(ValueError, match="inference method"):
        generate(models, PROMPT, "nope")


def _tied(seed):
    model = tiny_model(seed)
    model.config.tie_word_embeddings = True  # as xelm's own experts
    model.tie_weights()
    return model


@pytest.mark.parametrize("router_args", [
    ("ensemble_posterior", {"prior": [0.2, 0.5, 0.3], "experts_top_k": 2}),
    ("ensemble", {}), ("product_of_experts", {}), ("top1", {"expert": 1})])
def test_saved_ensemble_reloads_through_auto_model(tmp_path, router_args):
    """save_pretrained -> AutoModelForCausalLM.from_pretrained (and the class's own) gives
    the same model: identical logits, router, combine, tied embeddings and generation."""
    from transformers import AutoModelForCausalLM

    method, kwargs = router_args
    ensemble = ExpertEnsembleForCausalLM.from_method([_tied(s) for s in range(3)], method, **kwargs)
    ensemble.save_pretrained(tmp_path / "ens")
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ens"), local_files_only=True)
    own = ExpertEnsembleForCausalLM.from_pretrained(str(tmp_path / "ens"), local_files_only=True)
    assert type(loaded) is ExpertEnsembleForCausalLM and not loaded.training
    assert type(loaded.router) is type(ensemble.router) and loaded.combine == ensemble.combine
    head = loaded.experts[0]
    assert head.lm_head.weight.data_ptr() == head.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[5, 9, 2, 7, 11, 4], [1, 3, 3, 8, 8, 6]])
    with torch.no_grad():
        want = ensemble(input_ids=ids).logits
        assert torch.equal(loaded(input_ids=ids).logits, want)
        assert torch.equal(own(input_ids=ids).logits, want)
    options = {"max_new_tokens": 4, "do_sample": False, **NO_EOS,
               "attention_mask": torch.ones_like(PROMPT)}
    assert torch.equal(loaded.generate(input_ids=PROMPT, **options),
                       ensemble.generate(input_ids=PROMPT, **options))


def test_fixed_weights_with_a_zero_reload_and_per_batch_routers_are_refused(tmp_path, models):
    from transformers import AutoModelForCausalLM

    from xelm.infer.routers import Posterior

    ensemble = ExpertEnsembleForCausalLM(models, Fixed.from_weights([0.0, 0.4, 0.6]))
    ensemble.save_pretrained(tmp_path / "fixed")
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "fixed"), local_files_only=True)
    assert torch.equal(loaded.router.table, ensemble.router.table)  # -inf survives JSON
    for router in (Fixed.from_weights([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                   Posterior.per_sequence(torch.zeros(3, 2))):
        with pytest.raises(ValueError, match="built for one batch cannot be saved"):
            ExpertEnsembleForCausalLM(models, router).save_pretrained(tmp_path / "no")
    with pytest.raises(ValueError, match="needs a router"):
        ExpertEnsembleForCausalLM(models)
