"""Scoring methods a run's own evaluation did not (``pipeline.eval.with_methods``), as
the benchmarks do on runs that evaluated top-1 only."""

from __future__ import annotations

import shutil
from pathlib import Path


def test_with_methods_scores_what_is_missing_as_xelm_eval_does(finished_tiny_run, tmp_path):
    from xelm.export.rundata import run_config
    from xelm.io import read_json
    from xelm.pipeline.eval import with_methods
    from xelm.rundir import RunDir

    run = Path(shutil.copytree(finished_tiny_run, tmp_path / "run"))
    rd = RunDir(run)
    results = read_json(rd.results)
    before = rd.results.read_bytes()
    assert "xelm_ensemble" in results["perplexity"]
    # forget one method's score (its cache too), and ask for one the run never scored
    (rd.eval_cache / "xelm_ensemble.json").unlink()
    reduced = {**results, **{k: {m: v for m, v in results[k].items()
                                 if m != "xelm_ensemble"}
                             for k in ("perplexity", "bits_per_byte")}}
    out = with_methods(run_config(run), rd, reduced,
                       ["top1", "ensemble", "ensemble_posterior_context"])
    # rescored from scratch: the same figures xelm eval wrote
    assert out["perplexity"]["xelm_ensemble"] == \
        results["perplexity"]["xelm_ensemble"]
    assert out["bits_per_byte"]["xelm_ensemble"] == \
        results["bits_per_byte"]["xelm_ensemble"]
    ctx = out["perplexity"]["xelm_ensemble_posterior_context"]
    assert set(ctx) == set(results["languages"]) and all(v > 1 for v in ctx.values())
    assert out["perplexity"]["xelm_top1"] == results["perplexity"]["xelm_top1"]  # was there
    assert "xelm_ensemble_posterior_context" not in reduced["perplexity"]  # input untouched
    assert rd.results.read_bytes() == before  # results.json untouched
    assert (rd.eval_cache / "xelm_ensemble_posterior_context.json").is_file()  # cached
