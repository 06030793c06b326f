"""An expert set as one standard Hugging Face mixture-of-experts model (BTX's merge).

Branch-Train-MiX (Sukhbaatar et al., 2024) turns experts branched from one seed into a
single MoE model: each expert's feed-forward block (MLP) becomes one expert of a sparse
MoE layer, and everything else -- embeddings, attention, norms, the output head -- is
shared, here the experts' parameter average or the seed's own. The result is an
ordinary ``MixtralForCausalLM`` (the Llama block with a top-k routed MLP), which
``transformers`` and inference engines load without remote code.

Mapping, per layer ``i`` and expert ``e`` (Llama/Mistral MLP -> Mixtral's fused experts):
``experts.gate_up_proj[e] = cat(gate_proj, up_proj)`` and ``experts.down_proj[e] =
down_proj``, so with the router sending a token to expert ``e`` alone the layer computes
exactly expert ``e``'s MLP (Mixtral renormalises the top-k weights; with one expert the
weight is 1). The router (``mlp.gate.weight`` ``[experts, hidden]``) is set by
:mod:`xelm.export.gates`.

Only Llama-shaped experts (``llama``, ``mistral``) have a standard MoE counterpart with
the same attention and norms; other architectures are refused by name.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:  # torch is imported where it is used: argument errors come back at once
    from torch import Tensor

# model_type of the experts -> the MoE class they become
MOE_CLASS = {"llama": "MixtralForCausalLM", "mistral": "MixtralForCausalLM"}
_SAME = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
         "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
         "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")
SHARED_CHOICES = ("average", "seed")


class ExportError(ValueError):
    """The run cannot be exported as asked; the message says why and what to do instead."""


def moe_class_for(configs: Sequence[Any]) -> str:
    """The MoE class the experts (their HF configs) become; refuse what has none."""
    types = sorted({c.model_type for c in configs})
    if len(types) > 1:
        raise ExportError(f"the experts have different architectures {types}; an MoE export "
                          "needs experts branched from one seed")
    kind = types[0]
    if kind not in MOE_CLASS:
        arch = (getattr(configs[0], "architectures", None) or [kind])[0]
        raise ExportError(
            f"these experts are {arch} (model_type {kind!r}): transformers has no standard "
            f"mixture-of-experts class with the same attention and norms, so `--format moe` "
            f"supports only {', '.join(sorted(MOE_CLASS))} experts. Serve this run as an "
            "ensemble (ExpertEnsembleForCausalLM) or average it with `xelm merge`")
    first = configs[0]
    for c in configs[1:]:
        diff = [k for k in _SAME if getattr(c, k, None) != getattr(first, k, None)]
        if diff:
            raise ExportError(f"the experts differ in {diff}; an MoE export needs experts "
                              "of one shape (branched from one seed)")
    biased = [k for k in ("attention_bias", "mlp_bias") if getattr(first, k, False)]
    if biased:
        raise ExportError(f"the experts use {biased}, which Mixtral does not have; "
                          "they cannot become a MixtralForCausalLM without changing them")
    return MOE_CLASS[kind]


def moe_config(expert_config, n_experts: int, experts_per_token: int):
    """A ``MixtralConfig`` with the experts' shape, rotary settings and special tokens."""
    from transformers import MixtralConfig

    if not 1 <= experts_per_token <= n_experts:
        raise ExportError(f"--experts-per-token must be between 1 and the number of experts "
                          f"({n_experts}), got {experts_per_token}")
    c = expert_config
    rope = getattr(c, "rope_parameters", None)
    # Mixtral's own default rope_theta is 1e6, Llama's 1e4: always carry the experts' value
    return MixtralConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        head_dim=getattr(c, "head_dim", None), hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings,
        initializer_range=getattr(c, "initializer_range", 0.02), rms_norm_eps=c.rms_norm_eps,
        pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
        tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        sliding_window=getattr(c, "sliding_window", None),
        attention_dropout=getattr(c, "attention_dropout", 0.0),
        rope_parameters=dict(rope) if rope else None,
        num_local_experts=n_experts, num_experts_per_tok=experts_per_token,
        output_router_logits=False, router_jitter_noise=0.0)


def is_mlp(key: str) -> bool:
    """A feed-forward parameter of a Llama-style decoder layer."""
    return ".mlp." in key


