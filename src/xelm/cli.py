"""Command line: one function per subcommand; the docstring is its help. No logic here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import contextmanager

from xelm.pipeline import STAGES  # the stages of `xelm run`, in order


def _context(args, name: str):
    """The config and its run directory, checked before anything is created."""
    from pathlib import Path

    from xelm import config as cfgmod
    from xelm.rundir import RunDir

    cfg = cfgmod.load(args.config, args.set, out_dir=args.out)
    root = Path(cfg.out_dir)
    args.run_root = root  # where a failure's traceback is logged
    if name not in ("run", "prepare") and not RunDir(root).config_yaml.is_file():
        raise _usage(f"no run in {root}: stage '{name}' needs 'prepare' first: run `xelm "
                     "prepare CONFIG` (same --out/--set), or `xelm run CONFIG` for everything")
    return cfg, root


@contextmanager
def _open_run(args, name: str):
    """Lock the run directory for ``name`` and open it (creating it for run/prepare)."""
    from xelm.rundir import RunDir, refuse_foreign, run_lock

    from xelm.extras import check_config

    cfg, root = _context(args, name)
    check_config(cfg)
    refuse_foreign(root)
    if name in ("run", "prepare"):
        root.mkdir(parents=True, exist_ok=True)
    with run_lock(root, name):
        rd = RunDir.open(cfg, force=args.force)
        if rd.moved_aside is None:
            yield cfg, rd
            return
        with run_lock(root, name):  # the held lock moved aside with the old run: lock anew
            yield cfg, rd


def _require(rd, stage: str) -> None:
    from xelm.pipeline import NEEDS, done

    for before in NEEDS[stage]:
        if not done(rd, before):
            raise _usage(f"stage '{stage}' needs '{before}' first: run `xelm {before} CONFIG` "
                         "(same --out/--set), or `xelm run CONFIG` for everything")


class _usage(ValueError):
    pass


def _stage(name: str, cfg, rd):
    from xelm.pipeline import stage_function

    fn = stage_function(name)
    with rd.timed(name):
        return fn(cfg, rd)


def cmd_run(args) -> int:
    """Run the whole x-BTM experiment (prepare, seed, allocate, train, eval, report).

    Resumable: run it again after an interruption and it continues where it stopped.
    --dry-run prints the plan (`xelm plan`) and trains nothing."""
    if args.dry_run:
        return cmd_plan(args)
    with _open_run(args, "run") as (cfg, rd):
        out = None
        for name in STAGES:
            out = _stage(name, cfg, rd)
    print(out)
    print(f"\nreport: {rd.report_md}")
    return 0


def _stage_command(name: str, doc: str):
    def command(args) -> int:
        if getattr(args, "downstream", False):  # before any compute
            from xelm.extras import require

            require("lm_eval", "xelm eval --downstream")
        with _open_run(args, name) as (cfg, rd):
            _require(rd, name)
            out = _stage(name, cfg, rd)
            if getattr(args, "downstream", False):
                _downstream(cfg, rd)
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


def _downstream(cfg, rd) -> None:
    from xelm.extras import require

    require("lm_eval", "xelm eval --downstream")
    from xelm.pipeline.downstream import downstream
    from xelm.report.downstream import markdown_section

    with rd.timed("downstream"):
        print(markdown_section(downstream(cfg, rd)))


def cmd_tasks_build(args) -> int:
    """Build offline lm-eval tasks from held-out documents.

    --kind cloze (default): xelm_cloze, XStoryCloze-style (the first sentences of a
    document, the true next sentence and distractors from other documents of the same
    language), one task per language and the group xelm_cloze; --source-lang adds the
    cross-lingual few-shot variant xelm_cloze_x_<source>_<lang>. --kind minimal-pairs:
    xelm_pairs, BLiMP-style pairs per language and phenomenon (grammar pairs on a
    synthetic corpus, perturbed held-out sentences on real text). --kind xnli|xstorycloze:
    lm-eval's own tasks with few-shot examples from --source-lang (needs the hub to run)."""
    from pathlib import Path

    from xelm.outputs import claim_out_dir

    if args.corpus is None and args.kind in ("cloze", "minimal-pairs"):
        raise ValueError(f"--kind {args.kind} needs --corpus (a run directory or a folder of "
                         "held-out text)")
    claim_out_dir(args.out, "tasks build", force=args.force)
    languages = args.languages.split(",") if args.languages else None
    if args.kind == "minimal-pairs":
        from xelm.evaluate.minimal_pairs import build_minimal_pairs, format_pairs_summary

        summary = build_minimal_pairs(args.corpus, args.out, pairs=args.pairs,
                                      languages=languages, n=args.n or 300, seed=args.seed,
                                      max_tokens=args.max_continuation_tokens,
                                      tokenizer=args.tokenizer)
        print(format_pairs_summary(summary))
        return 0
    if args.kind in ("xnli", "xstorycloze"):
        from xelm.evaluate.crosslingual import write_hub_crosslingual_tasks

        if not languages:
            raise ValueError(f"--kind {args.kind} needs --languages (the test languages)")
        got = write_hub_crosslingual_tasks(Path(args.out), args.kind,
                                           args.source_lang or "en", languages)
        print(f"group {got['group']}: {', '.join(got['tasks'].values())} in {args.out}")
        return 0
    from xelm.evaluate.tasks import build_tasks, format_summary

    summary = build_tasks(args.corpus, args.out, choices=args.choices, n=args.n or 200,
                          fewshot_docs=args.fewshot_docs, seed=args.seed, languages=languages,
                          tokenizer=args.tokenizer,
                          max_continuation_tokens=args.max_continuation_tokens,
                          source_lang=args.source_lang)
    print(format_summary(summary))
    return 0


