"""Where a command may write: the one guard every ``--out`` goes through.

Rules (the failure modes in ``tests/reliability/CATALOGUE.md``):

- A command writes into a folder it created, a new folder, or an empty one. A non-empty
  folder that another command (or a person) filled is refused unless ``force`` is given.
  Whoever created a folder leaves the marker file ``.xelm-out.json`` naming the command,
  so running the same command again (to resume, or to redo it) is allowed.
- Nothing, not even ``force``, writes inside a run directory's model or data folders
  (``experts/``, ``seed/``, ``dense/``, ``data/``) or into a run directory's root: those
  belong to the run, and a manifest pins their SHA-256.

The checks run before any model is loaded, so a refusal costs nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from xelm.rundir import RunDir

MARKER = ".xelm-out.json"
RUN_FOLDERS = ("experts", "seed", "dense", "data")  # RunDir properties: the run's own folders


class OutDirError(ValueError):
    """The output folder cannot be written by this command; the message says what to do."""


def is_run_dir(path: Path) -> bool:
    """An xelm run directory: its resolved ``config.yaml`` and what the stages wrote."""
    rd = RunDir(path)
    return rd.config_yaml.is_file() and any(
        p.exists() for p in (rd.manifest, rd.data, rd.log_file, rd.seed))


def run_owning(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(run root, 'root' | folder name)`` when ``path`` is a run directory's root or lies
    inside one of its protected folders; else None."""
    resolved = Path(path).expanduser().resolve()
    if is_run_dir(resolved):
        return resolved, "root"
    for inner in (resolved, *resolved.parents):
        if (any(inner == getattr(RunDir(inner.parent), f) for f in RUN_FOLDERS)
                and is_run_dir(inner.parent)):
            return inner.parent, inner.name
    return None


def refuse_run_folder(path: str | os.PathLike, command: str) -> None:
    """Refuse, whatever ``--force`` says, a ``path`` in a run's root or protected folders."""
    owner = run_owning(path)
    if owner is None:
        return
    root, folder = owner
    where = "the root of" if folder == "root" else f"the {folder}/ folder of"
    raise OutDirError(f"{path} is {where} the run {root}: `xelm {command}` never writes "
                      "there, --force or not (the run's files are pinned by their SHA-256); "
                      "choose another --out, e.g. a new folder beside the run")


def claim_out_dir(path: str | os.PathLike, command: str, force: bool = False) -> Path:
    """Make ``path`` this command's output folder, or refuse (:class:`OutDirError`).

    New or empty folder: created and marked. A folder marked by the same ``command``:
    reused. Any other non-empty folder: refused unless ``force``. A run's own folders:
    always refused. Returns the folder.
    """
    out = Path(path).expanduser()
    refuse_run_folder(out, command)
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out} is a file, not a folder: choose a folder path")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir() if p.name != MARKER)
        marker = out / MARKER
        owner = _marker_command(marker)
        if entries and owner != command and not force:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            made = f"by `xelm {owner}`" if owner else "by someone else"
            raise OutDirError(f"--out {out} is not empty ({len(entries)} entries: {shown}) and "
                              f"was made {made}: choose a new folder, or add --force to write "
                              "into it (files of the same name are replaced)")
        if owner == command:
            return out
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"command": command, "created": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z")}) + "\n", encoding="utf-8")
    return out


def _marker_command(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None
