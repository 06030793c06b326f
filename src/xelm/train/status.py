"""``xelm status RUN``: each training job's state, tokens done / budget, last loss; which
evaluations are scored."""

from __future__ import annotations

from pathlib import Path

import yaml

from xelm.io import read_json
from xelm.rundir import TRAIN_STATE, RunDir
from xelm.train.checkpoint import DIRNAME


def _budgets(run: Path) -> dict[str, tuple[Path, int, int]]:
    """job name -> (folder, token budget, tokens per step), read from the run's own config."""
    rd = RunDir(run)
    cfg = yaml.safe_load(rd.config_yaml.read_text(encoding="utf-8"))
    per_step = lambda section: cfg[section]["batch_size"] * cfg["model"]["context"]  # noqa: E731
    jobs = {"seed": (rd.seed, 0 if cfg["model"]["base"] else cfg["seed"]["tokens"],
                     per_step("seed"))}
    alloc_path = rd.allocation
    hmr = (cfg.get("hmr") or {}).get("rounds")
    if alloc_path.is_file() and hmr:
        from xelm.config import HMRConfig
        from xelm.train.plan import plan_for_run

        step = per_step("train")
        fractions = HMRConfig(**cfg["hmr"]).fractions()
        plan = plan_for_run(read_json(alloc_path), hmr, fractions, cfg["train"]["tokens"], step)
        jobs["dense"] = (rd.dense, plan.dense_tokens, step)
        jobs.update({e.name: (run / e.path, e.tokens, step) for e in plan.experts})
    elif alloc_path.is_file():  # the train stage's own plan (equal or proportional budgets)
        from xelm.config import from_dict
        from xelm.train.jobs import training_plan

        step = per_step("train")
        plan = training_plan(from_dict(cfg), read_json(alloc_path),
                             read_json(rd.prepare_json))
        jobs["dense"] = (rd.dense, plan.dense_tokens, step)
        jobs.update({e.name: (run / e.path, e.tokens, step) for e in plan.experts})
    else:
        jobs["dense"] = (rd.dense, cfg["train"]["tokens"], per_step("train"))
    return jobs


def job_states(run: str | Path) -> list[dict]:
    run = Path(run)
    if not RunDir(run).config_yaml.is_file():
        raise ValueError(f"{run} is not an xelm run directory (no config.yaml)")
    rows = []
    for name, (folder, budget, per_step) in _budgets(run).items():
        row = {"job": name, "state": "pending", "tokens": 0, "budget": budget, "last_loss": None}
        done, latest = folder / TRAIN_STATE, folder / DIRNAME / "latest.json"
        if done.is_file():
            state = read_json(done)
            row.update(state="done", tokens=state.get("tokens", 0), last_loss=state.get("last_loss"))
        elif latest.is_file():
            meta = read_json(folder / DIRNAME / read_json(latest)["dir"] / "state.json")
            row.update(state="partial", tokens=meta["step"] * per_step,
                       last_loss=meta["history"].get("last_loss"))
        rows.append(row)
    return rows


def format_states(rows: list[dict]) -> str:
    lines = [f"{'job':<10} {'state':<8} {'tokens':>14} / {'budget':<14} last loss"]
    for r in rows:
        loss = f"{r['last_loss']:.4f}" if r["last_loss"] is not None else "-"
        lines.append(f"{r['job']:<10} {r['state']:<8} {r['tokens']:>14,} / {r['budget']:<14,} {loss}")
    return "\n".join(lines)


def eval_states(run: str | Path) -> dict:
    """Which of the run's evaluations are scored: seed, dense and every ``eval.methods``
    method (``RUN/eval/<name>.json``), and whether ``results.json`` and ``report.md`` exist
    (they are removed when the eval settings change)."""
    rd = RunDir(Path(run))
    cfg = yaml.safe_load(rd.config_yaml.read_text(encoding="utf-8"))
    names = ["seed", "dense", *(f"xelm_{m}" for m in cfg["eval"]["methods"])]
    return {"models": {n: (rd.eval_cache / f"{n}.json").is_file() for n in names},
            "results": rd.results.is_file(), "report": rd.report_md.is_file()}


def format_eval(state: dict) -> str:
    done = [n for n, ok in state["models"].items() if ok]
    todo = [n for n, ok in state["models"].items() if not ok]
    return (f"eval: {len(done)}/{len(state['models'])} scored"
            + (f" (to do: {', '.join(todo)})" if todo else "")
            + f"; results.json {'written' if state['results'] else 'not yet'}"
            + f"; report.md {'written' if state['report'] else 'not yet'}")
