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

# The earlier stages each stage reads the artifacts of (allocate needs only the data).
NEEDS = {"prepare": (), "seed": ("prepare",), "allocate": ("prepare",),
         "train": ("prepare", "seed", "allocate"),
         "eval": ("prepare", "seed", "allocate", "train"),
         "report": ("prepare", "seed", "allocate", "train", "eval")}


def mark(rd: RunDir, stage: str) -> Path:
    """The artifact whose presence says that ``stage`` finished."""
    return {"prepare": rd.prepare_json, "seed": rd.seed_state, "allocate": rd.allocation,
            "train": rd.manifest, "eval": rd.results, "report": rd.report_md}[stage]


def done(rd: RunDir, stage: str) -> bool:
    return mark(rd, stage).is_file()


def stage_function(name: str):
    """The function ``(cfg, rd) -> result`` of one stage of ``STAGES``."""
    from importlib import import_module

    module = import_module(f"xelm.pipeline.{name}")
    return getattr(module, {"eval": "evaluate"}.get(name, name))
