"""Command line: ``xelm <verb>``. :mod:`xelm.cli.parser` builds the parser, each verb is
one function of :mod:`xelm.cli.commands` (its docstring is the help) that calls
:mod:`xelm.pipeline`; here: the entry point and how errors reach the user. No logic."""

from __future__ import annotations

import json
import logging
import sys

from xelm.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file load bars drown ours
    args = build_parser().parse_args(argv)
    for option, key in (("launcher", "train.launcher"), ("ray_address", "train.ray_address")):
        if getattr(args, option, None):  # quoted: an address like 1:2 is not YAML's integer 62
            args.set.append(f"{key}={json.dumps(getattr(args, option))}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers", "tensorboard"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # "building the font cache"
    if sys.stderr.isatty():  # the progress bar shows what the per-step log lines say
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: not getattr(record, "progress", False))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("xelm: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:  # bad input: one line, the traceback in the run's log
        if args.verbose:
            raise
        _log_failure(args, exc)
        print(f"xelm: error: {_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line, where to find the traceback
        if args.verbose:
            raise
        where = _log_failure(args, exc)
        print(f"xelm: internal error: {type(exc).__name__}: {exc} (the traceback is in "
              f"{where}; please report it)", file=sys.stderr)
        return 1


# Every user-facing error in xelm is a ValueError subclass; a path that does not exist or
# cannot be read is the user's too.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _log_failure(args, exc: BaseException) -> str:
    """Write ``exc`` with its traceback to the run's ``xelm.log`` (the log of the run the
    command names, if it is one; else a log in the temporary folder). Returns its path."""
    import tempfile
    from pathlib import Path

    from xelm.outputs import is_run_dir
    from xelm.rundir import RunDir

    log = logging.getLogger("xelm")
    attached = {h.baseFilename: h for h in log.handlers if getattr(h, "_xelm_run_log", False)}
    root = getattr(args, "run_root", None)
    if root is not None and is_run_dir(Path(root)):
        path = str(RunDir(Path(root)).log_file.resolve())
    elif root is None and attached:
        path = next(iter(attached))
    else:
        path = str(Path(tempfile.gettempdir()) / "xelm-error.log")
    handler = attached.get(path)
    own = handler is None
    if own:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.handle(log.makeRecord("xelm", logging.ERROR, __file__, 0, "`xelm %s` failed: %s",
                                  (args.command, exc), (type(exc), exc, exc.__traceback__)))
    handler.flush()
    if own:
        handler.close()
    return path