def shared_tensors(expert_states: Sequence[dict[str, Tensor]], how: str = "average",
                   seed_state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Everything but the MLPs: the experts' uniform average, or the seed's own tensors."""
    from xelm.infer.average import average_experts

    if how not in SHARED_CHOICES:
        raise ExportError(f"shared must be one of {SHARED_CHOICES}, got {how!r}")
    rest = [{k: v for k, v in s.items() if not is_mlp(k)} for s in expert_states]
    if how == "average":
        return average_experts(rest)
    if seed_state is None:
        raise ExportError("shared='seed' needs the run's seed/ model")
    seed = {k: v for k, v in seed_state.items() if not is_mlp(k)}
    bad = sorted(k for k in rest[0] if k not in seed or seed[k].shape != rest[0][k].shape)
    if bad or set(seed) - set(rest[0]):
        raise ExportError(f"the seed's parameters do not match the experts' (e.g. "
                          f"{(bad or sorted(set(seed) - set(rest[0])))[:3]}); use "
                          "shared='average'")
    return {k: seed[k].clone() for k in rest[0]}


def build_moe(expert_states: Sequence[dict[str, Tensor]], shared: dict[str, Tensor], config):
    """A ``MixtralForCausalLM`` (float32, eval mode) whose layer-``i`` expert ``e`` is
    expert ``e``'s MLP of layer ``i``; ``shared`` fills the rest; routers start at 0."""
    import torch
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM(config).float()
    state: dict[str, Tensor] = {k: v.float() for k, v in shared.items()}
    for i in range(config.num_hidden_layers):
        src, dst = f"model.layers.{i}.mlp.", f"model.layers.{i}.mlp."
        try:
            gate_up = [torch.cat([s[src + "gate_proj.weight"], s[src + "up_proj.weight"]], 0)
                       for s in expert_states]
            down = [s[src + "down_proj.weight"] for s in expert_states]
        except KeyError as exc:
            raise ExportError(f"expert layer {i} has no Llama MLP tensor {exc}") from None
        state[dst + "experts.gate_up_proj"] = torch.stack(gate_up).float()
        state[dst + "experts.down_proj"] = torch.stack(down).float()
        state[dst + "gate.weight"] = torch.zeros(config.num_local_experts, config.hidden_size)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:  # this transformers lays Mixtral out another way
        raise ExportError(f"MixtralForCausalLM of this transformers version has parameters "
                          f"{missing[:3]} that the mapping does not fill (and not "
                          f"{extra[:3]}); the export needs transformers >= 5 (fused experts)")
    model.load_state_dict(state, strict=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def sparse_blocks(model) -> list:
    """The sparse MoE block of every decoder layer (each has ``.gate`` and ``.experts``)."""
    blocks = [layer.mlp for layer in model.model.layers]
    if not all(hasattr(b, "gate") and hasattr(b, "experts") for b in blocks):
        raise ExportError("not a Mixtral-style model: its layers have no routed MLP")
    return blocks


def set_gates(model, gates: Sequence[Tensor]) -> None:
    """Router weights per layer, each ``[experts, hidden]``."""
    import torch

    with torch.no_grad():
        for block, weight in zip(sparse_blocks(model), gates, strict=True):
            block.gate.weight.copy_(weight.to(block.gate.weight))


def set_experts_per_token(model, k: int) -> None:
    """Route each token to ``k`` experts from now on (config and every router)."""
    n = model.config.num_local_experts
    if not 1 <= k <= n:
        raise ExportError(f"experts per token must be between 1 and {n}, got {k}")
    model.config.num_experts_per_tok = k
    for block in sparse_blocks(model):
        block.gate.top_k = k
        if hasattr(block, "top_k"):
            block.top_k = k


@contextmanager
def forced_routing(model, expert: int) -> Iterator[None]:
    """Within the block, every token of every layer goes to ``expert`` alone (weight 1),
    whatever the router says: the MoE then computes that expert's MLPs with the shared
    rest. Used to collect the hidden states an expert's text would see."""
    import torch

    def hook(module, args, output):
        logits = output[0]
        n = logits.shape[0]
        index = torch.full((n, 1), expert, dtype=torch.long, device=logits.device)
        return logits, torch.ones(n, 1, dtype=torch.float32, device=logits.device), index
    handles = [b.gate.register_forward_hook(hook) for b in sparse_blocks(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def parameter_counts(model) -> dict[str, int]:
    """Total parameters, and those a token uses with the configured experts per token."""
    total = sum(p.numel() for p in model.parameters())
    cfg = model.config
    per_expert = sum(b.experts.gate_up_proj[0].numel() + b.experts.down_proj[0].numel()
                     for b in sparse_blocks(model))
    idle = per_expert * (cfg.num_local_experts - cfg.num_experts_per_tok)
    return {"total": int(total), "active_per_token": int(total - idle),
            "mlp_per_expert": int(per_expert)}
