"""Weight-file I/O and the safety checks every expert folder goes through.

An expert is a plain Hugging Face ``save_pretrained`` folder. This module only ever
loads ``*.safetensors`` (never pickled ``*.bin`` files, which can run code on load),
hashes weight files so a manifest can pin them, and keeps every path a manifest names
inside its run directory, so a hand-edited or downloaded ``xelm.json`` cannot make us
read (or later overwrite) files elsewhere.

Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (weight files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The ``*.safetensors`` files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).glob("*.safetensors") if p.is_file())


def check_inside(run_dir: str | os.PathLike, rel_path: str | os.PathLike) -> Path:
    """Resolve ``rel_path`` against ``run_dir``; refuse anything that leaves ``run_dir``.

    Refused with a ``ValueError``: absolute paths (a run directory must stay relocatable),
    empty paths, and paths whose resolution -- after ``..`` and symlinks -- is not inside
    ``run_dir``. The path need not exist. Returns the resolved absolute path.
    """
    text = os.fspath(rel_path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty path in run directory {os.fspath(run_dir)!r}")
    if Path(text).is_absolute() or Path(text).drive:
        raise ValueError(f"path {text!r} is absolute; paths in a run directory must be "
                         f"relative to it ({os.fspath(run_dir)!r})")
    root = Path(run_dir).resolve()
    resolved = (root / text).resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"path {text!r} escapes the run directory {str(root)!r} "
                         f"(it resolves to {str(resolved)!r}, via '..' or a symlink)")
    return resolved


def check_folder_inside(run_dir: str | os.PathLike, rel_folder: str | os.PathLike) -> Path:
    """:func:`check_inside` for a folder and every file in it (a weight file symlinked to
    somewhere else is refused too). Returns the resolved folder."""
    folder = check_inside(run_dir, rel_folder)
    if folder.is_dir():
        for entry in Path(run_dir).resolve().joinpath(os.fspath(rel_folder)).iterdir():
            check_inside(run_dir, os.path.relpath(entry, Path(run_dir).resolve()))
    return folder


def require_safetensors(folder: str | os.PathLike) -> list[Path]:
    """The folder's safetensors files; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    files = weight_files(folder)
    if not files:
        present = sorted(p.name for p in folder.iterdir())[:10]
        raise ValueError(
            f"model folder {str(folder)!r} has no *.safetensors weights (found: {present}). "
            "xelm loads only safetensors, never pickled .bin/.pt files; convert with "
            "`AutoModelForCausalLM.from_pretrained(old).save_pretrained(new)`.")
    return files


def load_causal_lm(path: str | os.PathLike, *, device: Any = "cpu", dtype: Any = None,
                   trust_remote_code: bool = False):
    """Load an HF causal LM from a local safetensors folder, in eval mode, on ``device``.

    ``dtype`` is a ``torch.dtype``, a name such as ``"bfloat16"``, or None (the dtype the
    checkpoint's config asks for, else float32).
    """
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    require_safetensors(path)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            os.fspath(path), use_safetensors=True, trust_remote_code=trust_remote_code,
            local_files_only=True, **({"dtype": dtype} if dtype is not None else {}))
    except SafetensorError as exc:  # not a ValueError: the CLI would print a bare traceback
        raise ValueError(f"model folder {os.fspath(path)!r}: a *.safetensors weight file is "
                         f"truncated or corrupt ({exc}); copy it again or retrain it") from None
    return model.to(device).eval()


def save_causal_lm(model, path: str | os.PathLike) -> list[Path]:
    """``save_pretrained`` (safetensors, the only format transformers 5 writes); returns
    the weight files written, and refuses to return none."""
    model.save_pretrained(os.fspath(path))
    return require_safetensors(path)


def folder_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every ``*.safetensors`` file in ``folder``, by file name."""
    return {p.name: sha256_file(p) for p in weight_files(folder)}


def expert_hashes(run_dir: str | os.PathLike, experts: list[dict]) -> dict[str, dict[str, str]]:
    """:func:`folder_hashes` of every expert (``xelm.json`` entries) of a run, read now."""
    return {e["name"]: folder_hashes(check_inside(run_dir, e["path"])) for e in experts}
