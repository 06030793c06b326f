"""``xelm push``: upload a run's models to the Hugging Face Hub, planned before it is done.

:func:`push_plan` turns a run into the list of ``huggingface_hub.CommitOperationAdd``
that one commit uploads; :func:`push_run` creates the repository and makes that commit.
The plan is plain data: it can be printed, checked and tested without a network.

Repository layouts (``--what``):

* ``experts`` -- the expert set as a loadable run: ``xelm.json``, ``data/tokenizer/``,
  ``experts/<name>/`` (each with its card), ``results.json`` and a card for the set at
  the root; ``ExpertSet.load(snapshot_download(repo))`` verifies and loads it;
* ``all`` -- the same plus ``dense/`` and every MoE export as ``exports/<name>/``;
* ``export`` -- one MoE export at the repository root, so that
  ``AutoModelForCausalLM.from_pretrained(repo)`` loads it.

Cards are generated afresh for the repository (hub links) and replace any local
``README.md``. Never uploaded: pickled weights (``*.bin``, ``*.pt``, ...), hidden files,
training checkpoints, and ``config.yaml`` (it holds local paths).
"""

from __future__ import annotations

import os
from pathlib import Path

from xelm.export.cards import (run_facts, dense_card, export_card, export_dirs, expert_card,
                               set_card)
from xelm.io import read_json
from xelm.rundir import RunDir

WHAT = ("experts", "export", "all")
NEVER = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".tmp")


class PushError(ValueError):
    """The run cannot be pushed as asked, or the hub refused; the message says why."""


def _files(folder: Path) -> list[Path]:
    """The files of a model folder worth uploading (top level only, see module doc)."""
    if not folder.is_dir():
        raise PushError(f"{folder} does not exist: nothing to upload there")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(NEVER) and p.name != "README.md")


def _folder_ops(folder: Path, prefix: str, card) -> list:
    from huggingface_hub import CommitOperationAdd

    ops = [CommitOperationAdd(path_in_repo=f"{prefix}{p.name}", path_or_fileobj=p)
           for p in _files(folder)]
    if not any(op.path_in_repo.endswith(".safetensors") for op in ops):
        raise PushError(f"{folder} has no *.safetensors weights to upload")
    ops.append(CommitOperationAdd(path_in_repo=f"{prefix}README.md",
                                  path_or_fileobj=str(card).encode("utf-8")))
    return ops


def _moe_exports(run: Path) -> list[Path]:
    return [d for d in export_dirs(run) if read_json(d / "export.json").get("format") == "moe"]


def _pick_export(run: Path, export: str | os.PathLike | None) -> Path:
    found = _moe_exports(run)
    if export is not None:
        for candidate in (Path(export), run / "exports" / str(export)):
            if (candidate / "export.json").is_file():
                return candidate
        raise PushError(f"--export {export}: no export.json there (nor in "
                        f"{run / 'exports' / str(export)}); run `xelm export` first")
    if len(found) == 1:
        return found[0]
    if not found:
        raise PushError(f"{run} has no MoE export under exports/: run `xelm export {run} "
                        "--format moe` first")
    raise PushError(f"{run} has {len(found)} exports ({', '.join(d.name for d in found)}): "
                    "name one with --export")


def push_plan(run: str | os.PathLike, what: str = "all", repo: str | None = None,
              export: str | os.PathLike | None = None, licenses: dict | None = None,
              license: str | None = None) -> list:
    """The ``CommitOperationAdd`` list that uploads ``what`` of ``run`` (module doc),
    sorted by path in the repository. Reads files lazily: nothing is copied."""
    from huggingface_hub import CommitOperationAdd

    if what not in WHAT:
        raise PushError(f"--what must be one of {', '.join(WHAT)}, got {what!r}")
    run = Path(run)
    facts = run_facts(run)  # reads xelm.json: fails clearly on a folder that is not a run
    card_args = {"repo": repo, "licenses": licenses, "license": license, "facts": facts}
    if what == "export":
        folder = _pick_export(run, export)
        card = export_card(run, folder, root=True, **card_args)
        return sorted(_folder_ops(folder, "", card), key=lambda op: op.path_in_repo)
    manifest = facts["manifest"]
    ops = [CommitOperationAdd(path_in_repo="README.md",
                              path_or_fileobj=str(set_card(run, **card_args)).encode("utf-8")),
           CommitOperationAdd(path_in_repo="xelm.json", path_or_fileobj=RunDir(run).manifest)]
    if RunDir(run).results.is_file():
        ops.append(CommitOperationAdd(path_in_repo="results.json",
                                      path_or_fileobj=RunDir(run).results))
    tok = manifest["tokenizer"].rstrip("/")
    ops += [CommitOperationAdd(path_in_repo=f"{tok}/{p.name}", path_or_fileobj=p)
            for p in _files(run / tok)]
    for e in manifest["experts"]:
        ops += _folder_ops(run / e["path"], f"{e['path'].rstrip('/')}/",
                           expert_card(run, e["name"], **card_args))
    if what == "all":
        if RunDir(run).dense.is_dir():
            ops += _folder_ops(RunDir(run).dense, "dense/", dense_card(run, **card_args))
        for folder in _moe_exports(run):
            ops += _folder_ops(folder, f"exports/{folder.name}/",
                               export_card(run, folder, **card_args))
    return sorted(ops, key=lambda op: op.path_in_repo)


def _check_repo(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo, str) or repo.count("/") != 1:
        raise PushError(f"--repo {repo!r}: give the repository as ORG/NAME (or USER/NAME)")
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise PushError(f"--repo {repo!r} is not a valid repository id: {exc}") from None


def push_run(run: str | os.PathLike, repo: str, what: str = "all", private: bool = False,
             dry_run: bool = False, export: str | os.PathLike | None = None,
             licenses: dict | None = None, license: str | None = None) -> list[str]:
    """Upload a run's experts (--what experts), one MoE export (--what export) or all of
    it (experts, dense, exports) to the Hugging Face Hub repository ORG/NAME in one
    commit, with freshly generated model cards; --private creates the repository
    private. --dry-run lists what would be uploaded and touches no network. Returns the
    paths in the repository. Uses the login of `hf auth login` (or HF_TOKEN)."""
    _check_repo(repo)
    ops = push_plan(run, what, repo=repo, export=export, licenses=licenses, license=license)
    paths = [op.path_in_repo for op in ops]
    if dry_run:
        return paths
    upload(repo, ops, private=private, message=f"xelm push ({what}) of {Path(run).resolve().name}")
    return paths


def upload(repo: str, operations: list, private: bool = False, message: str = "xelm push") -> str:
    """Create ``repo`` (if needed) and commit ``operations``; returns the commit URL.
    Hub and network failures come back as :class:`PushError` (one clear line)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo, operations=operations, commit_message=message,
                                 repo_type="model")
    except OfflineModeIsEnabled:
        raise PushError("cannot upload: the Hugging Face Hub is switched off here "
                        "(HF_HUB_OFFLINE is set); unset it on a machine with network, or "
                        "use --dry-run to see what would be uploaded") from None
    except LocalTokenNotFoundError:
        raise PushError("cannot upload: not logged in to the Hugging Face Hub; run "
                        "`hf auth login` or set HF_TOKEN") from None
    except HfHubHTTPError as exc:
        raise PushError(f"the Hugging Face Hub refused the upload to {repo}: "
                        f"{str(exc).splitlines()[0]}") from None
    except OSError as exc:  # connection errors
        raise PushError(f"cannot reach the Hugging Face Hub to upload to {repo}: {exc}") from None
    return str(getattr(info, "commit_url", info))
