"""Optional dependencies (pip extras) and the one clear error when one is missing.

The core install runs `xelm run` on the default config. The rest is an extra:
``pip install 'xelm[eval]'`` (lm-eval), ``[plots]`` (matplotlib), ``[tensorboard]``,
``[langid]`` (lingua: `top1_langid`, unlabelled corpora), ``[ray]``, ``[slurm]``
(submitit), ``[all]`` (everything; `make` installs it).
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger("xelm")

# import name -> (package to install, extra that brings it)
EXTRAS = {"lm_eval": ("lm-eval", "eval"), "matplotlib": ("matplotlib", "plots"),
          "tensorboard": ("tensorboard", "tensorboard"),
          "lingua": ("lingua-language-detector", "langid"), "ray": ("ray", "ray"),
          "submitit": ("submitit", "slurm")}


class MissingExtraError(ValueError):
    """An optional dependency this command needs is not installed; the message names it."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def require(module: str, needed_for: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra unless ``module`` imports."""
    if not installed(module):
        package, extra = EXTRAS[module]
        raise MissingExtraError(f"{needed_for} needs {package}, which is not installed: "
                                f"pip install 'xelm[{extra}]' (or 'xelm[all]')")


def check_config(cfg) -> None:
    """Before any compute: every optional dependency the config's run will need."""
    if "top1_langid" in cfg.eval.methods:
        require("lingua", "eval.methods top1_langid")
    if cfg.corpus.source == "unlabelled":
        require("lingua", "corpus.source: unlabelled")
    if cfg.train.launcher in EXTRA_LAUNCHERS:
        require(EXTRA_LAUNCHERS[cfg.train.launcher], f"train.launcher: {cfg.train.launcher}")
    if cfg.train.report_to == "tensorboard" and not installed("tensorboard"):
        log.warning("train.report_to is tensorboard but tensorboard is not installed "
                    "(pip install 'xelm[tensorboard]'): training curves go to xelm.log only")
        cfg.train.report_to = "none"


EXTRA_LAUNCHERS = {"ray": "ray", "slurm": "submitit"}
