import json

import pytest
import torch

from xelm.experts.manifest import ExpertSet
from xelm.experts.store import load_causal_lm
from xelm.infer.average import average_experts, merge_to_folder
from xelm_tiny import tiny_model


def test_averaging_identical_experts_returns_the_same_weights(tmp_path):
    model = tiny_model(0)
    model.save_pretrained(tmp_path / "m")
    for items in ([model, model, model], [tmp_path / "m"] * 3, [model, tmp_path / "m"]):
        avg = average_experts(items, weights=[1, 2, 4][:len(items)])
        for key, tensor in model.state_dict().items():
            assert torch.equal(avg[key], tensor), key


def test_weighted_average_matches_formula_and_keeps_dtype():
    a, b = tiny_model(0), tiny_model(1)
    b = b.to(torch.bfloat16)
    a = a.to(torch.bfloat16)
    avg = average_experts({"a": a, "b": b}, weights=[3, 1])
    key = "model.layers.0.mlp.up_proj.weight"
    expected = 0.75 * a.state_dict()[key].double() + 0.25 * b.state_dict()[key].double()
    assert avg[key].dtype == torch.bfloat16
    assert torch.equal(avg[key], expected.to(torch.bfloat16))
    assert torch.equal(average_experts([a, b], weights=[0, 1])[key], b.state_dict()[key])


def test_average_refuses_mismatched_experts():
    with pytest.raises(ValueError, match="shape"):
        average_experts([tiny_model(0), tiny_model(1, vocab=80)])
    with pytest.raises(ValueError, match="weights"):
        average_experts([tiny_model(0)], weights=[-1.0])


def test_merge_to_folder_round_trips(run_dir, tmp_path):
    es = ExpertSet.load(run_dir)
    out = merge_to_folder(es, tmp_path / "merged", weights={"e1": 1.0})
    merged = load_causal_lm(out)
    for key, tensor in es.models["e1"].state_dict().items():
        assert torch.equal(merged.state_dict()[key], tensor), key
    assert json.loads((out / "merge.json").read_text())["weights"] == {"e0": 0.0, "e1": 1.0}
    assert (out / "tokenizer.json").is_file()
    out = merge_to_folder(es, tmp_path / "uniform")  # "prior" with no prior is uniform too
    expected = average_experts([run_dir / "experts/e0", run_dir / "experts/e1"])
    state = load_causal_lm(out).state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
