"""The MoE export: a real MixtralForCausalLM built from tiny Llama experts."""

from __future__ import annotations

import json

import pytest
import torch

from xelm.export.commands import export_run
from xelm.export.moe import ExportError, forced_routing, moe_class_for, sparse_blocks


def _auto(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()


def _expert(run, name):
    from xelm.experts.store import load_causal_lm

    return load_causal_lm(run / "experts" / name)


def _text(run, lang, n=4):
    from xelm.export.rundata import language_blocks

    return language_blocks(run, lang, 16, 16 * n)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "moe"
    record = export_run(tiny_run, out, experts_per_token=2, shared="auto")
    return out, record


def test_export_loads_as_mixtral_and_generates(exported):
    out, record = exported
    model = _auto(out)
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.config.num_local_experts == 3 and model.config.num_experts_per_tok == 2
    prompt = torch.tensor([[5, 8, 11, 14]])
    generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                               max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, 10) and torch.equal(generated[:, :4], prompt)
    saved = json.loads((out / "export.json").read_text())
    assert saved["architecture"] == "MixtralForCausalLM"
    assert saved["experts"] == ["e0", "e1", "e2"]
    assert saved["languages"] == {"e0": ["qa0", "qa1"], "e1": ["qa2"], "e2": ["qa3"]}
    assert set(saved["shared_tried"]) == {"average", "seed"}
    assert saved["tokens"]["router_tuning"] == 0 and saved["router_tuning"] is None
    params = saved["parameters"]
    assert params["active_per_token"] == params["total"] - params["mlp_per_expert"]
    assert (out / "README.md").is_file() and (out / "tokenizer.json").is_file()


def test_routed_to_one_expert_the_moe_is_that_expert(exported, tiny_run):
    """The experts differ only in MLPs, so shared parts are the experts' own: forced to
    expert e, the reloaded MoE's logits are expert e's (tests the MLP mapping)."""
    out, _ = exported
    model = _auto(out)
    ids = _text(tiny_run, "qa2")
    for e, name in enumerate(["e0", "e1", "e2"]):
        with torch.no_grad(), forced_routing(model, e):
            moe = model(input_ids=ids).logits
        own = _expert(tiny_run, name)(input_ids=ids).logits
        torch.testing.assert_close(moe, own, atol=1e-4, rtol=1e-4)
    other = _expert(tiny_run, "e0")(input_ids=ids).logits
    assert (other - own).abs().max() > 1e-2  # the comparison can fail


def test_one_expert_per_token_follows_the_language(tiny_run, tmp_path):
    """With one expert per token and the router from the languages' text, the MoE on a
    language's text is (nearly everywhere) that language's expert."""
    out = tmp_path / "k1"
    record = export_run(tiny_run, out, experts_per_token=1, shared="average")
    assert all(layer["accuracy"] > 0.9 for layer in record["router_init"])
    model = _auto(out)
    for lang, name in (("qa0", "e0"), ("qa2", "e1"), ("qa3", "e2")):
        ids = _text(tiny_run, lang)
        with torch.no_grad():
            moe = model(input_ids=ids).logits
            own = _expert(tiny_run, name)(input_ids=ids).logits
        same = ((moe - own).abs().amax(-1) < 1e-4).float().mean()
        assert same > 0.9, (lang, float(same))


def test_router_init_rows_per_layer(tiny_run):
    from xelm.experts.manifest import ExpertSet
    from xelm.export.gates import init_router
    from xelm.export.moe import build_moe, moe_config, shared_tensors
    from xelm.export.rundata import expert_blocks

    es = ExpertSet.load(tiny_run)
    states = [es.models[n].state_dict() for n in es.names]
    model = build_moe(states, shared_tensors(states), moe_config(es.models["e0"].config, 3, 2))
    assert all(float(b.gate.weight.detach().abs().max()) == 0 for b in sparse_blocks(model))
    stats = init_router(model, expert_blocks(tiny_run, es.manifest, es.names, 16, 512))
    assert len(stats) == 2
    for block in sparse_blocks(model):
        gate = block.gate.weight
        assert gate.shape == (3, 16)
        assert torch.cdist(gate, gate)[~torch.eye(3, dtype=torch.bool)].min() > 1e-3
    assert all(0.0 <= s["accuracy"] <= 1.0 and s["rows"].split("+")[0] in ("mean", "direction") for s in stats)


