"""The config sections of the data and the model: corpus, tokenizer, model shape."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from xelm.config.base import Count, Section


class SyntheticConfig(Section):
    """The embedded default corpus: artificial languages generated from a seed."""

    languages: int = Field(12, ge=2, le=16)
    """how many artificial languages (in families of related ones)"""
    bytes_per_language: Count = 1_000_000
    """bytes of text generated per language (5M, 500k, 1.5e6 accepted)"""


class HFDatasetConfig(Section):
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


class CorpusConfig(Section):
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


class TokenizerConfig(Section):
    vocab_size: int = Field(4096, ge=260)
    """size of the byte-level BPE vocabulary trained on the corpus"""
    sample_bytes_per_language: Count = 2_000_000
    """bytes per language the tokenizer is trained on (a balanced sample)"""


class ModelConfig(Section):
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
