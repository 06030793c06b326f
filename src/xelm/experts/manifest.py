"""``xelm.json``: the expert set of a run, and :class:`ExpertSet`, its loaded form.

The manifest pins everything inference needs: which folder holds each expert, which
languages it serves, where it came from (parent, round, tokens, FLOPs), the SHA-256 of
every weight file and of the tokenizer. Loading verifies all of it, so a run directory
that was edited, partly copied or tampered with fails loudly instead of producing
plausible but wrong numbers. Schema (``format`` 1)::

    {"format": 1, "tokenizer": "data/tokenizer", "tokenizer_sha256": "...",
     "experts": [{"name", "path", "languages", "parent", "round", "tokens", "flops",
                  "files": {"model.safetensors": "<sha256>"}}],
     "language_to_expert": {lang: expert}, "prior": null | {expert: weight},
     "tfidf": null | "relative/dir"}

Unknown keys are kept (readers ignore them), so later versions can add fields.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xelm.io import write_json
from xelm.experts.store import (check_folder_inside, check_inside, load_causal_lm,
                                require_safetensors, sha256_file)

log = logging.getLogger(__name__)

MANIFEST_NAME = "xelm.json"
FORMAT = 1
_TOP_KEYS = ("format", "tokenizer", "tokenizer_sha256", "experts", "language_to_expert")
_EXPERT_KEYS = ("name", "path", "languages", "files")


class ManifestError(ValueError):
    """``xelm.json`` is missing, malformed, or does not match the files on disk."""


class UnknownLanguageError(ValueError, KeyError):
    """A language no expert serves; the message lists the languages that are served.

    A ``ValueError`` (bad user input: the CLI prints it as one line, exit 2) and, for
    callers that look languages up like a mapping, a ``KeyError``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


# --------------------------------------------------------------------------- writing
def _tokenizer_sha(run_dir: Path, tokenizer_dir: str) -> str:
    tok_file = check_inside(run_dir, tokenizer_dir) / "tokenizer.json"
    if not tok_file.is_file():
        raise ManifestError(f"tokenizer folder {tokenizer_dir!r} has no tokenizer.json "
                            f"(looked for {str(tok_file)!r}); save a fast tokenizer there")
    return sha256_file(tok_file)


def _same_tokenizer(a: Path, b: Path) -> bool:
    """Byte-identical ``tokenizer.json`` files, or the same vocabulary and added tokens."""
    if sha256_file(a) == sha256_file(b):
        return True
    try:
        ja, jb = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
    except (ValueError, UnicodeDecodeError):
        return False
    return all(ja.get(key) == jb.get(key) for key in ("model", "added_tokens"))


def _check_expert_tokenizers(run_dir: Path, tokenizer_dir: str, experts: list[dict]) -> None:
    """An expert folder that carries its own ``tokenizer.json`` (xelm's do) must carry the
    set's: equal vocabulary sizes do not make two tokenizers interchangeable."""
    shared = check_inside(run_dir, tokenizer_dir) / "tokenizer.json"
    for expert in experts:
        own = check_inside(run_dir, expert["path"]) / "tokenizer.json"
        if own.is_file() and not _same_tokenizer(own, shared):
            raise ManifestError(f"expert {expert['name']!r} was trained with another tokenizer: "
                                f"{expert['path']}/tokenizer.json differs from "
                                f"{tokenizer_dir}/tokenizer.json; an expert set needs one "
                                "shared tokenizer")


def _expert_entry(run_dir: Path, spec: dict) -> dict:
    missing = [k for k in ("name", "path", "languages") if k not in spec]
    if missing:
        raise ManifestError(f"expert {spec.get('name', spec)!r} lacks {missing}")
    folder = check_folder_inside(run_dir, spec["path"])
    files = {p.name: sha256_file(p) for p in require_safetensors(folder)}
    entry = {"name": str(spec["name"]), "path": Path(spec["path"]).as_posix(),
             "languages": list(spec["languages"]), "parent": spec.get("parent"),
             "round": spec.get("round", 1), "tokens": spec.get("tokens"),
             "flops": spec.get("flops"), "files": files}
    entry.update({k: v for k, v in spec.items() if k not in entry})
    return entry


