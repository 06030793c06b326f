"""Hugging Face ``datasets`` as a corpus source: one dataset (or local files) per language.

``corpus.hf.name``/``config`` may contain ``{lang}`` (the code as the user wrote it); local
files go through the ``json``/``text``/``parquet`` builders with ``corpus.hf.data_files``
(one file or glob per language). Rows are read one by one (streamed when
``corpus.hf.streaming``), cleaned like file records (:func:`xelm.data.formats.clean`),
blank ones skipped, and reading stops at ``corpus.hf.max_documents`` and
``corpus.max_bytes_per_language``. ``datasets`` is imported only here, and only when used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xelm.data.errors import CorpusError
from xelm.data.formats import NO_KEY_FIELD, CappedRecords, Record, clean, record_key
from xelm.data.languages import normalize_list

if TYPE_CHECKING:
    from xelm.config import CorpusConfig, HFDatasetConfig

# `datasets` builders that read local files: they cannot guess which file is which language.
LOCAL_BUILDERS = frozenset({"json", "text", "parquet", "csv", "arrow", "pandas", "xml",
                            "webdataset"})
NO_KEYS = f"rows have {NO_KEY_FIELD}"


@dataclass(frozen=True)
class HFLanguage:
    """Where one language's documents come from."""

    lang: str  # the normalised code
    code: str  # the code as written in corpus.languages (what {lang} becomes)
    data_files: str | None

    def where(self, hf: HFDatasetConfig) -> str:
        name, config = self.name_and_config(hf)
        return f"HF dataset {name!r} (config {config!r}, split {hf.split!r}) for {self.lang!r}"

    def name_and_config(self, hf: HFDatasetConfig) -> tuple[str, str | None]:
        return hf.name.format(lang=self.code), hf.config.format(lang=self.code) if hf.config else None


def hf_languages(cfg: CorpusConfig) -> list[HFLanguage]:
    """The languages of ``cfg.languages``, each with its data files; checked up front."""
    if not cfg.languages:
        raise CorpusError("corpus.source is 'hf' but corpus.languages is not set: list the "
                          "languages to load, e.g. corpus.languages=[en, de]")
    hf = cfg.hf
    langs = normalize_list(cfg.languages, "corpus.languages")
    files = None
    if hf.data_files is not None:
        keys = normalize_list(hf.data_files, "corpus.hf.data_files")
        files = dict(zip(keys, hf.data_files.values()))
    elif hf.name in LOCAL_BUILDERS:
        raise CorpusError(f"corpus.hf.name is the local builder {hf.name!r}, which needs "
                          "corpus.hf.data_files: one file (or glob) per language, e.g. "
                          "{en: data/en.jsonl}")
    written = dict(zip(langs, cfg.languages))
    out = []
    for lang in langs:
        if files is not None and lang not in files:
            raise CorpusError(f"corpus.hf.data_files has no entry for language {lang!r} "
                              f"(it has {', '.join(files)}); add one")
        out.append(HFLanguage(lang, written[lang], files[lang] if files else None))
    return out


def hf_records(hf: HFDatasetConfig, item: HFLanguage, max_bytes: int | None,
               keyed: bool = False) -> CappedRecords:
    """(key, document) of one language's rows, streamed and capped."""
    import datasets

    name, config = item.name_and_config(hf)
    where = item.where(hf)
    try:
        dataset = datasets.load_dataset(name, config, split=hf.split, streaming=hf.streaming,
                                        data_files=item.data_files)
    except Exception as exc:  # datasets raises many types: hub, network, files, schema
        hint = ("check corpus.hf.data_files" if hf.name in LOCAL_BUILDERS else "without hub "
                "access use corpus.hf.name=json|text|parquet with corpus.hf.data_files")
        raise CorpusError(f"could not load {where}: {type(exc).__name__}: {exc}; "
                          f"{hint}") from exc
    return CappedRecords(_rows(dataset, hf.text_field, where, keyed), max_bytes,
                         hf.max_documents)


def _rows(dataset, field: str, where: str, keyed: bool) -> Iterator[Record]:
    for row in dataset:
        text = _hf_text(row, field, where)
        if text:
            yield (record_key(row) if keyed else None), text


def read_hf(cfg: CorpusConfig,
            keyed: bool = False) -> dict[str, tuple[list[str], list[str] | None]]:
    """(documents, keys) of every language: one ``datasets.load_dataset`` each."""
    from xelm.data.files import check_nonempty, split_records

    out = {}
    for item in hf_languages(cfg):
        records = hf_records(cfg.hf, item, cfg.max_bytes_per_language, keyed)
        kept = list(records)
        where = item.where(cfg.hf)
        check_nonempty(len(kept), records.cut, where, cfg.max_bytes_per_language)
        out[item.lang] = split_records(kept, where, keyed, NO_KEYS)
    return out


def _hf_text(row: dict, field: str, where: str) -> str:
    if field not in row:
        raise CorpusError(f"{where}: rows have no field {field!r} (fields: "
                          f"{', '.join(row)}); set corpus.hf.text_field")
    text = row[field]
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"{where}: field {field!r} is a {type(text).__name__}, not text")
    return clean(text or "")
