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

from xelm.config import Config
from xelm.io import read_json, write_json
from xelm.rundir import RunDir

log = logging.getLogger("xelm")

SHOTS = (0, 4)
METHODS = ("top1", "ensemble_posterior")


def build_run_tasks(cfg: Config, rd: RunDir, *, choices: int = 4, n: int = 200) -> dict:
    """The task family of ``rd``'s test documents in ``RUN/downstream/tasks``; every
    continuation fits in half the model's context."""
    from xelm.evaluate.tasks import build_tasks

    return build_tasks(rd.root, rd.downstream / "tasks", choices=choices, n=n,
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


def downstream_entry(cfg: Config, rd: RunDir, *, shots: tuple[int, ...] = SHOTS,
                     methods: tuple[str, ...] = METHODS, choices: int = 4, n: int = 200) -> dict:
    """Build the tasks and evaluate (resuming from the cache); return the ``downstream``
    section of ``results.json``."""
    from lm_eval.tasks import TaskManager

    from xelm.evaluate.scoring import eval_settings, expert_set_hash
    from xelm.experts.store import folder_hashes

    summary = build_run_tasks(cfg, rd, choices=choices, n=n)
    tasks_dir = rd.downstream / "tasks"
    fingerprint = _fingerprint(summary, tasks_dir)
    langs = summary["tasks"]
    task_manager = None
    models = _Models(cfg, rd)
    acc: dict = {}
    acc_norm: dict = {}
    weights = {"dense": folder_hashes(rd.dense), "experts": expert_set_hash(rd)}
    for name in ("dense", *(f"xelm_{m}" for m in methods)):
        for k in shots:
            cache = rd.downstream / f"{name}.{k}shot.json"
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
    return entry