def _default_language_map(experts: list[dict]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for expert in experts:
        for lang in expert["languages"]:
            if lang in mapping:
                raise ManifestError(
                    f"language {lang!r} is served by both {mapping[lang]!r} and "
                    f"{expert['name']!r}; pass language_to_expert to say which is its top-1")
            mapping[lang] = expert["name"]
    return mapping


def write_manifest(run_dir: str | os.PathLike, experts: list[dict], tokenizer_dir: str, *,
                   language_to_expert: dict[str, str] | None = None,
                   prior: dict[str, float] | None = None,
                   tfidf: str | None = None) -> Path:
    """Hash every expert's ``*.safetensors`` and the tokenizer; write ``xelm.json``.

    ``experts`` are dicts with ``name``, ``path`` (relative to ``run_dir``) and
    ``languages``, optionally ``parent``, ``round``, ``tokens``, ``flops`` and any extra
    keys (kept). ``language_to_expert`` defaults to each expert's own languages (a
    language claimed twice is an error). The file is replaced atomically, so a reader
    never sees half a manifest. Returns its path.
    """
    run_dir = Path(run_dir)
    entries = [_expert_entry(run_dir, spec) for spec in experts]
    if tfidf is not None:
        check_inside(run_dir, tfidf)
        tfidf = Path(tfidf).as_posix()
    manifest = {"format": FORMAT, "tokenizer": Path(tokenizer_dir).as_posix(),
                "tokenizer_sha256": _tokenizer_sha(run_dir, tokenizer_dir),
                "experts": entries,
                "language_to_expert": dict(language_to_expert
                                           if language_to_expert is not None
                                           else _default_language_map(entries)),
                "prior": dict(prior) if prior is not None else None,
                "tfidf": tfidf}
    validate_manifest(manifest)
    _check_expert_tokenizers(run_dir, tokenizer_dir, entries)
    path = run_dir / MANIFEST_NAME
    write_json(path, manifest)
    return path


# --------------------------------------------------------------------------- reading
def _fail(problem: str) -> None:
    raise ManifestError(f"{MANIFEST_NAME}: {problem}")


def _validate_expert(i: int, expert: Any) -> str:
    if not isinstance(expert, dict):
        _fail(f"experts[{i}] is not an object")
    missing = [k for k in _EXPERT_KEYS if k not in expert]
    if missing:
        _fail(f"experts[{i}] ({expert.get('name', '?')!r}) lacks keys {missing}")
    name = expert["name"]
    if not isinstance(name, str) or not name:
        _fail(f"experts[{i}].name must be a non-empty string, got {name!r}")
    if not isinstance(expert["path"], str):
        _fail(f"expert {name!r}: path must be a string")
    if not isinstance(expert["languages"], list):
        _fail(f"expert {name!r}: languages must be a list")
    files = expert["files"]
    if not isinstance(files, dict) or not files:
        _fail(f"expert {name!r}: files must map at least one *.safetensors name to its sha256")
    for fname, sha in files.items():
        if not fname.endswith(".safetensors") or "/" in fname or "\\" in fname:
            _fail(f"expert {name!r}: file {fname!r} is not a *.safetensors file name")
        if not (isinstance(sha, str) and len(sha) == 64):
            _fail(f"expert {name!r}: {fname} has no valid sha256")
    return name


def _validate_prior(prior: Any, names: list[str]) -> None:
    if prior is None:
        return
    if not isinstance(prior, dict):
        _fail("prior must be null or an object {expert: weight}")
    unknown = sorted(set(prior) - set(names))
    if unknown:
        _fail(f"prior names unknown experts {unknown}; experts are {names}")
    values = list(prior.values())
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 for v in values) \
            or sum(values) <= 0:
        _fail(f"prior weights must be finite, >= 0 and not all 0, got {prior}")