def cmd_lm_eval(args) -> int:
    """lm-eval's command line with the xelm model registered: xelm lm-eval --model xelm ...

    Every argument goes to lm-eval, e.g. --model xelm --model_args run=RUN,method=top1,lang=de
    --tasks xelm_cloze_de --include_path TASKS_DIR --num_fewshot 4. An --output_path must be
    new, empty or an earlier `xelm lm-eval` output (add --force to write elsewhere), and never
    inside a run's model folders."""
    from xelm.extras import require

    require("lm_eval", "xelm lm-eval")
    from xelm.evaluate.lm_eval_model import run_cli
    from xelm.outputs import claim_out_dir

    output = _lm_eval_output(args.args)
    if output is not None:  # lm-eval names its files by time; the folder must be ours
        claim_out_dir(output.parent if output.suffix == ".json" else output, "lm-eval",
                      force="--force" in args.args)
    run_cli([a for a in args.args if a != "--force"])
    return 0


def _lm_eval_output(argv: list[str]):
    """The ``--output_path``/``-o`` of an lm-eval command line, if any."""
    from pathlib import Path

    for i, arg in enumerate(argv):
        for flag in ("--output_path", "--output-path", "-o"):
            if arg == flag and i + 1 < len(argv):
                return Path(argv[i + 1])
            if arg.startswith(flag + "="):
                return Path(arg.split("=", 1)[1])
    return None


def cmd_plan(args) -> int:
    """Print what the run will do, without training or creating anything.

    Stages still to do; every job (seed, dense, each expert, HMR rounds) with steps,
    tokens, parameters, FLOPs, estimated peak memory, tokens per parameter and an
    estimated wall time from a few steps measured on this machine; a warning where the
    regime map found no gain."""
    from xelm import config as cfgmod
    from xelm.pipeline.plan import format_plan, plan_run

    plan = plan_run(cfgmod.load(args.config, args.set, out_dir=args.out),
                    measure=not args.no_measure)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


def cmd_config_show(args) -> int:
    """Print the resolved config: every key with its value, one line of help and its
    default (the defaults alone without CONFIG). The output is a valid config file."""
    from xelm import config as cfgmod

    print(cfgmod.describe(cfgmod.load(args.config, args.set, out_dir=args.out)), end="")
    return 0