def _mixture_model(run, experts_per_token=2):
    from xelm.experts.manifest import ExpertSet
    from xelm.export.gates import init_router
    from xelm.export.moe import build_moe, moe_config, shared_tensors
    from xelm.export.rundata import expert_blocks

    es = ExpertSet.load(run)
    states = [es.models[n].state_dict() for n in es.names]
    model = build_moe(states, shared_tensors(states),
                      moe_config(es.models["e0"].config, 3, experts_per_token))
    init_router(model, expert_blocks(run, es.manifest, es.names, 16, 512))
    return model


def _mixed_valid(run):
    return torch.cat([_text(run, lang, 6) for lang in ("qa0", "qa1", "qa2", "qa3")])


@pytest.mark.parametrize("what", ["router", "all"])
def test_tuning_changes_what_it_should_and_lowers_the_loss(tiny_run, what):
    """Tuning from a router that knows nothing (all rows 0) at one expert per token: it
    trains with two, changes only the routers under "router", and the loss on the mixed
    validation text falls (at two experts per token, where the router weighs them)."""
    from xelm.export.gates import mean_nll, tune_router
    from xelm.export.moe import set_experts_per_token, set_gates
    from xelm.export.rundata import mixed_train_batches, run_config

    torch.manual_seed(0)
    model = _mixture_model(tiny_run, experts_per_token=1)
    set_gates(model, [torch.zeros(3, 16)] * 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    valid = _mixed_valid(tiny_run)
    set_experts_per_token(model, 2)
    loss_before = mean_nll(model, valid)
    set_experts_per_token(model, 1)
    batches = mixed_train_batches(tiny_run, run_config(tiny_run), 8, seed=1)
    result = tune_router(model, batches, 40, what=what, lr=3e-2)
    assert model.config.num_experts_per_tok == 1  # restored after tuning with two
    assert result["train_experts_per_token"] == 2 and result["steps"] == 40
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    gates = {k for k in before if k.endswith("mlp.gate.weight")}
    if what == "router":
        assert changed == gates
    else:
        assert gates < changed and any("self_attn" in k for k in changed)
    set_experts_per_token(model, 2)
    assert mean_nll(model, valid) < loss_before - 0.01


def test_export_with_tuning_records_its_tokens(tiny_run, tmp_path):
    record = export_run(tiny_run, tmp_path / "tuned", tune_router_tokens=4 * 16 * 5,
                        shared="seed")
    tuning = record["router_tuning"]
    assert tuning["tokens"] == 320 and tuning["steps"] == 5 and tuning["what"] == "router"
    assert record["tokens"]["router_tuning"] == 320
    assert record["tokens"]["router_tuning_vs_dense"] == pytest.approx(320 / 3000)
    assert set(tuning["valid_nll_after"]) == {"qa0", "qa1", "qa2", "qa3"}
    assert record["shared"] == "seed"


def test_bad_arguments_are_refused_before_any_output(tiny_run, tmp_path):
    from xelm.outputs import OutDirError

    out = tmp_path / "never"
    for kwargs, fragment in (({"experts_per_token": 4}, "between 1 and the run's 3"),
                             ({"fmt": "gguf"}, "--format"), ({"shared": "mean"}, "--shared"),
                             ({"tune": "mlp"}, "--tune"), ({"tune_router_tokens": -1}, ">= 0")):
        with pytest.raises(ExportError, match=fragment):
            export_run(tiny_run, out, **kwargs)
        assert not out.exists()
    with pytest.raises(OutDirError):
        export_run(tiny_run, tiny_run / "experts" / "e0")
    with pytest.raises(ExportError, match="less than one batch"):
        export_run(tiny_run, tmp_path / "few", tune_router_tokens=10, shared="average")


def test_other_architectures_are_refused_by_name():
    from transformers import LlamaConfig, XGLMConfig

    with pytest.raises(ExportError, match="XGLMForCausalLM.*llama, mistral"):
        moe_class_for([XGLMConfig(architectures=["XGLMForCausalLM"])])
    with pytest.raises(ExportError, match="different architectures"):
        moe_class_for([LlamaConfig(), XGLMConfig()])
    with pytest.raises(ExportError, match="mlp_bias"):
        moe_class_for([LlamaConfig(mlp_bias=True)])
    assert moe_class_for([LlamaConfig(), LlamaConfig()]) == "MixtralForCausalLM"
