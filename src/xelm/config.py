"""Experiment configuration: one YAML file, validated up front.

Imports no torch, so a misspelt key or a bad value is reported in milliseconds, before
any model is built. Every section forbids unknown keys and suggests the closest valid
one. ``load(path, overrides)`` applies ``--set dotted.key=value`` overrides (values parsed
as YAML) and returns a :class:`Config` with every default filled in.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, ValidationError,
                      model_validator)

from xelm.methods import EVAL_METHODS


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says how."""


class _Section(BaseModel):
    # each field's docstring is its help (`xelm config show`)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}


def parse_count(value: Any) -> Any:
    """A token or byte count as people write it: ``5M``, ``500k``, ``1.5e6``, ``2_000_000``.

    Returns an int when ``value`` names a whole number; anything else is returned as it
    is, for pydantic to refuse with its own message."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        scale = _SUFFIXES.get(text[-1:].lower(), 1) if text else 1
        number = text[:-1] if scale != 1 else text
        try:
            amount = float(number) * scale
        except ValueError:
            return value
        if amount.is_integer():
            return int(amount)
    return value


# A positive count of tokens or bytes: 5M, 500k, 1.5e6 and 5000000 are all accepted.
Count = Annotated[PositiveInt, BeforeValidator(parse_count)]


class SyntheticConfig(_Section):
    """The embedded default corpus: artificial languages generated from a seed."""

    languages: int = Field(12, ge=2, le=16)
    """how many artificial languages (in families of related ones)"""
    bytes_per_language: Count = 1_000_000
    """bytes of text generated per language (5M, 500k, 1.5e6 accepted)"""


class HFDatasetConfig(_Section):
    """A Hugging Face dataset per language (`name`/`config` may contain ``{lang}``)."""

    name: str = "allenai/c4"
    """dataset id on the hub or a local path; may contain {lang}"""
    config: str | None = "{lang}"
    """dataset configuration; may contain {lang}"""
    split: str = "train"
    """the dataset split to read documents from"""
    text_field: str = "text"
    """the field holding each document's text"""
    streaming: bool = True
    """stream the dataset instead of downloading it whole"""
    data_files: dict[str, str] | None = None
    """per-language data files ({lang: path}) for local datasets"""
    max_documents: Count | None = 50_000
    """read at most this many documents per language"""


class CorpusConfig(_Section):
    source: Literal["synthetic", "dir", "hf", "unlabelled"] = "synthetic"
    """synthetic (embedded default) | dir (a folder of <code>.txt/.jsonl/.parquet) | hf (a dataset per language) | unlabelled (one pile, sorted by language identification)"""
    path: str | None = None
    """the corpus folder (dir) or file/folder (unlabelled)"""
    languages: list[str] | None = None
    """language codes to use (default: every language found)"""
    max_bytes_per_language: Count | None = None
    """read at most this many bytes per language"""
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    """share of each language's documents held out for validation"""
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    """share of each language's documents held out for test"""
    # random: per language, by a seeded permutation. every_nth: the same line numbers in
    # every language. by_key: the same document keys (a <code>.keys sidecar beside
    # <code>.txt, or a key/id field) held out in every language; see xelm.data.split.
    split: Literal["random", "every_nth", "by_key"] = "random"
    """random (seeded, per language) | every_nth (same line numbers everywhere) | by_key (same document keys held out in every language: <code>.keys or a key/id field)"""
    # the seed of the split (default: random_seed); fix it to compare seeds on one test set
    split_seed: int | None = None
    """seed of the held-out split (default: random_seed); fix it to compare seeds on one test set"""
    num_proc: PositiveInt | None = None
    """processes that tokenise the corpus in prepare (default: one per 8 MB of text, at most the cores); outputs do not depend on it"""
    synthetic: SyntheticConfig = SyntheticConfig()
    """the synthetic corpus (source: synthetic)"""
    hf: HFDatasetConfig = HFDatasetConfig()
    """the Hugging Face dataset (source: hf)"""

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
    """size of the byte-level BPE vocabulary trained on the corpus"""
    sample_bytes_per_language: Count = 2_000_000
    """bytes per language the tokenizer is trained on (a balanced sample)"""