def cmd_status(args) -> int:
    """Print each training job of a run (state, tokens done / budget, last loss) and which
    evaluations are scored."""
    from pathlib import Path

    from xelm.train.status import eval_states, format_eval, format_states, job_states

    args.run_root = Path(args.run)
    jobs = job_states(args.run)
    evals = eval_states(args.run)
    if args.json:
        print(json.dumps({"jobs": jobs, "eval": evals}, indent=2))
    else:
        print(format_states(jobs) + "\n" + format_eval(evals))
    return 0


def cmd_adapt(args) -> int:
    """Add new languages to a finished run without touching its experts (LAPT).

    Each new language branches the expert of its typologically nearest language (or, with
    --select ppl, the expert with the lowest validation perplexity on it; with --select
    average, the parameter average of all experts) and is trained on it alone; dense and
    seed LAPT baselines get the same total budget. Results go to results.json ("adapt")
    and report.md. Resumable; a finished call is not repeated."""
    from pathlib import Path

    from xelm.pipeline.adapt import adapt
    from xelm.report.adapt import markdown_section
    from xelm.rundir import RunDir, run_lock

    args.run_root = Path(args.run)
    if not RunDir(args.run_root).config_yaml.is_file():
        raise _usage(f"{args.run} is not an xelm run directory (no config.yaml): give the "
                     "folder of a finished `xelm run`")
    with run_lock(args.run_root, "adapt"):
        out = adapt(args.run, args.languages.split(","), args.corpus, tokens=args.tokens,
                    select=args.select, features_file=args.features_file)
    print(markdown_section(out))
    return 0


def cmd_generate(args) -> int:
    """Continue a prompt with a run's expert set (greedy, or --sample with --temperature,
    --top-p and a --seed; the same seed gives the same text)."""
    from pathlib import Path

    from xelm.infer.commands import generate_text

    args.run_root = Path(args.run)
    print(generate_text(args.run, args.prompt, args.method, args.lang, args.max_new_tokens,
                        args.sample, args.temperature, args.seed, top_p=args.top_p))
    return 0


def cmd_merge(args) -> int:
    """Average a run's experts into one ordinary HF model folder (parameter averaging)."""
    from pathlib import Path

    from xelm.infer.commands import merge_run

    args.run_root = Path(args.run)
    print(merge_run(args.run, args.out, args.weights, force=args.force))
    return 0


def _version() -> str:
    from xelm import __version__

    return __version__


def cmd_export(args) -> int:
    from pathlib import Path

    from xelm.export.commands import export_run

    args.run_root = Path(args.run)
    out = export_run(args.run, args.out, args.format, args.experts_per_token,
                     args.tune_router, args.tune, args.shared, args.force)
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_push(args) -> int:
    from pathlib import Path

    from xelm.export.push import push_run

    args.run_root = Path(args.run)
    paths = push_run(args.run, args.repo, args.what, args.private, args.dry_run, args.export)
    if args.dry_run:
        print("\n".join(paths))
    else:
        print(f"uploaded {len(paths)} files to https://huggingface.co/{args.repo}")
    return 0


