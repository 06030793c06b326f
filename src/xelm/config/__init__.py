"""Experiment configuration: one YAML file, validated up front.

Imports no torch, so a misspelt key or a bad value is reported in milliseconds, before
any model is built. Every section forbids unknown keys and suggests the closest valid
one. ``load(path, overrides)`` applies ``--set dotted.key=value`` overrides (values parsed
as YAML) and returns a :class:`Config` with every default filled in. The sections are in
:mod:`xelm.config.data` (corpus, tokenizer, model) and :mod:`xelm.config.training`
(seed, train, allocate, hmr, eval); their base and counts in :mod:`xelm.config.base`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from xelm.config.base import ConfigError, Count, Section, parse_count  # noqa: F401
from xelm.config.data import (CorpusConfig, HFDatasetConfig, ModelConfig,  # noqa: F401
                              SyntheticConfig, TokenizerConfig)
from xelm.config.training import (AllocateConfig, EvalConfig, EvalMethod,  # noqa: F401
                                  HMRConfig, OptimConfig, SeedConfig, SlurmConfig,
                                  TrainConfig)
from xelm.methods import EVAL_METHODS  # noqa: F401


class Config(Section):
    out_dir: str = "runs/demo"
    """the run directory (--out overrides it)"""
    random_seed: int = 0
    """seed of initialisation, data order and (unless split_seed) the split"""
    corpus: CorpusConfig = CorpusConfig()
    """where the text comes from and how it is split"""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """the shared tokenizer"""
    model: ModelConfig = ModelConfig()
    """the seed model's shape, or a base model"""
    seed: SeedConfig = SeedConfig()
    """pretraining of the seed model"""
    train: TrainConfig = TrainConfig()
    """the dense baseline and the experts"""
    allocate: AllocateConfig = AllocateConfig()
    """which expert gets which languages or documents"""
    eval: EvalConfig = EvalConfig()
    """test-set scoring"""
    hmr: HMRConfig = HMRConfig()
    """Hierarchical Multi-Round training"""

    @model_validator(mode="after")
    def _langid_needs_real_languages(self) -> "Config":
        if "top1_langid" in self.eval.methods and self.corpus.source == "synthetic":
            raise ValueError("eval.methods has top1_langid, but the synthetic corpus' "
                             "languages are unknown to any language identifier: drop it, or "
                             "use top1_tfidf / ensemble_posterior, which need no label")
        return self

    @model_validator(mode="after")
    def _seed_batch_splits(self) -> "Config":
        k = self.train.grad_accum_steps  # applies to the seed job too
        if not self.model.base and self.seed.batch_size % k:
            raise ValueError(f"seed.batch_size ({self.seed.batch_size}) must be divisible by "
                             f"train.grad_accum_steps ({k}): each batch is split into that "
                             "many micro-batches")
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
    """the seed model's shape, or a base model"""
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
        elif err["type"] == "list_type" and isinstance(err.get("input"), str):
            lines.append(f"{dotted}: a list: write [{err['input']}] (got {err['input']!r})")
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


def describe(cfg: Config) -> str:
    """``cfg`` as YAML with every key, each with its help and default as a comment (the
    field docstrings of this module: ``xelm config show``). It loads back to ``cfg``."""
    lines: list[str] = []

    def scalar(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
        return text.strip().removesuffix("...").strip()

    def walk(model: BaseModel, indent: int) -> None:
        dumped = model.model_dump(mode="json")
        for name, field in type(model).model_fields.items():
            pad, help_ = "  " * indent, field.description or ""
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:" + (f"  # {help_}" if help_ else ""))
                walk(value, indent + 1)
                continue
            default = field.get_default(call_default_factory=True)
            default = scalar(default.model_dump(mode="json") if isinstance(default, BaseModel)
                             else (list(default) if isinstance(default, tuple) else default))
            said = "(default" in help_  # the help says what the default means
            lines.append(f"{pad}{name}: {scalar(dumped[name])}  # {help_}"
                         + ("" if said else f" (default: {default})"))

    walk(cfg, 0)
    return "\n".join(lines) + "\n"
