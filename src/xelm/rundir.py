"""The run directory: the contract between stages (layout in DESIGN.md).

A run directory belongs to one experiment. Its resolved config is written on first use;
later commands compare theirs with it and refuse to mix results from different settings
(only keys that cannot change any artifact already written, such as logging cadence or
evaluation options, may differ). Every stage also logs to ``xelm.log`` inside it.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from xelm.config import Config
from xelm.io import atomic_write_text, read_json, write_json

log = logging.getLogger("xelm")

# Keys that may change between invocations on the same run directory.
MUTABLE_PREFIXES = ("out_dir", "eval.", "train.save_every", "train.log_every", "train.threads",
                    "train.eval_every", "train.report_to", "train.slurm", "corpus.num_proc",
                    "train.grad_accum_steps", "train.gradient_checkpointing",
                    "train.launcher", "train.parallel", "train.resources_per_expert",
                    "train.ray_address")


class RunDirError(ValueError):
    """The run directory cannot be used with this config."""


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


# Keys naming files or folders: two spellings of one place (relative from here, absolute)
# are the same setting.
PATH_KEYS = ("corpus.path", "allocate.features_file", "model.base")


def _same(key: str, a: object, b: object) -> bool:
    if a == b:
        return True
    if key in PATH_KEYS and isinstance(a, str) and isinstance(b, str):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def config_differences(old: dict, new: dict) -> list[str]:
    """The settings that differ, ignoring those allowed to change. A key the old config
    lacks (written before that key existed) counts as its default, so a newer xelm
    resumes an older run."""
    a, b = _flatten(old), _flatten(new)
    defaults = _flatten(Config().model_dump(mode="json"))
    for key in set(b) - set(a):
        if key in defaults:
            a[key] = defaults[key]
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys
            if not _same(k, a.get(k), b.get(k)) and not k.startswith(MUTABLE_PREFIXES)]


TRAIN_STATE = "train_state.json"  # a training job's ledger, in its model folder

# What a run directory holds. A folder with nothing else (and a finished ``data/``) is a
# run being assembled from another run's finished parts (the benchmarks share the prepared
# data, the seed and dense this way), not someone else's folder.
ARTIFACTS = {"data", "seed", "dense", "experts", "router", "allocation.json", "xelm.json",
             "eval", "tensorboard", "timing.json", "xelm.log", "results.json", "report.md",
             "plots", "adapt", "downstream"}


def refuse_foreign(root: Path) -> None:
    """Refuse a non-empty folder that is not a run directory: a run never writes among
    files it did not make."""
    if RunDir(root).config_yaml.is_file() or not root.is_dir():
        return
    shown = sorted(p.name for p in root.iterdir() if not p.name.startswith(LOCK_NAME))
    parts = set(shown) <= ARTIFACTS and ("data" not in shown
                                         or RunDir(root).prepare_json.is_file())
    if shown and not parts:
        raise RunDirError(f"{root} is not empty and is not an xelm run directory (it holds "
                          f"{', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}): "
                          "give a new or empty folder as out_dir (--out DIR)")


def _aside_name(root: Path) -> Path:
    """``NAME.old-<timestamp>``, numbered when that exists (two --force in a second)."""
    base = f"{root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = root.with_name(base), 1
    while aside.exists():
        n += 1
        aside = root.with_name(f"{base}~{n}")
    return aside


@dataclass
class RunDir:
    root: Path
    moved_aside: Path | None = None  # where `open(force=True)` moved a run of another config

    # Every artifact, named once (layout in DESIGN.md); stages and commands use these.
    config_yaml = property(lambda self: self.root / "config.yaml")
    data = property(lambda self: self.root / "data")
    prepare_json = property(lambda self: self.data / "prepare.json")  # prepare's record
    tokenizer = property(lambda self: self.data / "tokenizer")
    text_dir = property(lambda self: self.data / "text")  # <lang>.<split>.txt (see text())
    held_out_keys = property(lambda self: self.data / "held_out_keys.json")  # split: by_key
    synthetic = property(lambda self: self.data / "synthetic")  # the embedded corpus
    adapt_json = property(lambda self: self.data / "adapt.json")  # `xelm adapt`'s record
    seed = property(lambda self: self.root / "seed")
    seed_state = property(lambda self: self.seed / TRAIN_STATE)
    dense = property(lambda self: self.root / "dense")
    experts = property(lambda self: self.root / "experts")
    allocation = property(lambda self: self.root / "allocation.json")
    router = property(lambda self: self.root / "router")  # the TF-IDF router's folder
    manifest = property(lambda self: self.root / "xelm.json")  # the expert set
    eval_cache = property(lambda self: self.root / "eval")
    results = property(lambda self: self.root / "results.json")
    report_md = property(lambda self: self.root / "report.md")
    plots = property(lambda self: self.root / "plots")
    typology_plot = property(lambda self: self.plots / "typology.png")  # allocate's, report's
    tensorboard = property(lambda self: self.root / "tensorboard")
    timing_json = property(lambda self: self.root / "timing.json")
    log_file = property(lambda self: self.root / "xelm.log")
    adapt_dir = property(lambda self: self.root / "adapt")  # one folder per adapt call
    downstream = property(lambda self: self.root / "downstream")
    exports = property(lambda self: self.root / "exports")  # `xelm export`'s folders
    slurm = property(lambda self: self.root / "slurm")  # Slurm jobs' logs and pickles

    def text(self, lang: str, split: str) -> Path:
        """The documents of one language's split, one per line."""
        return self.text_dir / f"{lang}.{split}.txt"

    def adapt_call(self, key: str) -> Path:
        """One ``xelm adapt`` call's folder (``key``: its languages joined by '+')."""
        return self.adapt_dir / key

    def adapt_results(self, key: str) -> Path:
        """One ``xelm adapt`` call's results (the last call's: ``results.json["adapt"]``)."""
        return self.adapt_call(key) / "results.json"

    @classmethod
    def open(cls, cfg: Config, force: bool = False) -> "RunDir":
        """Create or reuse ``cfg.out_dir``; refuse a directory made by another config.

        A directory in which no stage has finished (a failed first attempt) is not a run
        yet: a different config simply starts it again. Changed ``eval.*`` settings make
        ``results.json`` and ``report.md`` stale: they are removed (everything in them is
        rebuilt from keyed caches by ``xelm eval``/``report``), so they never describe
        settings other than those in ``config.yaml``.
        """
        root = Path(cfg.out_dir)
        saved = cls(root).config_yaml
        new = cfg.model_dump(mode="json")
        aside, restarted, old = None, False, None
        if saved.is_file():
            old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            diff = config_differences(old, new)
            if diff and not cls(root).started():
                restarted = True
            elif diff and not force:
                raise RunDirError(
                    f"{root} was made with a different config:\n  " + "\n  ".join(diff) +
                    "\nUse a new out_dir (--out DIR), or --force to move the old run aside "
                    "and start again.")
            elif diff:
                aside = _aside_name(root)
                root.rename(aside)
                old = None
        else:
            refuse_foreign(root)
        root.mkdir(parents=True, exist_ok=True)
        rd = cls(root)
        rd.moved_aside = aside
        if restarted:  # the failed attempt's partial data was made with the other config
            shutil.rmtree(rd.data, ignore_errors=True)
        atomic_write_text(saved, cfg.to_yaml())
        rd.log_to_file()
        if aside is not None:
            log.warning("moved the previous run to %s", aside)
        if restarted:
            log.info("no stage had finished in %s: starting again with the new config", root)
        if old is not None and old.get("eval") != new.get("eval"):
            rd.drop_stale_results()
        return rd

    def started(self) -> bool:
        """Has any stage finished here? (``prepare`` is the first, and every other needs it.)"""
        return self.prepare_json.is_file()

    def drop_stale_results(self) -> None:
        """Remove ``results.json`` and ``report.md`` made under other ``eval.*`` settings."""
        stale = [p for p in (self.results, self.report_md) if p.is_file()]
        for path in stale:
            path.unlink()
        if stale:
            log.warning("eval settings changed: removed %s (made with the old settings); "
                        "`xelm eval` and `xelm report` rebuild them, `xelm adapt` and "
                        "`xelm eval --downstream` add their sections again",
                        " and ".join(p.name for p in stale))

    def log_to_file(self) -> None:
        """Log to this run's ``xelm.log`` only: a process that opens several run
        directories (tests, notebooks) must not write one run's messages into another's
        log, nor keep writing into a log that ``--force`` moved aside."""
        path = str(self.log_file.resolve())
        for old in [h for h in log.handlers if getattr(h, "_xelm_run_log", False)]:
            log.removeHandler(old)
            old.close()
        handler = logging.FileHandler(path, encoding="utf-8")
        handler._xelm_run_log = True
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._add_time(stage, time.perf_counter() - start)

    def _add_time(self, stage: str, seconds: float) -> None:
        timing = self.timing()
        timing[stage] = round(timing.get(stage, 0.0) + seconds, 2)
        write_json(self.timing_json, timing)

    def timing(self) -> dict:
        path = self.timing_json
        return read_json(path) if path.is_file() else {}