def _doc(module: str, name: str) -> str:
    """A library function's docstring, as a command's help (without importing torch)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_docstring(fn) or ""


def _count(text: str) -> int:
    from xelm.config import parse_count

    value = parse_count(text)
    if not isinstance(value, int) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (e.g. 500000, 500k, 5M)")
    return value


def _parser() -> argparse.ArgumentParser:
    from xelm.methods import method_help

    parser = argparse.ArgumentParser(prog="xelm", description="Cross-lingual expert language models (x-BTM).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("--version", action="version", version=f"xelm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"run": cmd_run, "plan": cmd_plan,
                **{s: _stage_command(s, STAGE_DOCS[s]) for s in STAGES}}
    for name, fn in commands.items():
        p = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__,
                           epilog="Every config key with its default and help: "
                                  "xelm config show [CONFIG]")
        p.add_argument("config", help="experiment YAML (e.g. configs/demo.yaml)")
        p.add_argument("--out", help="run directory (overrides out_dir)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.tokens=2000000 (YAML value)")
        p.add_argument("--force", action="store_true",
                       help="if the run directory was made with another config, move it aside and start again")
        if name in ("run", "plan"):
            if name == "run":
                p.add_argument("--dry-run", action="store_true",
                               help="print the plan (as `xelm plan`) and train nothing")
            p.add_argument("--json", action="store_true", help="the plan as JSON (with --dry-run)")
            p.add_argument("--no-measure", action="store_true",
                           help="plan without timing a few training steps on this machine")
        if name == "eval":
            p.add_argument("--downstream", action="store_true",
                           help="also run the xelm_cloze tasks through lm-eval (dense, top1, "
                                "ensemble_posterior; 0- and 4-shot) into results.json")
        if name in ("run", "train", "plan"):
            p.add_argument("--launcher", choices=("local", "ray", "slurm"),
                           help="where training jobs run (sets train.launcher)")
            p.add_argument("--ray-address", metavar="ADDR",
                           help="Ray cluster to join, e.g. 'auto' (sets train.ray_address)")
        p.set_defaults(func=fn)
    p = sub.add_parser("config", help="show the resolved configuration")
    show = p.add_subparsers(dest="config_command", required=True).add_parser(
        "show", help=cmd_config_show.__doc__.splitlines()[0], description=cmd_config_show.__doc__)
    show.add_argument("config", nargs="?", help="experiment YAML (default: only the defaults)")
    show.add_argument("--out", help="run directory (overrides out_dir)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config value (YAML value)")
    show.set_defaults(func=cmd_config_show)
    p = sub.add_parser("tasks", help="offline lm-eval tasks")
    build = p.add_subparsers(dest="tasks_command", required=True).add_parser(
        "build", help=cmd_tasks_build.__doc__.splitlines()[0], description=cmd_tasks_build.__doc__)
    build.add_argument("--corpus", metavar="DIR",
                       help="a run directory (its data/text/<lang>.test.txt), or a folder of "
                            "<lang>.test.txt or <lang>.txt files, one document per line")
    build.add_argument("--out", required=True, metavar="DIR", help="where the task YAMLs go")
    build.add_argument("--languages", metavar="CODES", help="comma-separated (default: all)")
    build.add_argument("--choices", type=int, default=4, help="candidates per example (default 4)")
    build.add_argument("--kind", default="cloze",
                       choices=("cloze", "minimal-pairs", "xnli", "xstorycloze"),
                       help="cloze (default) | minimal-pairs | xnli, xstorycloze (lm-eval's, "
                            "with --source-lang demonstrations)")
    build.add_argument("--pairs", default="auto", choices=("auto", "grammar", "text"),
                       help="minimal pairs from the synthetic grammar or perturbed text "
                            "(auto: grammar on a synthetic corpus)")
    build.add_argument("--source-lang", metavar="CODE",
                       help="cross-lingual few-shot variant: demonstrations from this language")
    build.add_argument("--n", type=int, default=None,
                       help="test examples per language (cloze, default 200) or pairs per "
                            "language and phenomenon (minimal-pairs, default 300), at most")
    build.add_argument("--fewshot-docs", type=int, default=16,
                       help="documents set aside for few-shot examples (default 16)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--force", action="store_true",
                       help="write into --out even if it holds files xelm did not put there")
    build.add_argument("--tokenizer", metavar="DIR",
                       help="tokenizer for --max-continuation-tokens (default: the run's)")
    build.add_argument("--max-continuation-tokens", type=int, metavar="N",
                       help="skip documents whose continuation is longer (short-context models)")
    build.set_defaults(func=cmd_tasks_build)
    p = sub.add_parser("lm-eval", help=cmd_lm_eval.__doc__.splitlines()[0],
                       description=cmd_lm_eval.__doc__, add_help=False,
                       prefix_chars="\0")  # no options of its own: all of them go to lm-eval
    p.add_argument("args", nargs=argparse.REMAINDER, help="lm-eval arguments")
    p.set_defaults(func=cmd_lm_eval)
    p = sub.add_parser("generate", help=cmd_generate.__doc__, description=cmd_generate.__doc__)
    p.add_argument("run", help="run directory")
    p.add_argument("--prompt", required=True)
    p.add_argument("--method", default="ensemble_posterior", help=method_help())
    p.add_argument("--lang", help="language code (routes top1 to that language's expert)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="with --sample (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="with --sample: draw only from the likeliest tokens whose probabilities "
                        "add up to P (nucleus sampling; default 1.0 = all tokens)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("merge", help=cmd_merge.__doc__, description=cmd_merge.__doc__)
    p.add_argument("run", help="run directory")
    p.add_argument("--out", required=True, help="folder for the merged HF model")
    p.add_argument("--weights", help="'prior' or name=weight,... (default: uniform)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds files xelm did not put there "
                        "(never inside a run's experts/, seed/, dense/ or data/)")
    p.set_defaults(func=cmd_merge)
    doc = _doc("xelm.export.commands", "export_run")
    p = sub.add_parser("export", help="export a run as one MoE model (or a mergekit-moe YAML)",
                       description=doc)
    p.add_argument("run", help="finished run directory")
    p.add_argument("--format", choices=("moe", "mergekit"), default="moe")
    p.add_argument("--out", help="output folder (default RUN/exports/<format>)")
    p.add_argument("--experts-per-token", type=int, default=2, metavar="K")
    p.add_argument("--tune-router", type=_count, default=0, metavar="TOKENS",
                   help="train the router on this many tokens of the mixed training data")
    p.add_argument("--tune", choices=("router", "all"), default="router",
                   help="what --tune-router trains: the router, or every parameter (BTX)")
    p.add_argument("--shared", choices=("auto", "average", "seed"), default="auto",
                   help="embeddings, attention and norms: the experts' average, the seed's, or "
                        "whichever has the lower validation loss (default)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds files xelm did not put there")
    p.set_defaults(func=cmd_export)
    doc = _doc("xelm.export.push", "push_run")
    p = sub.add_parser("push", help="upload a run's experts and exports to the Hugging Face Hub",
                       description=doc)
    p.add_argument("run", help="finished run directory")
    p.add_argument("--repo", required=True, metavar="ORG/NAME")
    p.add_argument("--what", choices=("experts", "export", "all"), default="all")
    p.add_argument("--export", metavar="NAME", help="which export under RUN/exports (default: moe)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no network")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("status", help=cmd_status.__doc__, description=cmd_status.__doc__)
    p.add_argument("run", help="run directory")
    p.add_argument("--json", action="store_true", help="as JSON, for scripts")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("adapt", help=cmd_adapt.__doc__.splitlines()[0], description=cmd_adapt.__doc__)
    p.add_argument("run", help="finished run directory")
    p.add_argument("--languages", required=True, metavar="CODES",
                   help="new languages, comma-separated, e.g. pl,sv")
    p.add_argument("--corpus", required=True, metavar="DIR",
                   help="directory with one <code>.txt|.jsonl|.parquet per new language")
    p.add_argument("--tokens", type=int, metavar="N",
                   help="LAPT tokens per new language (default: the run's per-expert budget)")
    p.add_argument("--select", choices=("typology", "ppl", "average"), default="typology",
                   help="each new language's parent: the expert of the typologically nearest "
                   "language (default), the expert with the lowest validation perplexity on "
                   "it, or the parameter average of all experts")
    p.add_argument("--features-file", metavar="CSV",
                   help="typology feature table (language,<features>...) listing old and new languages")
    p.set_defaults(func=cmd_adapt)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file load bars drown ours
    args = _parser().parse_args(argv)
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

    log = logging.getLogger("xelm")
    attached = {h.baseFilename: h for h in log.handlers if getattr(h, "_xelm_run_log", False)}
    root = getattr(args, "run_root", None)
    if root is not None and is_run_dir(Path(root)):
        path = str((Path(root) / "xelm.log").resolve())
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


if __name__ == "__main__":
    sys.exit(main())
