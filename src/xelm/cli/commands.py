"""The subcommands: one function each, its docstring is its help. Each parses nothing and
decides nothing: it reads its arguments and calls the pipeline (or the library command)."""

from __future__ import annotations

import json
from contextlib import contextmanager

from xelm.pipeline import STAGES  # the stages of `xelm run`, in order


@contextmanager
def open_run_for(args, name: str):
    """The config of ``args``, then its run directory opened and locked for ``name``
    (:func:`xelm.pipeline.run.open_run`); yields ``(cfg, rd)``."""
    from pathlib import Path

    from xelm import config as cfgmod
    from xelm.pipeline.run import open_run

    cfg = cfgmod.load(args.config, args.set, out_dir=args.out)
    args.run_root = Path(cfg.out_dir)  # where a failure's traceback is logged
    with open_run(cfg, name, force=args.force) as rd:
        yield cfg, rd


class _usage(ValueError):
    pass


def cmd_run(args) -> int:
    """Run the whole x-BTM experiment (prepare, seed, allocate, train, eval, report).

    Resumable: run it again after an interruption and it continues where it stopped.
    --dry-run prints the plan (`xelm plan`) and trains nothing."""
    if args.dry_run:
        return cmd_plan(args)
    from xelm.pipeline.run import run_stage

    with open_run_for(args, "run") as (cfg, rd):
        out = None
        for name in STAGES:
            out = run_stage(name, cfg, rd)
    print(out)
    print(f"\nreport: {rd.report_md}")
    return 0


def stage_command(name: str, doc: str):
    def command(args) -> int:
        from xelm import extras
        from xelm.pipeline.run import require, run_stage

        if getattr(args, "downstream", False):  # before any compute
            extras.require("lm_eval", "xelm eval --downstream")
        with open_run_for(args, name) as (cfg, rd):
            require(rd, name)
            out = run_stage(name, cfg, rd)
            if getattr(args, "downstream", False):
                from xelm.pipeline.downstream import run_downstream

                print(run_downstream(cfg, rd))
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


def cmd_tasks_build(args) -> int:
    """Build offline lm-eval tasks from held-out documents.

    --kind cloze (default): xelm_cloze, XStoryCloze-style (the first sentences of a
    document, the true next sentence and distractors from other documents of the same
    language), one task per language and the group xelm_cloze; --source-lang adds the
    cross-lingual few-shot variant xelm_cloze_x_<source>_<lang>. --kind minimal-pairs:
    xelm_pairs, BLiMP-style pairs per language and phenomenon (grammar pairs on a
    synthetic corpus, perturbed held-out sentences on real text). --kind xnli|xstorycloze:
    lm-eval's own tasks with few-shot examples from --source-lang (needs the hub to run)."""
    from xelm.pipeline.tasks import build_task_folder

    languages = args.languages.split(",") if args.languages else None
    print(build_task_folder(
        args.kind, args.corpus, args.out, force=args.force, languages=languages,
        pairs=args.pairs, n=args.n, seed=args.seed, choices=args.choices,
        fewshot_docs=args.fewshot_docs, tokenizer=args.tokenizer,
        max_continuation_tokens=args.max_continuation_tokens, source_lang=args.source_lang))
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