class ModelConfig(_Section):
    """A Hugging Face base model (`base`), or the shape of a small one to pretrain."""

    base: str | None = None
    """a Hugging Face model (hub id or folder) to branch from instead of pretraining a seed"""
    trust_remote_code: bool = False
    """allow the base model's own code (off unless you set it)"""
    arch: Literal["llama", "xglm"] = "llama"
    """architecture of a pretrained-here seed: llama | xglm"""
    hidden_size: PositiveInt = 64
    """hidden size of the seed model"""
    layers: PositiveInt = 2
    """transformer layers"""
    heads: PositiveInt = 4
    """attention heads (must divide hidden_size)"""
    intermediate_size: PositiveInt = 256
    """feed-forward size"""
    context: PositiveInt = 128
    """tokens per training sequence and evaluation block"""

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden_size % self.heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.heads ({self.heads})")
        return self


class OptimConfig(_Section):
    lr: float = Field(3e-3, gt=0)
    """peak learning rate (AdamW, cosine schedule)"""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """final learning rate as a share of the peak"""
    warmup_fraction: float = Field(0.02, ge=0, lt=1)
    """share of the steps spent warming up"""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay"""
    batch_size: PositiveInt = 16
    """sequences per optimizer step"""
    grad_clip: float = Field(1.0, gt=0)
    """gradient norm clipping"""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas"""


class SeedConfig(OptimConfig):
    """Pretraining of the seed model on all languages (skipped when model.base is set)."""

    tokens: Count = 2_000_000
    """training tokens of the seed model (5M, 500k, 1.5e6 accepted)"""


class SlurmConfig(_Section):
    """Resources of each training job under ``train.launcher: slurm`` (one array job per
    round of experts, through submitit; preempted or timed-out jobs are requeued and resume
    from their last checkpoint)."""

    partition: str | None = None
    """SLURM partition (default: the cluster's default)"""
    account: str | None = None
    """account charged for the jobs (default: yours)"""
    qos: str | None = None
    """quality of service (default: the cluster's)"""
    time_min: PositiveInt = 1440
    """time limit of each job in minutes; a job that runs out is requeued and resumes"""
    gpus_per_job: int = Field(0, ge=0)
    """GPUs of each job (one node)"""
    processes_per_job: PositiveInt | None = None
    """processes of each job (default: one per GPU, at least one); more than one: DDP between them"""
    cpus_per_job: PositiveInt = 8
    """CPU cores of each job (split between its processes; torch threads follow)"""
    mem_gb: PositiveInt | None = None
    """memory of each job in GB (default: the partition's)"""
    constraint: str | None = None
    """node features required (sbatch --constraint)"""
    array_parallelism: PositiveInt = 64
    """jobs of one array that may run at once"""
    max_requeues: int = Field(3, ge=0)
    """times a job is requeued after preemption or time-out before it counts as failed"""
    setup: list[str] = []
    """shell lines run before each job (e.g. [module load cuda, source .venv/bin/activate])"""
    extra: dict[str, str | int] = {}
    """further sbatch options, e.g. {exclude: node07, mail-type: END}"""
    cluster: Literal["slurm", "local"] = "slurm"
    """slurm (sbatch) | local (submitit's local executor: the same path without a cluster, for trying it out)"""
    folder: str | None = None
    """where submitit writes job scripts and logs (default: RUN/slurm)"""


