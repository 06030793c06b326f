"""The expert set as an lm-evaluation-harness model: ``--model xelm``.

Importing this module registers the class under ``xelm`` in lm-eval's model registry
(lm-eval 0.4 has no plugin entry points, so something must import it first):
``xelm lm-eval ...`` does that and then runs lm-eval's own command line with the same
arguments; in Python, import this module before
``lm_eval.simple_evaluate(model="xelm", ...)``.

``model_args``: ``run=RUN_DIR`` (required), ``method=top1|top1_langid|ensemble|
ensemble_posterior|product_of_experts`` (default ``ensemble_posterior``), ``lang=xx`` (the
task's language: routes ``top1``), ``expert=NAME`` (``top1`` on one named expert),
``route=target|source|ensemble`` with ``source_lang=xx`` (cross-lingual prompts:
demonstrations in ``source_lang``, the test item in ``lang``; the expert of the test
item's language, of the demonstrations' language, or no label:
:mod:`xelm.evaluate.crosslingual`), ``top_k``,
``prior=manifest``, ``max_length`` (fewer positions than the models have),
``batch_size``, ``device``, ``dtype``. Tokenization, the empty-context prefix token and
the left truncation of long contexts follow lm-eval's ``hf`` model, so a single expert
scores the same here as through ``--model hf --model_args pretrained=RUN/experts/NAME``.
``top1_langid`` needs no label: each request goes to the expert of the language detected
in its context (lingua), or to ``ensemble_posterior`` where none is detected (e.g. an
empty context); the continuation is never looked at.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
import lm_eval.models  # noqa: F401  (registers lm-eval's own models, e.g. hf, lazily)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from xelm.infer.mixture import mixture_logprobs, product_of_experts, resolve_method, \
    target_logprobs
from xelm.infer.routers import langid_experts
from xelm.methods import GENERATE_METHODS

log = logging.getLogger("xelm")

DEFAULT_BATCH = 8
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature")


def _batch_size(value) -> int:
    if value is None:
        return DEFAULT_BATCH
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch_size={value!r} is not supported by the xelm model: give a "
                         "number (auto batch sizing is not implemented)") from None
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return size


def _device(requested: str | None) -> str:
    """lm-eval's command line asks for ``cuda`` by default; like its ``hf`` model, fall
    back to the CPU when there is no GPU."""
    if requested and not (requested.startswith("cuda") and not torch.cuda.is_available()):
        return requested
    if requested:
        log.warning("device=%s requested but CUDA is not available: using the CPU", requested)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(name: str | None):
    if name in (None, "auto"):
        return None
    if not isinstance(getattr(torch, str(name), None), torch.dtype):
        raise ValueError(f"dtype={name!r} is not a torch dtype (e.g. float32, bfloat16)")
    return getattr(torch, name)


def _model_positions(model) -> int | None:
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.no_grad()
def continuation_scores(expert_set, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        cont_lens: list[int], method: str,
                        **route) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihood ``[B]`` of each row's last ``cont_lens[b]`` real tokens under
    ``method``, and ``[B]`` whether each of them is the combined distribution's argmax.

    Rows are right-padded (``attention_mask``). Every expert the router supports runs
    once; the router weights all positions exactly as
    :func:`~xelm.infer.mixture.score_targets` does, and the full combined distribution
    is formed only at the continuation positions (for the greedy check).
    """
    models, router, combine = resolve_method(expert_set, method, **route)
    k, (batch, length) = len(models), input_ids.shape
    width = max(cont_lens)
    cont = torch.as_tensor(cont_lens, device=input_ids.device)
    steps = torch.arange(width, device=input_ids.device)
    valid = steps[None] >= width - cont[:, None]                            # [B, C]
    # target index of each continuation token (right padding: rows end at their length)
    pos = (attention_mask.sum(1)[:, None] - 1 - width + steps[None]).clamp(min=0)
    support = router.support(k, batch).cpu()
    target_lp = torch.zeros(k, batch, length - 1, device=input_ids.device)
    cont_full = None
    for e in support.any(dim=1).nonzero().flatten().tolist():
        rows = support[e].nonzero().flatten().to(input_ids.device)
        lp, full = target_logprobs(models[e], input_ids[rows], attention_mask[rows],
                                   return_full=True)
        if cont_full is None:
            cont_full = torch.zeros(k, batch, width, full.shape[-1], device=input_ids.device)
        target_lp[e, rows] = lp
        cont_full[e, rows] = full.gather(1, pos[rows, :, None].expand(-1, -1, full.shape[-1]))
    log_w = router.log_weights(target_lp, mask=attention_mask[:, 1:].bool())
    log_w = log_w.gather(2, pos[None].expand(k, -1, -1))
    combined = (mixture_logprobs if combine == "mixture" else product_of_experts)(cont_full, log_w)
    targets = input_ids.gather(1, pos + 1)
    token_lp = combined.gather(-1, targets[..., None]).squeeze(-1)
    greedy = (combined.argmax(-1) == targets) | ~valid
    return token_lp.masked_fill(~valid, 0.0).sum(1), greedy.all(1)


