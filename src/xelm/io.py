"""Small file helpers shared by every stage: atomic writes and JSON.

Every artifact a stage produces is written to a temporary name in the same directory
and renamed into place, so a run killed at any moment never leaves a half-written file
that a later run would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def fingerprint(obj: Any) -> str:
    """A short SHA-256 of ``obj``'s canonical JSON (what a cached result was made from)."""
    import hashlib

    text = json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_json(path: str | Path, compute, key: Any = None) -> Any:
    """``path``'s JSON if it exists and was made from ``key``, else ``compute()``, written
    there first (resumable work).

    ``key`` is everything the result depends on (settings, weight and data hashes); it is
    stored beside the value, and a file made from another key -- or written before keys
    were stored -- is computed again, never trusted.
    """
    path = Path(path)
    if path.is_file():
        stored = read_json(path)
        if isinstance(stored, dict) and stored.get("key") == key and "value" in stored:
            return stored["value"]
    result = compute()
    write_json(path, {"key": key, "value": result})
    return result


def progress(iterable=None, *, disable: bool = False, **kwargs):
    """A ``tqdm`` progress bar shown only on a terminal: redirected to a file (a batch job,
    ``nohup``), bars would write carriage-return lines; the log lines say it all there."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable or not sys.stderr.isatty(), **kwargs)
