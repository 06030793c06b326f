"""The config sections of training, allocation and evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from xelm.config.base import Count, Section
from xelm.methods import EVAL_METHODS


class OptimConfig(Section):
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


class SlurmConfig(Section):
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


class AllocateConfig(Section):
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


class HMRConfig(Section):
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


class EvalConfig(Section):
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