@register_model("xelm")
class XelmLM(TemplateLM):
    """An x-ELM run directory (``xelm.json``) scored with one inference method."""

    def __init__(self, run: str | None = None, method: str | None = None,
                 lang: str | None = None, expert: str | None = None, top_k: int | None = None,
                 route: str | None = None, source_lang: str | None = None,
                 prior: str | None = None, max_length: int | None = None, batch_size=None,
                 device: str | None = None, dtype: str | None = None, verify: bool = True,
                 expert_set=None, **unsupported):
        super().__init__()
        unsupported.pop("max_batch_size", None)  # passed by lm-eval to every model
        if unsupported:
            raise ValueError(f"the xelm model does not support {sorted(unsupported)}; its "
                             "model_args are run, method, lang, expert, route, source_lang, "
                             "top_k, prior, max_length, batch_size, device, dtype, verify")
        if not run and expert_set is None:
            raise ValueError("the xelm model needs run=RUN_DIR (a run with xelm.json)")
        from xelm.evaluate.crosslingual import resolve_route

        self.prompt = {"route": route, "source_lang": source_lang, "test_lang": lang}
        method, lang = resolve_route(route, method, lang, source_lang, expert)
        if method not in GENERATE_METHODS:
            raise ValueError(f"method={method!r} is not an inference method; choose from "
                             f"{', '.join(sorted(GENERATE_METHODS))}")
        if prior not in (None, "manifest"):
            raise ValueError(f"prior={prior!r}: only prior=manifest (the run's cached prior) "
                             "is supported as a model_arg")
        from xelm.experts.manifest import ExpertSet

        device = _device(device)
        if expert_set is None:  # expert_set= (Python only) reuses loaded experts
            expert_set = ExpertSet.load(Path(run), device=device, verify=verify,
                                        dtype=_dtype(dtype))
        self.expert_set = expert_set
        self.tokenizer = self.expert_set.tokenizer
        self.method = method
        self.route = {"lang": lang, "expert": expert, "prior": prior,
                      "top_k": None if top_k is None else int(top_k)}
        self._check_route(lang)
        self.batch_size = _batch_size(batch_size)
        self._device = torch.device(device)
        self._max_length = self._resolve_max_length(max_length)
        self.run = str(run or "<in memory>")

    def _check_route(self, lang: str | None) -> None:
        if lang is not None:
            self.expert_set.expert_for_language(lang)  # UnknownLanguageError lists them
        if self.method == "top1" and lang is None and self.route["expert"] is None \
                and len(self.expert_set) > 1:
            raise ValueError("method=top1 needs lang=<code> (the task's language, one of "
                             f"{', '.join(sorted(self.expert_set.language_to_expert))}) or "
                             "expert=<name> to pick the expert; for a task without one "
                             "language use method=ensemble_posterior")
        if self.method == "top1_langid":  # routes per request; the detector must know them
            langid_experts(self.expert_set, [])
            return
        resolve_method(self.expert_set, self.method, **self.route)  # fail now, not mid-run

    def _routes(self, contexts: list[str]) -> list[tuple[str, dict]]:
        """``(method, route)`` per request: the model's own, or for ``top1_langid`` the
        detected language's expert (``ensemble_posterior`` where none is detected)."""
        if self.method != "top1_langid":
            return [(self.method, self.route)] * len(contexts)
        base = {**self.route, "lang": None, "expert": None}
        return [("ensemble_posterior", base) if expert is None else
                ("top1", {**base, "expert": expert})
                for expert in langid_experts(self.expert_set, contexts)]

    def _resolve_max_length(self, requested) -> int:
        positions = [p for p in map(_model_positions, self.expert_set.models.values()) if p]
        limit = min(positions) if positions else 2048
        if requested is None:
            return limit
        requested = int(requested)
        if not 1 < requested <= limit:
            raise ValueError(f"max_length={requested} must be in 2..{limit} (the experts' "
                             "positions)")
        return requested

    # ---------------------------------------------------------------- lm-eval contract
    @property
    def eot_token_id(self) -> int:
        tok = self.tokenizer
        eot = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
        if eot is None:
            raise ValueError("the run's tokenizer has neither an EOS nor a BOS token, needed "
                             "as the prefix of empty contexts and the default stop")
        return eot

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self):
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return f"xelm:{self.run}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs) -> list[int]:
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **kw)

    def tok_decode(self, tokens) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def get_model_info(self) -> dict:
        return {"xelm_run": self.run, "xelm_method": self.method,
                **{f"xelm_{k}": v for k, v in {**self.route, **self.prompt}.items()
                   if v is not None}}

    # ---------------------------------------------------------------- scoring
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """Score ``(key, context_ids, continuation_ids)`` requests, longest first, in
        right-padded batches; each input is cut from the left to ``max_length`` tokens."""
        items = []
        for _, ctx, cont in requests:
            if len(cont) > self.max_length:
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit the "
                                 f"model's {self.max_length} positions; shorten the task's "
                                 "continuations (xelm tasks build --max-continuation-tokens)")
            whole = (ctx + cont)[-(self.max_length + 1):]
            items.append((whole, len(cont)))
        langid = self.method == "top1_langid"  # only then is the context text needed
        routes = self._routes([self.tok_decode(ctx) if langid else "" for _, ctx, _ in requests])
        # batches share a route; within a route, longest first
        order = sorted(range(len(items)), key=lambda i: (repr(routes[i]), -len(items[i][0])))
        batches, start = [], 0
        while start < len(order):
            route = routes[order[start]]
            chunk = [i for i in order[start:start + self.batch_size] if routes[i] == route]
            batches.append(chunk)
            start += len(chunk)
        results: list = [None] * len(items)
        bar = tqdm(total=len(items), desc="xelm loglikelihood", disable=disable_tqdm)
        for chunk in batches:
            scores, greedy = self._score_batch([items[i] for i in chunk], *routes[chunk[0]])
            for i, s, g in zip(chunk, scores.tolist(), greedy.tolist()):
                results[i] = (float(s), bool(g))
                key = requests[i][0]
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, results[i])
            bar.update(len(chunk))
        bar.close()
        return results

    def _score_batch(self, batch: list[tuple[list[int], int]], method: str, route: dict):
        width = max(len(ids) for ids, _ in batch)
        pad = next((t for t in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
                    if t is not None), 0)  # any id: padding sits after every scored token
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros(len(batch), width, dtype=torch.long, device=self.device)
        for row, (seq, _) in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        return continuation_scores(self.expert_set, ids, mask, [c for _, c in batch],
                                   method, **route)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in lm-eval's disjoint rolling windows."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owner = [], []
        for i, req in enumerate(requests):
            tokens = self.tok_encode(req.args[0])
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    tokens, self.prefix_token_id, self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for i, (score, _) in zip(owner, scores):
            totals[i] += score
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---------------------------------------------------------------- generation
    def _gen_options(self, gen_kwargs: dict) -> dict:
        extra = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if extra:
            raise ValueError(f"generation options {extra} are not supported by the xelm "
                             f"model; it supports {', '.join(GEN_KWARGS)}")
        until = gen_kwargs.get("until") or []  # generation also ends at the EOS token
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0)
        sample = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        new = min(int(gen_kwargs.get("max_gen_toks", 256)), self.max_length - 1)
        return {"until": [u for u in until if u], "max_new_tokens": new, "do_sample": sample,
                "temperature": temperature if sample else 1.0}

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) continuations, batched by prompt length, options and route,
        cut at the first stop string."""
        from xelm.infer.generation import generate

        jobs: dict[tuple, list[tuple[int, list[int]]]] = {}
        options = {}
        routes = self._routes([req.args[0] for req in requests])
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            opts = self._gen_options(dict(gen_kwargs or {}))
            ids = self.tok_encode(context)[-(self.max_length - opts["max_new_tokens"]):] or \
                [self.prefix_token_id]
            key = (len(ids), repr(sorted(opts.items())), repr(routes[i]))
            options[key] = (opts, routes[i])
            jobs.setdefault(key, []).append((i, ids))
        out: list = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="xelm generate_until", disable=disable_tqdm)
        for key, members in jobs.items():
            opts, (method, route) = options[key]
            route = {k: v for k, v in route.items() if k != "top_k"}
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                prompt = torch.tensor([ids for _, ids in chunk], dtype=torch.long,
                                      device=self.device)
                tokens = generate(self.expert_set, prompt, method, **route,
                                  experts_top_k=self.route.get("top_k"),
                                  max_new_tokens=opts["max_new_tokens"],
                                  do_sample=opts["do_sample"], temperature=opts["temperature"],
                                  eos_token_id=self.tokenizer.eos_token_id)
                for (i, _), row in zip(chunk, tokens[:, prompt.shape[1]:].tolist()):
                    out[i] = _cut(self.tok_decode(row), opts["until"])
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
                bar.update(len(chunk))
        bar.close()
        return out


def _cut(text: str, until: list[str]) -> str:
    cuts = [text.find(stop) for stop in until if stop in text]
    return text[:min(cuts)] if cuts else text


def run_cli(argv: list[str]) -> None:
    """lm-eval's command line with the ``xelm`` model registered (``xelm lm-eval ...``)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *argv]
    cli_evaluate()
