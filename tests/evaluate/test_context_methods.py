"""Evaluation methods that route a block by the text before it."""

from __future__ import annotations

import math

import numpy as np
import torch

from xelm.config import load
from xelm.evaluate.stage import PRIOR_FLOOR, _posterior_context_scorer
from xelm.experts.manifest import ExpertSet
from xelm.infer.mixture import score_targets, target_logprobs


class _Loaded:
    def __init__(self, expert_set):
        self.expert_set = expert_set

    def get(self):
        return self.expert_set


def test_posterior_context_prior_is_the_posterior_after_the_previous_block(run_dir):
    es = ExpertSet.load(run_dir)
    cfg = load(None, ["model.context=8", "eval.batch_size=2"])
    tokens = np.random.default_rng(0).integers(1, 60, size=41)  # 5 blocks of 8 predictions
    score = _posterior_context_scorer(cfg, _Loaded(es), {"qa0": (tokens, 100)})("qa0")
    blocks = [tokens[s:s + 9] for s in range(0, 40, 8)]
    models = [es.models[n] for n in es.names]
    with torch.inference_mode():
        got = score(torch.from_numpy(np.stack(blocks[1:3])), [1, 2])
        for j, r in enumerate((1, 2)):
            prev = torch.from_numpy(blocks[r - 1])[None]
            totals = torch.tensor([float(target_logprobs(m, prev).double().sum()) for m in models])
            prior = (1 - PRIOR_FLOOR) * torch.softmax(totals, 0) + PRIOR_FLOOR / len(models)
            expected = score_targets(es, torch.from_numpy(blocks[r])[None], "ensemble_posterior",
                                     prior=prior.tolist())
            assert torch.allclose(got[j:j + 1], expected, atol=1e-5)
        first = score(torch.from_numpy(blocks[0])[None], [0])  # no context: uniform prior
        assert torch.allclose(first, score_targets(es, torch.from_numpy(blocks[0])[None],
                                                   "ensemble_posterior"), atol=1e-6)
    assert math.isfinite(float(got.sum()))