def validate_manifest(manifest: Any) -> dict:
    """Check the schema of a manifest dict; raise :class:`ManifestError` naming the fault."""
    if not isinstance(manifest, dict):
        _fail("top level must be an object")
    missing = [k for k in _TOP_KEYS if k not in manifest]
    if missing:
        _fail(f"missing keys {missing}")
    if manifest["format"] != FORMAT:
        _fail(f"format {manifest['format']!r} is not supported (this xelm reads {FORMAT})")
    if not isinstance(manifest["experts"], list) or not manifest["experts"]:
        _fail("experts must be a non-empty list")
    names = [_validate_expert(i, e) for i, e in enumerate(manifest["experts"])]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        _fail(f"duplicate expert names {dupes}")
    mapping = manifest["language_to_expert"]
    if not isinstance(mapping, dict):
        _fail("language_to_expert must be an object {language: expert}")
    bad = {lang: e for lang, e in mapping.items() if e not in names}
    if bad:
        _fail(f"language_to_expert points at unknown experts {bad}; experts are {names}")
    _validate_prior(manifest.get("prior"), names)
    tfidf = manifest.get("tfidf")
    if tfidf is not None and not isinstance(tfidf, str):
        _fail("tfidf must be null or a relative path")
    return manifest


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """Read and validate ``RUN_DIR/xelm.json``; a missing optional key reads as None."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in {os.fspath(run_dir)!r}: the train stage "
                            "writes it once every expert is trained")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    validate_manifest(manifest)
    manifest.setdefault("prior", None)
    manifest.setdefault("tfidf", None)
    return manifest


# --------------------------------------------------------------------------- loading
def _verify_files(run_dir: Path, manifest: dict) -> None:
    """Every weight file matches its hash, and no unlisted weight file sits beside them."""
    tok_sha = _tokenizer_sha(run_dir, manifest["tokenizer"])
    if tok_sha != manifest["tokenizer_sha256"]:
        raise ManifestError(f"tokenizer {manifest['tokenizer']}/tokenizer.json does not match "
                            "the sha256 in xelm.json: it changed after the experts were written")
    _check_expert_tokenizers(run_dir, manifest["tokenizer"], manifest["experts"])
    for expert in manifest["experts"]:
        folder = check_inside(run_dir, expert["path"])
        on_disk = {p.name for p in require_safetensors(folder)}
        extra = sorted(on_disk - set(expert["files"]))
        if extra:
            raise ManifestError(f"expert {expert['name']!r}: weight files {extra} in "
                                f"{expert['path']} are not listed in xelm.json")
        for fname, sha in expert["files"].items():
            file = folder / fname
            if not file.is_file():
                raise ManifestError(f"expert {expert['name']!r}: {expert['path']}/{fname} "
                                    "is listed in xelm.json but missing")
            if sha256_file(file) != sha:
                raise ManifestError(f"expert {expert['name']!r}: {expert['path']}/{fname} "
                                    "does not match its sha256 in xelm.json (modified or "
                                    "corrupted); refusing to load it")


def check_vocab(models: dict[str, Any], tokenizer=None) -> int:
    """All experts share one vocabulary size that holds the tokenizer's ids; return it.

    Embedding tables are often padded past the tokenizer (to a multiple of 64 for speed,
    as xelm's own models and many hub models do), so the tokenizer may be smaller."""
    sizes = {name: int(m.config.vocab_size) for name, m in models.items()}
    if len(set(sizes.values())) > 1:
        raise ManifestError(f"experts disagree on vocab_size: {sizes}; an expert set needs "
                            "one shared vocabulary")
    vocab = next(iter(sizes.values()))
    if tokenizer is not None and len(tokenizer) > vocab:
        raise ManifestError(f"tokenizer has {len(tokenizer)} tokens but the experts' "
                            f"vocab_size is only {vocab}: the experts were trained with "
                            "another tokenizer")
    return vocab


@dataclass
class ExpertSet:
    """The loaded experts of a run: models in manifest order, routing table, tokenizer."""

    names: list[str]
    models: dict[str, Any]
    language_to_expert: dict[str, str]
    tokenizer: Any = None
    manifest: dict = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | os.PathLike, *, device: Any = "cpu", verify: bool = True,
             dtype: Any = None) -> "ExpertSet":
        """Load every expert of ``run_dir``; with ``verify`` check all hashes first."""
        from transformers import AutoTokenizer

        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir)
        tok_dir = check_inside(run_dir, manifest["tokenizer"])
        folders = {e["name"]: check_folder_inside(run_dir, e["path"])
                   for e in manifest["experts"]}
        if verify:
            _verify_files(run_dir, manifest)
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(tok_dir), local_files_only=True)
        models = {name: load_causal_lm(path, device=device, dtype=dtype)
                  for name, path in folders.items()}
        check_vocab(models, tokenizer)
        log.info("loaded %d experts from %s", len(models), run_dir)
        return cls(names=list(folders), models=models,
                   language_to_expert=dict(manifest["language_to_expert"]),
                   tokenizer=tokenizer, manifest=manifest)

    @classmethod
    def from_models(cls, models: dict[str, Any], language_to_expert: dict[str, str] | None = None,
                    tokenizer=None, prior: dict[str, float] | None = None) -> "ExpertSet":
        """An in-memory expert set (tests, notebooks); same checks as :meth:`load`."""
        check_vocab(models, tokenizer)
        mapping = dict(language_to_expert or {})
        unknown = {lang: e for lang, e in mapping.items() if e not in models}
        if unknown:
            raise ManifestError(f"language_to_expert points at unknown experts {unknown}")
        return cls(names=list(models), models=dict(models), language_to_expert=mapping,
                   tokenizer=tokenizer, manifest={"prior": prior})

    @property
    def prior(self) -> dict[str, float] | None:
        """The manifest's prior {expert: weight}, or None (uniform)."""
        return self.manifest.get("prior")

    def expert_for_language(self, lang: str) -> str:
        """The top-1 expert of ``lang``."""
        try:
            return self.language_to_expert[lang]
        except KeyError:
            known = ", ".join(sorted(self.language_to_expert)) or "(none)"
            raise UnknownLanguageError(f"no expert serves language {lang!r}; known languages: "
                                       f"{known}") from None

    def index(self, name: str) -> int:
        """Position of expert ``name`` in :attr:`names` (the expert axis of all tensors)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown expert {name!r}; experts are {self.names}") from None

    def __len__(self) -> int:
        return len(self.names)


class LazyExperts:
    """The expert set of a run directory (``rd.root``), loaded once and only when first
    asked for: evaluation skips loading when every score is cached."""

    def __init__(self, rd):
        self.rd, self._set = rd, None

    def get(self) -> ExpertSet:
        if self._set is None:
            self._set = ExpertSet.load(self.rd.root)
        return self._set
