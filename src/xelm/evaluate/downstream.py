"""``xelm eval --downstream``: in-context continuation choice through lm-eval.

Builds the offline ``xelm_cloze`` task family (:mod:`xelm.evaluate.tasks`) from the
run's held-out documents, evaluates the dense model (lm-eval's own ``hf`` model on
``RUN/dense``), x-ELM ``top1`` (each language's task routed to its expert) and the
``ensemble_posterior`` mixture, 0-shot and 4-shot, and adds to ``results.json``::

    "downstream": {"accuracy": {model: {shots: {lang: acc}}},
                   "accuracy_norm": {same shape},   # lm-eval's acc_norm
                   "n_examples": {lang: n}, "choices": 4, "chance": 0.25,
                   "shots": [0, 4], "positions": 128, "skipped": {lang: why},
                   "tasks": "downstream/tasks"}

Each (model, shots) result is cached in ``RUN/downstream/`` with its key (a fingerprint of
the tasks, the SHA-256 of the weights scored, the batch size), so an interrupted evaluation
resumes and a rebuilt task set, a changed expert set or other settings are rescored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics

from xelm.config import Config
from xelm.io import atomic_write_text, read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")

SHOTS = (0, 4)
METHODS = ("top1", "ensemble_posterior")
SECTION = "## Downstream"


def build_run_tasks(cfg: Config, rd: RunDir, *, choices: int = 4, n: int = 200) -> dict:
    """The task family of ``rd``'s test documents in ``RUN/downstream/tasks``; every
    continuation fits in half the model's context."""
    from xelm.evaluate.tasks import build_tasks

    return build_tasks(rd.root, rd.root / "downstream" / "tasks", choices=choices, n=n,
                       seed=cfg.random_seed, tokenizer=rd.tokenizer,
                       max_continuation_tokens=max(1, cfg.model.context // 2))


def _fingerprint(summary: dict, tasks_dir) -> str:
    digest = hashlib.sha256()
    for path in sorted((tasks_dir / "data").glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(json.dumps(summary["tasks"], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _simple_evaluate(lm, tasks: list[str], shots: int, task_manager) -> dict:
    import lm_eval

    quiet = logging.getLogger("lm_eval")  # one truncation warning per request otherwise
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots,
                                      task_manager=task_manager, bootstrap_iters=0,
                                      log_samples=False)
    finally:
        quiet.setLevel(level)
    return out["results"]


def _scores(results: dict, langs: dict[str, str]) -> dict[str, dict[str, float]]:
    return {key: {lang: results[task][f"{metric},none"] for lang, task in langs.items()}
            for key, metric in (("acc", "acc"), ("acc_norm", "acc_norm"))}


class _Models:
    """The three evaluated models, loaded once each and only when a result is missing."""

    def __init__(self, cfg: Config, rd: RunDir):
        self.cfg, self.rd, self._dense, self._experts = cfg, rd, None, None

    def dense(self):
        if self._dense is None:
            from lm_eval.api.registry import get_model

            import xelm.evaluate.lm_eval_model  # noqa: F401  (registers hf and xelm)

            self._dense = get_model("hf")(pretrained=str(self.rd.dense),
                                          tokenizer=str(self.rd.tokenizer), device="cpu",
                                          batch_size=self.cfg.eval.batch_size)
        return self._dense

    def xelm(self, method: str, lang: str | None):
        from xelm.evaluate.lm_eval_model import XelmLM
        from xelm.experts.manifest import ExpertSet

        if self._experts is None:
            self._experts = ExpertSet.load(self.rd.root)
        return XelmLM(run=str(self.rd.root), expert_set=self._experts, method=method,
                      lang=lang, batch_size=self.cfg.eval.batch_size)


def _evaluate_model(models: _Models, name: str, langs: dict[str, str], shots: int,
                    task_manager) -> dict:
    if name == "dense":
        return _scores(_simple_evaluate(models.dense(), list(langs.values()), shots,
                                        task_manager), langs)
    method = name.removeprefix("xelm_")
    if method != "top1":
        return _scores(_simple_evaluate(models.xelm(method, None), list(langs.values()),
                                        shots, task_manager), langs)
    out: dict[str, dict[str, float]] = {"acc": {}, "acc_norm": {}}
    for lang, task in langs.items():  # top-1: one task at a time, routed by its language
        part = _scores(_simple_evaluate(models.xelm("top1", lang), [task], shots, task_manager),
                       {lang: task})
        for key in out:
            out[key].update(part[key])
    return out


def downstream(cfg: Config, rd: RunDir, *, shots: tuple[int, ...] = SHOTS,
               methods: tuple[str, ...] = METHODS, choices: int = 4, n: int = 200) -> dict:
    """Build the tasks, evaluate (resuming from the cache), merge ``downstream`` into
    ``results.json`` and the report; return the ``downstream`` entry."""
    from lm_eval.tasks import TaskManager

    from xelm.evaluate.stage import eval_settings, expert_set_hash, weight_hashes

    summary = build_run_tasks(cfg, rd, choices=choices, n=n)
    tasks_dir = rd.root / "downstream" / "tasks"
    fingerprint = _fingerprint(summary, tasks_dir)
    langs = summary["tasks"]
    task_manager = None
    models = _Models(cfg, rd)
    acc: dict = {}
    acc_norm: dict = {}
    weights = {"dense": weight_hashes(rd.dense), "experts": expert_set_hash(rd)}
    for name in ("dense", *(f"xelm_{m}" for m in methods)):
        for k in shots:
            cache = rd.root / "downstream" / f"{name}.{k}shot.json"
            cached = read_json(cache) if cache.is_file() else {}
            key = {"tasks": fingerprint, "batch_size": cfg.eval.batch_size,
                   "weights": weights[name] if name in weights else weights["experts"]}
            if cached.get("key") != key:
                log.info("downstream: %s, %d-shot, %d languages", name, k, len(langs))
                if task_manager is None:
                    task_manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
                cached = {"key": key, **_evaluate_model(models, name, langs, k, task_manager)}
                write_json(cache, cached)
            acc.setdefault(name, {})[str(k)] = cached["acc"]
            acc_norm.setdefault(name, {})[str(k)] = cached["acc_norm"]
    entry = {"accuracy": acc, "accuracy_norm": acc_norm, "n_examples": summary["n_examples"],
             "choices": choices, "chance": 1 / choices, "shots": list(shots),
             "positions": cfg.model.context, "skipped": summary["skipped"],
             "tasks": "downstream/tasks", "eval_settings": eval_settings(cfg)}
    _merge_results(rd, entry)
    _update_report(rd, entry)
    return entry


def _merge_results(rd: RunDir, entry: dict) -> None:
    results = read_json(rd.results) if rd.results.is_file() else {}
    results["downstream"] = entry
    write_json(rd.results, results)


def _update_report(rd: RunDir, entry: dict) -> None:
    """Replace (or append) the Downstream section of ``report.md``."""
    path = rd.root / "report.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if SECTION in text:
        head, _, tail = text.partition(SECTION)
        rest = tail.split("\n## ", 1)
        text = head + ("## " + rest[1] if len(rest) > 1 else "")
    atomic_write_text(path, text.rstrip("\n") + "\n\n" + markdown_section(entry))


def markdown_section(entry: dict) -> str:
    """The ``## Downstream`` section of ``report.md`` from ``results["downstream"]``."""
    acc, n = entry["accuracy"], entry["n_examples"]
    cols = [(model, shots) for model in acc for shots in acc[model]]
    head = "| language | n | " + " | ".join(f"{m} {s}-shot" for m, s in cols) + " |"
    rule = "|---" * (len(cols) + 2) + "|"
    rows = [f"| {lang} | {count} | " + " | ".join(f"{100 * acc[m][s][lang]:.1f}" for m, s in cols)
            + " |" for lang, count in n.items()]
    means = [statistics.fmean(acc[m][s][lang] for lang in n) for m, s in cols]
    rows.append(f"| mean | {sum(n.values())} | "
                + " | ".join(f"{100 * v:.1f}" for v in means) + " |")
    skipped = entry.get("skipped") or {}
    note = f" Skipped (too few held-out documents): {', '.join(skipped)}." if skipped else ""
    if entry.get("positions"):
        note += (f" Prompts are cut from the left to the models' {entry['positions']} "
                 "positions: few-shot examples that do not fit are lost.")
    return "\n".join([
        f"{SECTION} (continuation choice, accuracy %)", "",
        f"`xelm_cloze`: the first sentences of each held-out document and {entry['choices']} "
        f"candidate next sentences (distractors from other documents of the same language); "
        f"chance {100 * entry['chance']:.0f}%. n = test examples per language; few-shot "
        f"examples come from other documents.{note}", "",
        head, rule, *rows, ""])
