"""Command line: one function per subcommand; the docstring is its help. No logic here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

STAGES = ("prepare", "seed", "allocate", "train", "eval", "report")


def _context(args):
    from xelm import config as cfgmod
    from xelm.rundir import RunDir

    cfg = cfgmod.load(args.config, args.set, out_dir=args.out)
    return cfg, RunDir.open(cfg, force=args.force)


def _require(rd, stage: str) -> None:
    marks = {"prepare": rd.data / "prepare.json", "seed": rd.seed / "train_state.json",
             "allocate": rd.allocation, "train": rd.root / "xelm.json", "eval": rd.results}
    for before in STAGES[:STAGES.index(stage)]:
        if not marks[before].is_file():
            raise _usage(f"stage '{stage}' needs '{before}' first: run `xelm {before} CONFIG` "
                         "(same --out/--set), or `xelm run CONFIG` for everything")


class _usage(ValueError):
    pass


def _stage(name: str, cfg, rd):
    from xelm import stages
    from xelm.evaluate.stage import evaluate
    from xelm.report.stage import report

    fn = {"prepare": stages.prepare, "seed": stages.seed, "allocate": stages.allocate,
          "train": stages.train, "eval": evaluate, "report": report}[name]
    with rd.timed(name):
        return fn(cfg, rd)


def cmd_run(args) -> int:
    """Run the whole x-BTM experiment (prepare, seed, allocate, train, eval, report).

    Resumable: run it again after an interruption and it continues where it stopped."""
    cfg, rd = _context(args)
    out = None
    for name in STAGES:
        out = _stage(name, cfg, rd)
    print(out)
    print(f"\nreport: {rd.root / 'report.md'}")
    return 0


def _stage_command(name: str, doc: str):
    def command(args) -> int:
        cfg, rd = _context(args)
        _require(rd, name)
        out = _stage(name, cfg, rd)
        if name == "report":
            print(out)
        elif name == "allocate":
            for expert, spec in out["experts"].items():
                print(f"{expert}: {' '.join(spec['languages'])}")
        return 0
    command.__doc__ = doc
    return command


STAGE_DOCS = {
    "prepare": "Read the corpus, split it, build the tokenizer and pack token shards.",
    "seed": "Import model.base, or pretrain the seed model on all languages.",
    "allocate": "Allocate languages or documents to experts; print the groups.",
    "train": "Train the dense baseline and every expert from the seed (resumable).",
    "eval": "Perplexity and bits per byte of seed, dense and each eval.methods method.",
    "report": "Write report.md and plots; print the per-language table.",
}


def cmd_status(args) -> int:
    """Print each training job of a run: state, tokens done / budget, last loss."""
    from xelm.train.status import format_states, job_states

    print(format_states(job_states(args.run)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xelm", description="Cross-lingual expert language models (x-BTM).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"run": cmd_run, **{s: _stage_command(s, STAGE_DOCS[s]) for s in STAGES}}
    for name, fn in commands.items():
        p = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        p.add_argument("config", help="experiment YAML (e.g. configs/demo.yaml)")
        p.add_argument("--out", help="run directory (overrides out_dir)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.tokens=2000000 (YAML value)")
        p.add_argument("--force", action="store_true",
                       help="if the run directory was made with another config, move it aside and start again")
        p.set_defaults(func=fn)
    p = sub.add_parser("status", help=cmd_status.__doc__, description=cmd_status.__doc__)
    p.add_argument("run", help="run directory")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file load bars drown ours
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ValueError as exc:  # every user-facing error in xelm is a ValueError subclass
        if args.verbose:
            raise
        print(f"xelm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xelm: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
