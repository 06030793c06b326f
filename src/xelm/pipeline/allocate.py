"""``xelm allocate``: languages or documents -> experts (``allocation.json``).

Needs only ``prepare``: neither the typology nor the TF-IDF allocation reads the seed.
"""

from __future__ import annotations

import logging

from xelm.config import Config
from xelm.io import read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")


def allocate(cfg: Config, rd: RunDir) -> dict:
    """Write ``allocation.json`` (and the TF-IDF router, cluster shards); return it."""
    if rd.allocation.is_file():
        return read_json(rd.allocation)
    from xelm.allocate.fit import allocate_run

    result = allocate_run(cfg, rd)
    write_json(rd.allocation, result)
    for name, spec in result["experts"].items():
        log.info("expert %s: %s", name, " ".join(spec["languages"]))
    return result
