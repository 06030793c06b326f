"""Text generation from an expert set, driven by Hugging Face's own ``generate()``.

:class:`ExpertEnsembleForCausalLM` presents k experts (HF causal LMs sharing one
tokenizer) and a router (:mod:`xelm.infer.routers`) as one HF causal LM. Its ``forward``
returns as ``logits`` the log of the combined next-token distribution: the mixture
``log Σ_e w_e p_e`` (``logsumexp`` of log-weights plus expert log-probs) or, for
``product_of_experts``, the renormalised weighted geometric mean. These are normalised
log-probs, so whatever ``generate()`` does to logits works on the ensemble as on one
model: greedy search, sampling with temperature, top-k, top-p, eos / ``max_new_tokens``,
batches (left-padded, with ``attention_mask``), ``num_return_sequences``, beam search.
One difference from a single model: processors that look at the *sign* of a logit (HF's
repetition penalty) see log-probs, which are never positive.

How ``generate()`` carries the caches: it passes the ``cache`` returned by each
``forward`` into the next one (``_update_model_kwargs_for_generation`` then
``prepare_inputs_for_generation``), and after the first call feeds only the newest
token. The ensemble's cache is an :class:`EnsembleCache`: one HF cache per expert (each
expert builds and extends its own, as in its own ``generate()``), plus what the router
needs to weight the next token. For the BTM posterior that is every expert's log-prob of
every token so far (prompt and generated), from which ``Router.log_weights`` gives
``w_e ∝ prior(e)·p_e(prefix)`` exactly as scoring does (padding is not evidence). The
model declines HF's default ``DynamicCache`` (``_supports_default_dynamic_cache``), so
the first ``forward`` starts a fresh EnsembleCache; ``use_cache=False`` recomputes every
expert on the whole sequence at each step instead.

Experts that the router gives no weight (``Router.support``) are never run; an expert
whose weight is 0 on some sequences of the batch runs on the others only.

:func:`generate` is the convenience: it picks experts and router by method name, exactly
as scoring does, and calls the ensemble's ``generate()``; ``top1`` calls the chosen
expert's own ``generate()``, which needs no wrapper.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor, nn
from transformers import (AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig,
                          PreTrainedModel)
from transformers.modeling_outputs import CausalLMOutputWithPast

from xelm.infer.mixture import mixture_logprobs, product_of_experts, resolve_method
from xelm.infer.routers import Fixed, Posterior, Router, TopOne, Uniform


def _cache_argument(model) -> str:
    """The name ``forward`` gives its KV cache (``cache`` in transformers 5.2x, else the
    older ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _accepts(model, name: str) -> bool:
    params = inspect.signature(model.forward).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config(decoder=True).vocab_size)


@strict
class ExpertEnsembleConfig(PreTrainedConfig):
    """Config of an :class:`ExpertEnsembleForCausalLM`: vocabulary, special tokens and, to
    reload it, each expert's config and the router (:func:`router_spec`, with ``combine``)."""

    model_type = "xelm_ensemble"
    vocab_size: int = 0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    experts: list | None = None
    router: dict | None = None


_SAVABLE = {cls.__name__: cls for cls in (Router, Uniform, TopOne, Posterior, Fixed)}


def router_spec(router: Router) -> dict:
    """JSON that rebuilds ``router``; one built for a batch (per-sequence weights) cannot."""
    kind, table = type(router), getattr(router, "table", None)
    per_batch = table is not None and (kind is Posterior or table.shape[1] > 1)
    if kind not in _SAVABLE.values() or per_batch:
        raise ValueError(f"a {kind.__name__} router built for one batch cannot be saved; use "
                         "a uniform, top-1, posterior or fixed-weight router")
    return {"type": kind.__name__, "state": {
        k: v.tolist() if isinstance(v, Tensor) else v for k, v in vars(router).items()}}


def _from_config(config: ExpertEnsembleConfig) -> tuple[list[nn.Module], Router, str]:
    """Experts of the saved shapes (``from_pretrained`` loads their weights), router, combine."""
    spec = config.router or {}
    if not config.experts or spec.get("type") not in _SAVABLE:
        raise ValueError("config.json has no saved experts and router (see save_pretrained)")
    router = object.__new__(_SAVABLE[spec["type"]])  # tensors on the CPU, not on meta
    router.__dict__.update({k: torch.tensor(v, device="cpu") if k == "table" and v is not None
                            else v for k, v in spec["state"].items()})
    models = [AutoModelForCausalLM.from_config(AutoConfig.for_model(**c)) for c in config.experts]
    return models, router, spec.get("combine", "mixture")