class RunLockedError(RunDirError):
    """Another process is working on the same run directory."""


LOCK_NAME = ".xelm.lock"


@contextmanager
def run_lock(root: str | Path, command: str):
    """Hold the run directory's lock while ``command`` writes into it.

    An OS lock (``filelock``: ``flock``, which NFS clients map to POSIX locks) on
    ``RUN/.xelm.lock``; the kernel drops it when its process dies, even by ``kill -9``,
    so a crashed run never blocks the next. Who holds it (host, PID, command, since when)
    is written beside it, in ``.xelm.lock.owner.json``, for the refusal message. Training
    workers (local subprocesses, Ray tasks, ``accelerate`` ranks) are started by the
    locking process and take no lock of their own.
    """
    import json
    import os
    import socket

    from filelock import FileLock, Timeout

    root = Path(root)
    lock = FileLock(str(root / LOCK_NAME), timeout=0)
    owner = root / f"{LOCK_NAME}.owner.json"
    try:
        lock.acquire()
    except Timeout:
        try:
            who = json.loads(owner.read_text(encoding="utf-8"))
            by = (f"`xelm {who['command']}` (PID {who['pid']} on host {who['host']}, "
                  f"since {who['since']})")
        except (OSError, ValueError, KeyError, TypeError):
            by = "another xelm process"
        raise RunLockedError(f"{root} is in use by {by}: wait for it to finish, or stop it "
                             "and run this command again (a killed process leaves no lock)") from None
    try:
        atomic_write_text(owner, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                             "command": command,
                                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
