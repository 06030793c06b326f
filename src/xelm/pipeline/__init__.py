"""The x-BTM experiment as stages over one run directory, one module per CLI verb.

``prepare -> seed -> allocate -> train -> eval -> report`` (and ``adapt``, ``eval
--downstream``, ``plan``). A stage reads the run directory (:class:`xelm.rundir.RunDir`),
calls the library below it and writes the run directory; it holds no domain logic. Each
stage skips work already done and writes atomically, so running it again after a crash
continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from xelm.rundir import RunDir

STAGES = ("prepare", "seed", "allocate", "train", "eval", "report")

# The artifact (a :class:`RunDir` property) each stage writes last: its presence says the
# stage finished.
WRITES = {"prepare": "prepare_json", "seed": "seed_state", "allocate": "allocation",
          "train": "manifest", "eval": "results", "report": "report_md"}

# The earlier artifacts (RunDir properties) each stage reads; allocate needs only the data.
NEEDS = {"prepare": (), "seed": ("prepare_json",), "allocate": ("prepare_json",),
         "train": ("prepare_json", "seed_state", "allocation"),
         "eval": ("prepare_json", "seed_state", "allocation", "manifest"),
         "report": ("results", "manifest")}


def mark(rd: RunDir, stage: str) -> Path:
    """The artifact whose presence says that ``stage`` finished."""
    return getattr(rd, WRITES[stage])


def done(rd: RunDir, stage: str) -> bool:
    return mark(rd, stage).is_file()


def missing(rd: RunDir, stage: str) -> list[tuple[Path, str]]:
    """``(artifact, the stage that writes it)`` for each artifact ``stage`` reads that is
    not there yet."""
    writer = {artifact: name for name, artifact in WRITES.items()}
    return [(getattr(rd, a), writer[a]) for a in NEEDS[stage] if not getattr(rd, a).is_file()]


def stage_function(name: str):
    """The function ``(cfg, rd) -> result`` of one stage of ``STAGES``."""
    from importlib import import_module

    module = import_module(f"xelm.pipeline.{name}")
    return getattr(module, {"eval": "evaluate"}.get(name, name))