class EnsembleCache:
    """What an :class:`ExpertEnsembleForCausalLM` keeps between two ``forward`` calls.

    * ``caches`` -- one HF cache per expert that runs (``None`` before its first call);
    * ``rows`` -- per running expert, the sequences it runs on (``None``: all of them);
    * ``history`` ``[k, B, T]`` -- (routers whose weights depend on the experts' scores,
      e.g. the posterior) each expert's log-prob of each token after the first, and
      ``evidence`` ``[B, T]`` whether that log-prob counts (both tokens are not padding);
    * ``last`` ``[k, B, V]`` -- each expert's log-probs after the newest token, to score
      the token ``generate()`` picks next.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, support: Tensor):
        support = support.cpu()
        self.rows: dict[int, Tensor | None] = {
            e: None if bool(support[e].all()) else support[e].nonzero().flatten()
            for e in support.any(dim=1).nonzero().flatten().tolist()}
        self.caches: dict[int, Any] = {e: None for e in self.rows}
        self.seen = 0
        self.history: Tensor | None = None
        self.evidence: Tensor | None = None
        self.last: Tensor | None = None
        self.last_real: Tensor | None = None

    @property
    def is_linear(self) -> list[bool]:  # read by generate() when a cache is passed in
        return [False]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens consumed so far (padding included), as HF caches count them."""
        return self.seen

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: sequence ``i`` continues from old sequence ``beam_idx[i]``."""
        if any(rows is not None for rows in self.rows.values()):
            raise NotImplementedError("beam search needs every running expert to run on "
                                      "every sequence (router support that varies by sequence)")
        for cache in self.caches.values():
            if cache is not None:
                cache.reorder_cache(beam_idx)
        if self.history is not None:
            idx = beam_idx.to(self.history.device)
            self.history, self.evidence = self.history[:, idx], self.evidence[idx]
        if self.last is not None:
            idx = beam_idx.to(self.last.device)
            self.last, self.last_real = self.last[:, idx], self.last_real[idx]


class ExpertEnsembleForCausalLM(PreTrainedModel, GenerationMixin):
    """k experts and a router as one HF causal LM whose logits are the combined log-probs.

    ``models``: HF causal LMs with one vocabulary (the experts stay where they are; they
    become submodules, so ``.to()`` moves them all). ``router``: any
    :class:`~xelm.infer.routers.Router`. ``combine``: ``"mixture"`` or ``"product"``.
    Build one by method name with :meth:`from_method`. Generation settings start from
    the first expert's ``generation_config``.

    ``save_pretrained`` writes the experts and the router; ``AutoModelForCausalLM`` (this
    module registers ``xelm_ensemble``) and this class's ``from_pretrained`` reload them.
    """

    config_class = ExpertEnsembleConfig
    base_model_prefix = "ensemble"
    main_input_name = "input_ids"

    def __init__(self, models: Sequence[nn.Module] | ExpertEnsembleConfig,
                 router: Router | None = None, combine: str = "mixture"):
        saved = models if isinstance(models, ExpertEnsembleConfig) else None  # from_pretrained
        models, router, combine = _from_config(saved) if saved else (models, router, combine)
        if router is None:
            raise ValueError("an ensemble needs a router (see xelm.infer.routers)")
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one expert")
        if combine not in ("mixture", "product"):
            raise ValueError(f"combine must be 'mixture' or 'product', got {combine!r}")
        sizes = sorted({_vocab_size(m) for m in models})
        if len(sizes) > 1:
            raise ValueError(f"experts must share one vocabulary; their output sizes are {sizes}")
        first = models[0].generation_config
        config = saved or ExpertEnsembleConfig(
            vocab_size=sizes[0], pad_token_id=first.pad_token_id,
            bos_token_id=first.bos_token_id, eos_token_id=first.eos_token_id)
        super().__init__(config)
        self.post_init()  # before the experts: it would initialise their weights again
        self.eval()  # the wrapper only: the experts keep their own mode
        self.experts = nn.ModuleList(models)
        self.all_tied_weights_keys.update({  # each expert's tied embeddings, for loading
            f"experts.{i}.{k}": f"experts.{i}.{v}" for i, m in enumerate(models)
            for k, v in (getattr(m, "all_tied_weights_keys", None) or {}).items()})
        self.router = router
        self.combine = combine
        self.generation_config = copy.deepcopy(first)
        self._cache_names = [_cache_argument(m) for m in models]
        self._keeps_logits = [_accepts(m, "logits_to_keep") for m in models]

    @classmethod
    def from_method(cls, expert_set_or_models, method: str = "ensemble_posterior", *,
                    lang: str | None = None, expert: str | int | None = None, prior=None,
                    experts_top_k: int | None = None) -> ExpertEnsembleForCausalLM:
        """The ensemble of a named inference method, routed exactly as
        :func:`~xelm.infer.mixture.score_targets` routes it (``experts_top_k`` is its
        ``top_k``: keep that many experts)."""
        models, router, combine = resolve_method(expert_set_or_models, method, lang=lang,
                                                 expert=expert, top_k=experts_top_k,
                                                 prior=prior)
        return cls(models, router, combine)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """HF ``save_pretrained``; ``config.json`` also gets what reloading needs."""
        self.config.router = {**router_spec(self.router), "combine": self.combine}
        self.config.experts = [m.config.to_dict() for m in self.experts]
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward starts an EnsembleCache: one cache per expert

    def get_input_embeddings(self):
        return None  # each expert embeds tokens itself

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, cache: EnsembleCache | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0,
                return_dict: bool | None = True, **kwargs) -> CausalLMOutputWithPast:
        """Feed ``input_ids`` ``[B, n]`` (the tokens after those ``cache`` has seen);
        ``logits`` ``[B, n, V]`` (or the last ``logits_to_keep``) are the ensemble's
        log-probs of the next token after each position. ``attention_mask`` covers the
        cached tokens and the new ones, as in HF generation (0 = left padding)."""
        unused = sorted(name for name, value in kwargs.items()
                        if value is not None and value is not False)
        if unused:
            raise ValueError(f"ExpertEnsembleForCausalLM.forward does not take {unused}")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError("attention_mask must be 2D [batch, tokens]")
        use_cache = True if use_cache is None else bool(use_cache)
        k, (batch, n) = len(self.experts), input_ids.shape
        state = cache if cache is not None else EnsembleCache(self.router.support(k, batch))
        keep = n if not logits_to_keep else min(int(logits_to_keep), n)
        dynamic = not self.router.static
        real, prev_real = self._real_tokens(input_ids, attention_mask, state)

        device, vocab = input_ids.device, self.config.vocab_size
        kept = torch.zeros(len(state.rows), batch, keep, vocab, device=device)
        cols = torch.zeros(k, batch, n, device=device) if dynamic else None
        last = torch.zeros(k, batch, vocab, device=device) if dynamic and use_cache else None
        for slot, (e, rows) in enumerate(state.rows.items()):
            logits, state.caches[e] = self._run_expert(
                e, rows, input_ids, attention_mask, position_ids, state.caches[e], use_cache,
                0 if dynamic and n > 1 else keep)
            at = slice(None) if rows is None else rows.to(device)
            ids = input_ids[at]
            kept[slot][at] = torch.log_softmax(logits[:, -keep:], dim=-1)
            if dynamic:
                if n > 1:  # log-prob of each chunk token after the first, without a full softmax
                    head = logits[:, :-1]
                    cols[e][at, 1:] = (head.gather(-1, ids[:, 1:, None]).squeeze(-1)
                                       - torch.logsumexp(head, dim=-1))
                if state.last is not None:  # the first chunk token, from the previous call
                    cols[e][at, 0] = state.last[e][at].gather(-1, ids[:, :1]).squeeze(-1)
                if last is not None:
                    last[e][at] = torch.log_softmax(logits[:, -1], dim=-1)

        log_w = self._log_weights(state, cols, real, prev_real, keep, use_cache)
        active = list(state.rows)
        combine = mixture_logprobs if self.combine == "mixture" else product_of_experts
        logp = combine(kept, log_w[active])

        if use_cache:
            state.seen += n
            state.last, state.last_real = last, real[:, -1]
        out = CausalLMOutputWithPast(logits=logp, cache=state if use_cache else None)
        return out if return_dict is not False else out.to_tuple()

    def _real_tokens(self, input_ids: Tensor, attention_mask: Tensor | None,
                     state: EnsembleCache) -> tuple[Tensor, Tensor | None]:
        """``[B, n]`` True where a new token is not padding; and the same for the token
        before them (None at the start)."""
        batch, n = input_ids.shape
        if attention_mask is None:
            real = torch.ones(batch, n, dtype=torch.bool, device=input_ids.device)
            prev = None if state.seen == 0 else torch.ones_like(real[:, 0])
            return real, prev
        mask = attention_mask.to(input_ids.device).bool()
        real = mask[:, -n:]
        if state.seen == 0:
            return real, None
        return real, mask[:, -n - 1] if mask.shape[1] > n else state.last_real

    def _run_expert(self, e: int, rows: Tensor | None, input_ids: Tensor,
                    attention_mask: Tensor | None, position_ids: Tensor | None, cache,
                    use_cache: bool, keep: int) -> tuple[Tensor, Any]:
        """Expert ``e`` on its rows: float32 logits ``[b, keep or n, V]`` on the input
        device, and its updated cache."""
        model = self.experts[e]
        device = next(model.parameters()).device

        def take(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            t = t if rows is None else t[rows.to(t.device)]
            return t.to(device)

        kwargs = {"input_ids": take(input_ids), "attention_mask": take(attention_mask),
                  "use_cache": use_cache, self._cache_names[e]: cache}
        if position_ids is not None:
            kwargs["position_ids"] = take(position_ids)
        if self._keeps_logits[e] and keep:
            kwargs["logits_to_keep"] = keep
        out = model(**kwargs)
        new_cache = getattr(out, self._cache_names[e], None) if use_cache else None
        return out.logits.float().to(input_ids.device), new_cache

    def _log_weights(self, state: EnsembleCache, cols: Tensor | None, real: Tensor,
                     prev_real: Tensor | None, keep: int, use_cache: bool) -> Tensor:
        """Router log-weights ``[k, B, keep]`` for the kept positions. ``cols[:, :, 0]``
        is each expert's log-prob of the first new token (from the previous call),
        ``cols[:, :, i]`` that of new token ``i``."""
        k, batch, device = len(self.experts), real.shape[0], real.device
        if cols is None:  # static: weights do not depend on what the experts said
            return self.router.log_weights(torch.zeros(k, batch, keep, device=device))
        counts = torch.zeros_like(real)
        counts[:, 1:] = real[:, 1:] & real[:, :-1]
        if prev_real is not None:
            counts[:, 0] = real[:, 0] & prev_real.to(device)
        else:  # the first token of the text is nobody's target
            cols, counts = cols[..., 1:], counts[:, 1:]
        history = cols if state.history is None else torch.cat([state.history, cols], dim=-1)
        evidence = counts if state.evidence is None else torch.cat([state.evidence, counts], -1)
        if use_cache:
            state.history, state.evidence = history, evidence
        # one column per token so far: column t holds the target after token t (the last
        # target is unknown yet, a placeholder); the router's weights for column t use only
        # columns < t, i.e. the likelihood of tokens 0..t, the prefix before that target
        placeholder = torch.zeros(k, batch, 1, device=device)
        log_w = self.router.log_weights(torch.cat([history, placeholder], dim=-1),
                                        mask=torch.cat([evidence, counts.new_zeros(batch, 1)], -1))
        return log_w[..., -keep:]


AutoConfig.register(ExpertEnsembleConfig.model_type, ExpertEnsembleConfig, exist_ok=True)
AutoModelForCausalLM.register(ExpertEnsembleConfig, ExpertEnsembleForCausalLM, exist_ok=True)


@torch.no_grad()
def generate(expert_set_or_models, input_ids: Tensor, method: str = "ensemble", *,
             lang: str | None = None, expert: str | int | None = None, prior=None,
             experts_top_k: int | None = None, seed: int | None = None,
             text: str | None = None, **generate_kwargs) -> Tensor:
    """Continue ``input_ids`` ``[B, L]`` with HF ``generate()``; returns ``[B, L + n]``.

    ``method``/``lang``/``expert``/``prior`` mean what they mean in
    :func:`~xelm.infer.mixture.score_targets`; ``experts_top_k`` is its ``top_k`` (keep
    that many experts); ``text`` is the prompt's text for ``top1_langid``. Every other keyword goes to HF ``generate()`` unchanged
    (``do_sample``, ``temperature``, ``top_k`` -- HF's, over tokens -- ``top_p``,
    ``eos_token_id``, ...), with these defaults: ``max_new_tokens=32``, greedy
    (``do_sample=False``), an all-ones ``attention_mask`` (pass one for left-padded
    prompts), and finished sequences padded with ``eos_token_id`` when it is given.
    ``seed`` makes sampling reproducible without touching the caller's RNG state.
    """
    options = {"max_new_tokens": 32, "do_sample": False, **generate_kwargs}
    options.setdefault("attention_mask", torch.ones_like(input_ids))
    eos = options.get("eos_token_id")
    if eos is not None and "pad_token_id" not in options:
        options["pad_token_id"] = eos[0] if isinstance(eos, (list, tuple)) else eos
    models, router, combine = resolve_method(expert_set_or_models, method, lang=lang,
                                             expert=expert, top_k=experts_top_k, prior=prior,
                                             text=text)
    if isinstance(router, TopOne):
        run = models[router.expert].generate
    else:
        run = ExpertEnsembleForCausalLM(models, router, combine).generate
    if seed is None:
        return run(input_ids=input_ids, **options)
    cuda = {t.device.index or 0 for t in [input_ids, *(next(m.parameters()) for m in models)]
            if t.device.type == "cuda"}
    with torch.random.fork_rng(devices=sorted(cuda)):
        torch.manual_seed(seed)
        return run(input_ids=input_ids, **options)


def generate_top1(expert_set, input_ids: Tensor, lang: str, **generate_kwargs) -> Tensor:
    """Top-1 generation is plain HF ``generate()`` on the language's expert."""
    model = expert_set.models[expert_set.expert_for_language(lang)]
    return model.generate(input_ids=input_ids, **generate_kwargs)