class TrainConfig(OptimConfig):
    """Dense baseline and experts; the experts share `tokens` equally."""

    tokens: Count = 4_000_000
    """training tokens of the dense baseline; the experts share the same total (5M, 500k, 1.5e6 accepted)"""
    # the dense baseline's learning rate (default: lr, the experts'); tune each on validation
    dense_lr: float | None = Field(None, gt=0)
    """the dense baseline's learning rate (default: lr, the experts'); tune each on validation data"""
    alpha: float = Field(1.0, gt=0, le=1)
    """language sampling: p(lang) proportional to (token share)^alpha"""
    expert_budget: Literal["equal", "proportional"] = "equal"
    """how the experts share `tokens`: equal (tokens / k each) | proportional (to each expert's share of dense training: every language gets as many tokens from its expert as from dense)"""
    save_every: PositiveInt = 200
    """checkpoint every this many steps (resume point)"""
    log_every: PositiveInt = 50
    """log loss, learning rate and throughput every this many steps"""
    eval_every: PositiveInt | None = 500
    """validation loss (fixed blocks of the job's languages' valid split) every this many steps (null: never)"""
    report_to: Literal["tensorboard", "wandb", "trackio", "none"] = "tensorboard"
    """where training curves go, through accelerate's trackers (RUN/tensorboard/<job> for tensorboard)"""
    threads: PositiveInt | None = None
    """torch threads per job (default: torch's choice)"""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp32 | bf16 | fp16 (bf16/fp16 on accelerators)"""
    # Where the dense and expert jobs run: here ("local": one after another, or `parallel`
    # at a time in subprocesses with the cores split), or one Ray task per job.
    launcher: Literal["local", "ray", "slurm"] = "local"
    """where jobs run: local (here) | ray (one Ray task per job) | slurm (one array job per round, see train.slurm)"""
    parallel: PositiveInt = 1
    """local jobs at a time (subprocesses, cores split between them)"""
    resources_per_expert: dict[str, float] = {"CPU": 1}   # Ray resources of each job
    """Ray resources of each job"""
    ray_address: str | None = None                        # None: start a local Ray
    """Ray cluster to join (default: start a local Ray)"""
    slurm: SlurmConfig = SlurmConfig()
    """SLURM resources of each job (train.launcher: slurm)"""
    grad_accum_steps: PositiveInt = 1
    """micro-batches per optimizer step, for every job (seed too): each batch is split into this many equal parts, so batch, steps and tokens stay the same and only activation memory shrinks; must divide train.batch_size and seed.batch_size"""
    gradient_checkpointing: bool = False
    """recompute each layer's activations in the backward pass, for every job: far less activation memory for about a third more compute"""

    @model_validator(mode="after")
    def _accumulation_divides(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"train.batch_size ({self.batch_size}) must be divisible by "
                             f"train.grad_accum_steps ({self.grad_accum_steps}): each batch "
                             "is split into that many equal micro-batches")
        return self


class AllocateConfig(_Section):
    method: Literal["languages", "typology", "tfidf"] = "typology"
    """languages (one expert each) | typology (URIEL clusters) | tfidf (balanced TF-IDF document clusters)"""
    experts: PositiveInt = 4
    """number of experts"""
    groups: dict[str, list[str]] | None = None
    """explicit expert groups {name: [languages]} (overrides the method)"""
    features: str = "syntax_average"
    """URIEL feature set for typology (lang2vec's names; the *_knn sets need xelm[lang2vec])"""
    features_file: str | None = None
    """a CSV of typology features (language,<features>...) instead of URIEL"""
    linkage: Literal["paper", "average", "complete", "single", "ward"] = "paper"
    """clustering of the typology tree: paper (the paper's pairs) | average | complete | single | ward"""
    fit_docs: PositiveInt = 20_000
    """documents the TF-IDF router is fitted on, at most"""
    analyzer: Literal["char_wb", "char", "word"] = "char_wb"
    """TF-IDF analyzer: char_wb | char | word"""
    ngram_range: tuple[int, int] = (2, 4)
    """TF-IDF n-gram range"""
    max_features: PositiveInt = 50_000
    """TF-IDF vocabulary size, at most"""


class HMRConfig(_Section):
    """Hierarchical Multi-Round training (HMR): experts branch from earlier-round experts.

    ``rounds`` is the number of experts of each round, read off the typology tree (e.g.
    ``[2, 4]``: round 1 trains the two halves of the tree from the seed, round 2 branches
    each half's expert into its two quarters); the last equals ``allocate.experts``.
    ``budget_fractions`` is each round's share of ``train.tokens`` (default: equal).
    Unset ``rounds`` (the default) means flat x-BTM: every expert branches from the seed.
    """

    rounds: list[PositiveInt] | None = None
    """experts per round, read off the typology tree (e.g. [2, 8]); unset: flat x-BTM"""
    budget_fractions: list[float] | None = None
    """each round's share of train.tokens (default: equal)"""

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


EvalMethod = Literal[EVAL_METHODS]  # the registry's names (xelm.methods)


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
    """how the expert set is scored (a list, e.g. [top1, ensemble_posterior])"""
    max_tokens_per_language: Count | None = 50_000
    """test tokens scored per language (whole documents)"""
    batch_size: PositiveInt = 16
    """blocks per forward pass when scoring"""
    temperature: float = Field(0.1, gt=0)
    """temperature of TF-IDF routing weights softmax(-d^2/T)"""
    top_k: PositiveInt | None = None
    """keep only the k heaviest experts in posterior/TF-IDF ensembles (default: all)"""


class Config(_Section):
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
