"""The argument parser of ``xelm``: every subcommand, its options and its help."""

from __future__ import annotations

import argparse

from xelm.cli.commands import (STAGE_DOCS, cmd_adapt, cmd_config_show, cmd_export, cmd_generate,
                              cmd_lm_eval, cmd_merge, cmd_plan, cmd_push, cmd_run, cmd_status,
                              cmd_tasks_build, stage_command)
from xelm.pipeline import STAGES


def _version() -> str:
    from xelm import __version__

    return __version__


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


def build_parser() -> argparse.ArgumentParser:
    from xelm.methods import method_help

    parser = argparse.ArgumentParser(prog="xelm", description="Cross-lingual expert language models (x-BTM).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("--version", action="version", version=f"xelm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"run": cmd_run, "plan": cmd_plan,
                **{s: stage_command(s, STAGE_DOCS[s]) for s in STAGES}}
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
