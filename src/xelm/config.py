"""Experiment configuration: one YAML file, validated up front.

Imports no torch, so a misspelt key or a bad value is reported in milliseconds, before
any model is built. Every section forbids unknown keys and suggests the closest valid
one. ``load(path, overrides)`` applies ``--set dotted.key=value`` overrides (values parsed
as YAML) and returns a :class:`Config` with every default filled in.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says how."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SyntheticConfig(_Section):
    """The embedded default corpus: artificial languages generated from a seed."""

    languages: int = Field(12, ge=2, le=16)
    bytes_per_language: PositiveInt = 1_000_000


class HFDatasetConfig(_Section):
    """A Hugging Face dataset per language (`name`/`config` may contain ``{lang}``)."""

    name: str = "allenai/c4"
    config: str | None = "{lang}"
    split: str = "train"
    text_field: str = "text"
    streaming: bool = True
    data_files: dict[str, str] | None = None
    max_documents: PositiveInt | None = 50_000


class CorpusConfig(_Section):
    source: Literal["synthetic", "dir", "hf", "unlabelled"] = "synthetic"
    path: str | None = None
    languages: list[str] | None = None
    max_bytes_per_language: PositiveInt | None = None
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    # random: per language, by a seeded permutation. every_nth: the same line numbers in
    # every language. by_key: the same document keys (a <code>.keys sidecar beside
    # <code>.txt, or a key/id field) held out in every language; see xelm.data.split.
    split: Literal["random", "every_nth", "by_key"] = "random"
    # the seed of the split (default: random_seed); fix it to compare seeds on one test set
    split_seed: int | None = None
    synthetic: SyntheticConfig = SyntheticConfig()
    hf: HFDatasetConfig = HFDatasetConfig()

    @model_validator(mode="after")
    def _path_needed(self) -> "CorpusConfig":
        if self.source == "dir" and not self.path:
            raise ValueError("corpus.source is 'dir' but corpus.path is not set: give the "
                             "directory of <code>.txt/.jsonl/.parquet files")
        if self.source == "unlabelled" and not (self.path and self.languages):
            raise ValueError("corpus.source is 'unlabelled' (documents sorted by language "
                             "identification): set corpus.path (a .txt/.jsonl/.parquet file "
                             "or a directory of them) and corpus.languages (the languages to "
                             "keep, e.g. [en, de, sw])")
        return self


class TokenizerConfig(_Section):
    vocab_size: int = Field(4096, ge=260)
    sample_bytes_per_language: PositiveInt = 2_000_000


class ModelConfig(_Section):
    """A Hugging Face base model (`base`), or the shape of a small one to pretrain."""

    base: str | None = None
    trust_remote_code: bool = False
    arch: Literal["llama", "xglm"] = "llama"
    hidden_size: PositiveInt = 64
    layers: PositiveInt = 2
    heads: PositiveInt = 4
    intermediate_size: PositiveInt = 256
    context: PositiveInt = 128

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden_size % self.heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.heads ({self.heads})")
        return self


class OptimConfig(_Section):
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_fraction: float = Field(0.02, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: PositiveInt = 16
    grad_clip: float = Field(1.0, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)


class SeedConfig(OptimConfig):
    """Pretraining of the seed model on all languages (skipped when model.base is set)."""

    tokens: PositiveInt = 2_000_000


class TrainConfig(OptimConfig):
    """Dense baseline and experts; the experts share `tokens` equally."""

    tokens: PositiveInt = 4_000_000
    # the dense baseline's learning rate (default: lr, the experts'); tune each on validation
    dense_lr: float | None = Field(None, gt=0)
    alpha: float = Field(1.0, gt=0, le=1)
    save_every: PositiveInt = 200
    log_every: PositiveInt = 50
    threads: PositiveInt | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Where the dense and expert jobs run: here ("local": one after another, or `parallel`
    # at a time in subprocesses with the cores split), or one Ray task per job.
    launcher: Literal["local", "ray"] = "local"
    parallel: PositiveInt = 1
    resources_per_expert: dict[str, float] = {"CPU": 1}   # Ray resources of each job
    ray_address: str | None = None                        # None: start a local Ray


class AllocateConfig(_Section):
    method: Literal["languages", "typology", "tfidf"] = "typology"
    experts: PositiveInt = 4
    groups: dict[str, list[str]] | None = None
    features: str = "syntax_average"
    features_file: str | None = None
    linkage: Literal["paper", "average", "complete", "single", "ward"] = "paper"
    fit_docs: PositiveInt = 20_000
    analyzer: Literal["char_wb", "char", "word"] = "char_wb"
    ngram_range: tuple[int, int] = (2, 4)
    max_features: PositiveInt = 50_000


class HMRConfig(_Section):
    """Hierarchical Multi-Round training (HMR): experts branch from earlier-round experts.

    ``rounds`` is the number of experts of each round, read off the typology tree (e.g.
    ``[2, 4]``: round 1 trains the two halves of the tree from the seed, round 2 branches
    each half's expert into its two quarters); the last equals ``allocate.experts``.
    ``budget_fractions`` is each round's share of ``train.tokens`` (default: equal).
    Unset ``rounds`` (the default) means flat x-BTM: every expert branches from the seed.
    """

    rounds: list[PositiveInt] | None = None
    budget_fractions: list[float] | None = None

    @model_validator(mode="after")
    def _schedule(self) -> "HMRConfig":
        if self.rounds is None:
            if self.budget_fractions is not None:
                raise ValueError("hmr.budget_fractions is set but hmr.rounds is not: give the "
                                 "number of experts per round, e.g. hmr.rounds=[2, 4]")
            return self
        if len(self.rounds) < 2:
            raise ValueError(f"hmr.rounds={self.rounds} has one round, which is flat x-BTM: "
                             "give at least two rounds (e.g. [2, 4]) or leave hmr out")
        if any(b < a for a, b in zip(self.rounds, self.rounds[1:])):
            raise ValueError(f"hmr.rounds={self.rounds}: each round must have at least as "
                             "many experts as the one before (the tree only splits)")
        fractions = self.budget_fractions
        if fractions is not None:
            if len(fractions) != len(self.rounds):
                raise ValueError(f"hmr.budget_fractions has {len(fractions)} values but "
                                 f"hmr.rounds has {len(self.rounds)} rounds; give one per round")
            if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
                raise ValueError(f"hmr.budget_fractions={fractions} must be positive and sum "
                                 f"to 1 (they sum to {sum(fractions):.6g}): each is a round's "
                                 "share of train.tokens")
        return self

    def fractions(self) -> list[float]:
        """Each round's share of ``train.tokens`` (equal shares unless configured)."""
        if self.budget_fractions is not None:
            return list(self.budget_fractions)
        return [1 / len(self.rounds)] * len(self.rounds) if self.rounds else []


EVAL_METHODS = ("top1", "top1_langid", "ensemble", "ensemble_posterior",
                "ensemble_posterior_context", "ensemble_tfidf", "top1_tfidf", "product_of_experts")
EvalMethod = Literal["top1", "top1_langid", "ensemble", "ensemble_posterior",
                     "ensemble_posterior_context", "ensemble_tfidf", "top1_tfidf",
                     "product_of_experts"]


class EvalConfig(_Section):
    """``methods``: how the expert set is scored (``xelm_<method>`` in results.json).

    ``top1`` routes by the known language; ``top1_langid`` by the language a language
    identifier (lingua) detects in the preceding context, so it needs no label but only
    works for languages lingua knows; ``ensemble`` mixes all experts uniformly;
    ``ensemble_posterior`` weights them by BTM's posterior given the prefix;
    ``ensemble_posterior_context`` also counts the preceding block as evidence (its prior is
    the posterior after that block);
    ``ensemble_tfidf``/``top1_tfidf`` by c-BTM's softmax(-d²/T) over TF-IDF distances of
    the preceding context to each expert's centre; ``product_of_experts`` is a weighted
    geometric mean.
    """

    methods: list[EvalMethod] = ["top1", "ensemble"]
    max_tokens_per_language: PositiveInt | None = 50_000
    batch_size: PositiveInt = 16
    temperature: float = Field(0.1, gt=0)
    top_k: PositiveInt | None = None


class Config(_Section):
    out_dir: str = "runs/demo"
    random_seed: int = 0
    corpus: CorpusConfig = CorpusConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    seed: SeedConfig = SeedConfig()
    train: TrainConfig = TrainConfig()
    allocate: AllocateConfig = AllocateConfig()
    eval: EvalConfig = EvalConfig()
    hmr: HMRConfig = HMRConfig()

    @model_validator(mode="after")
    def _langid_needs_real_languages(self) -> "Config":
        if "top1_langid" in self.eval.methods and self.corpus.source == "synthetic":
            raise ValueError("eval.methods has top1_langid, but the synthetic corpus' "
                             "languages are unknown to any language identifier: drop it, or "
                             "use top1_tfidf / ensemble_posterior, which need no label")
        return self

    @model_validator(mode="after")
    def _hmr_fits_allocation(self) -> "Config":
        rounds = self.hmr.rounds
        if rounds is None:
            return self
        if self.allocate.method != "typology":
            raise ValueError(f"hmr.rounds needs allocate.method=typology (HMR reads its rounds "
                             f"off the typology tree), not {self.allocate.method!r}; set "
                             "allocate.method=typology or leave hmr out")
        if rounds[-1] != self.allocate.experts:
            raise ValueError(f"hmr.rounds={rounds} ends with {rounds[-1]} experts but "
                             f"allocate.experts={self.allocate.experts}: the last round is the "
                             "final expert set, so make them equal")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=[x, y]"`` -> ``("a.b", ["x", "y"])``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from exc
    return key, value


def _section_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _section_fields(loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" Did you mean '{'.'.join(map(str, loc[:-1] + (close[0],)))}'?" if close else ""
            lines.append(f"unknown config key '{dotted}'.{hint} Valid keys here: {', '.join(known)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{dotted}: {msg} (got {err.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def from_dict(data: dict) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def load(path: str | Path | None, overrides: list[str] | None = None,
         out_dir: str | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not a valid YAML file ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    if out_dir is not None:
        data["out_dir"] = out_dir
    return from_dict(data)
