"""Evaluation methods that route a block by the text before it."""

from __future__ import annotations

import math

import numpy as np
import torch

from xelm.config import load
from xelm.evaluate.scoring import PRIOR_FLOOR, posterior_context_scorer
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
    # 5 blocks of 8 predictions and a last, partial one of 4
    tokens = np.random.default_rng(0).integers(1, 60, size=45)
    score = posterior_context_scorer(cfg, _Loaded(es), {"qa0": (tokens, 100)})("qa0")
    blocks = [tokens[s:s + 9] for s in range(0, 44, 8)]
    models = [es.models[n] for n in es.names]
    with torch.inference_mode():
        got = score(torch.from_numpy(np.stack(blocks[1:3])), [1, 2])
        last = score(torch.from_numpy(blocks[5])[None], [5])
        for j, r, got_r in ((0, 1, got), (1, 2, got), (0, 5, last)):
            prev = torch.from_numpy(blocks[r - 1])[None]
            totals = torch.tensor([float(target_logprobs(m, prev).double().sum()) for m in models])
            prior = (1 - PRIOR_FLOOR) * torch.softmax(totals, 0) + PRIOR_FLOOR / len(models)
            expected = score_targets(es, torch.from_numpy(blocks[r])[None], "ensemble_posterior",
                                     prior=prior.tolist())
            assert torch.allclose(got_r[j:j + 1], expected, atol=1e-5)
        first = score(torch.from_numpy(blocks[0])[None], [0])  # no context: uniform prior
        assert torch.allclose(first, score_targets(es, torch.from_numpy(blocks[0])[None],
                                                   "ensemble_posterior"), atol=1e-6)
    assert math.isfinite(float(got.sum()))
