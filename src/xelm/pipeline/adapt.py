"""Adding languages to a finished expert set (``xelm adapt``): branch, adapt, forget nothing.

Each new language branches the most similar expert -- the expert of the typologically
nearest language (``select="typology"``, the run's ``allocate.features`` or feature table)
or the expert with the lowest validation perplexity on it (``select="ppl"``) -- or the
uniform parameter average of all the set's experts (``select="average"``, as BTM
initialises a new domain's expert; all experts share the seed, so the average is a usable
model) and trains it on that language alone (language-adaptive pretraining, LAPT). The
new expert is appended to ``xelm.json``; no other expert is touched, so the old languages
keep their exact scores (their weight files are hashed before and after). Dense and seed
LAPT baselines get the same total budget on all new languages together.

Written: ``data/adapt.json`` (the record: each new language's corpus and split stats; every
call's budget and parent selection with the distances or perplexities used), the new
languages' ``data/text`` and ``data/tokens`` files, ``experts/<parent>+<lang>/``, and per
call (``key`` = sorted languages joined by '+', e.g. ``pl+sv``) ``adapt/<key>/`` with the
``dense-lapt`` and ``seed-lapt`` models, the ``average`` parent (``select="average"``),
the TF-IDF ``router`` with a centre for each new expert (``xelm.json``'s ``tfidf`` points
to it), cached scores and ``results.json``; then ``results.json["adapt"]`` (the last call) and a
report section. ``data/prepare.json`` and the old experts are never modified.

Resumable: jobs resume, scores are cached. Once a call has finished, calling it again trains
nothing: it re-registers its experts and republishes its results if a later ``xelm
train``/``eval``/``report`` rewrote ``xelm.json``, ``results.json`` or ``report.md``.
The new languages are prepared by :func:`xelm.data.prepare.prepare_languages` (with
``corpus.split: by_key``, a language with keys holds out the run's held-out keys, so its
test chapters are none the experts trained on in another language; one without keys is
split by its text, as ``prepare`` splits one). Parents are chosen by
:mod:`xelm.allocate.parents`, jobs assembled by :mod:`xelm.train.jobs`
(as the train stage's), scoring is in :mod:`xelm.evaluate.adapt`, the report section in
:mod:`xelm.report.adapt`.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import yaml

from xelm.config import Config, from_dict
from xelm.evaluate.adapt import evaluate_call
from xelm.io import read_json, write_json
from xelm.pipeline.prepare import split_seed
from xelm.rundir import TRAIN_STATE, RunDir

log = logging.getLogger("xelm")

SELECTIONS = ("typology", "ppl", "average")
AVERAGE = "average"  # the parent name of experts branched from the average of the set


class AdaptError(ValueError):
    """The languages cannot be added to this run as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- entry point
def adapt(run_dir: str | Path, languages: list[str], corpus_dir: str | Path,
          tokens: int | None = None, select: str = "typology",
          features_file: str | None = None) -> dict:
    """Add ``languages`` (read from ``corpus_dir``) to the finished run ``run_dir``.

    Returns the call's results (also in ``results.json["adapt"]``). ``tokens`` is the
    LAPT budget per new language (default: the run's per-expert budget); each baseline
    gets ``tokens`` times the number of new languages.
    """
    from xelm.experts.manifest import read_manifest
    from xelm.train.jobs import set_threads

    rd = RunDir(Path(run_dir))
    cfg = load_run(rd)
    rd.log_to_file()
    if select not in SELECTIONS:
        raise AdaptError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}")
    langs, record, manifest = new_languages(languages), read_record(rd), read_manifest(rd.root)
    key = "+".join(langs)
    if record["calls"].get(key, {}).get("done"):
        return _finished(rd, record, key, manifest)
    check_new(rd, langs, manifest, record, key)
    before = verified_hashes(rd, manifest)
    with rd.timed("adapt"):
        set_threads(cfg)  # the run's own train.threads
        prepare_new(cfg, rd, langs, corpus_dir, record, key)
        call = _plan(cfg, rd, manifest, record, key, tokens, select, features_file)
        _train(cfg, rd, key, call, manifest)
        _add_centres(cfg, rd, key, call)
        _register(rd, manifest, call)
        hashes = old_hashes_after(rd, manifest, before, set(call["experts"].values()))
        results = evaluate_call(cfg, rd, key, call, record, manifest, hashes)
    write_json(rd.adapt_results(key), results)
    publish(rd, results)
    call["done"] = True
    write_json(rd.adapt_json, record)
    return results


def load_run(rd: RunDir) -> Config:
    """The run's resolved config; the run must have finished (``xelm.json``, ``results.json``)."""
    for path in (rd.config_yaml, rd.manifest, rd.results):
        if not path.is_file():
            raise AdaptError(f"{rd.root} is not a finished xelm run (no {path.name}): run "
                             f"`xelm run CONFIG --out {rd.root}` to the end, then adapt it")
    return from_dict(yaml.safe_load(rd.config_yaml.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- the record
def new_languages(codes: list[str]) -> list[str]:
    """Normalised, sorted, distinct codes (the order of a call does not matter)."""
    from xelm.data.readers import normalize_language

    langs = [normalize_language(c) for c in codes if str(c).strip()]
    if not langs:
        raise AdaptError("no languages given: list them, e.g. --languages pl,sv")
    dupes = sorted({lang for lang in langs if langs.count(lang) > 1})
    if dupes:
        raise AdaptError(f"languages listed twice: {', '.join(dupes)}")
    return sorted(langs)


def read_record(rd: RunDir) -> dict:
    path = rd.adapt_json
    return read_json(path) if path.is_file() else {"languages": {}, "calls": {}}


def check_new(rd: RunDir, langs: list[str], manifest: dict, record: dict, key: str) -> None:
    """Refuse languages the set already serves, or that another unfinished call owns."""
    present = {*manifest["language_to_expert"], *read_json(rd.prepare_json)["languages"]}
    for lang in langs:
        owner = record["languages"].get(lang, {}).get("call")
        if owner == key:
            continue  # this very call, interrupted: resume it
        if lang in present:
            expert = manifest["language_to_expert"].get(lang, "?")
            how = f", added by `xelm adapt --languages {owner.replace('+', ',')}`" if owner else ""
            raise AdaptError(f"language {lang!r} is already in the expert set of {rd.root} "
                             f"(expert {expert!r}{how}); adapt only to languages it lacks")
        if owner:
            raise AdaptError(f"language {lang!r} belongs to an unfinished `xelm adapt "
                             f"--languages {owner.replace('+', ',')}`: run that again to finish it")


# --------------------------------------------------------------------------- hashes
def verified_hashes(rd: RunDir, manifest: dict) -> dict[str, dict[str, str]]:
    """The experts' hashes on disk, which must equal those pinned in ``xelm.json``."""
    from xelm.experts.store import expert_hashes

    disk = expert_hashes(rd.root, manifest["experts"])
    bad = [e["name"] for e in manifest["experts"] if disk[e["name"]] != e["files"]]
    if bad:
        raise AdaptError(f"weight files of expert(s) {', '.join(bad)} no longer match their "
                         "sha256 in xelm.json; refusing to adapt a modified expert set")
    return disk


def old_hashes_after(rd: RunDir, manifest: dict, before: dict, new: set[str]) -> dict:
    """Hash the old experts again: unchanged means disk and ``xelm.json`` equal ``before``."""
    from xelm.experts.store import expert_hashes

    old = [e for e in manifest["experts"] if e["name"] not in new]
    after = expert_hashes(rd.root, old)
    unchanged = all(before.get(e["name"]) == after[e["name"]] == e["files"] for e in old)
    if not unchanged:
        log.error("adapt: old experts' weight files changed while adapting; this is a bug")
    return {"unchanged": unchanged and set(after) == set(before) - new, "sha256": after}


# --------------------------------------------------------------------------- data
def prepare_new(cfg: Config, rd: RunDir, langs: list[str], corpus_dir, record: dict,
                key: str) -> None:
    """Split and tokenize the new languages as ``prepare`` did the old ones
    (:func:`xelm.data.prepare.prepare_languages`); with ``split: by_key`` a language with
    keys holds out the run's held-out keys (``data/held_out_keys.json``)."""
    from xelm.data.files import language_files
    from xelm.data.prepare import prepare_languages

    todo = [lang for lang in langs if "stats" not in record["languages"].get(lang, {})]
    if not todo:
        return
    available = language_files(Path(corpus_dir))  # CorpusError if not a corpus dir
    missing = [lang for lang in todo if lang not in available]
    if missing:
        raise AdaptError(f"the corpus directory {corpus_dir} has no file for "
                         f"{', '.join(missing)} (<code>.txt, .jsonl or .parquet); it has: "
                         f"{', '.join(available)}")
    held = None
    if cfg.corpus.split == "by_key":
        if not rd.held_out_keys.is_file():
            raise AdaptError(f"{rd.root} was prepared with corpus.split by_key but has no "
                             f"{rd.held_out_keys.relative_to(rd.root)} (made by an older "
                             "xelm?): without the run's held-out keys a new language's test "
                             "chapters could be ones the experts trained on; prepare the run again")
        held = read_json(rd.held_out_keys)
    corpus = cfg.corpus.model_copy(update={"source": "dir", "path": str(corpus_dir),
                                           "languages": todo})
    stats = prepare_languages(corpus, rd.data, seed=split_seed(cfg), tokenizer_dir=rd.tokenizer,
                              trained_here=not cfg.model.base, held_out=held,
                              workers=cfg.corpus.num_proc)
    for lang in todo:
        record["languages"][lang] = {"corpus": str(Path(corpus_dir).resolve()), "call": key,
                                     "stats": stats[lang]}
        log.info("adapt: prepared %s (%d documents)", lang,
                 sum(s["docs"] for s in stats[lang].values()))
    write_json(rd.adapt_json, record)


# --------------------------------------------------------------------------- parents
def _plan(cfg: Config, rd: RunDir, manifest: dict, record: dict, key: str, tokens: int | None,
          select: str, features_file: str | None) -> dict:
    """This call's budget and parents: chosen once, stored in the record, reused on resume."""
    from xelm.allocate.fit import features_file as features_file_for
    from xelm.allocate.parents import choose_parents, typology_distances
    from xelm.evaluate.adapt import expert_perplexities

    budget = lapt_budget(cfg, manifest, tokens)
    call = record["calls"].get(key)
    if call is not None:
        if (tokens is not None and budget != call["tokens"]) or select != call["select"]:
            raise AdaptError(f"an unfinished adapt of {key} used --tokens {call['tokens']} "
                             f"--select {call['select']}; run it again with those to resume")
        return call
    langs, old = key.split("+"), list(manifest["language_to_expert"])
    ff = features_file_for(cfg, rd, features_file) if select == "typology" else None
    if select == "typology":
        scores = typology_distances(langs, old, cfg.allocate.features, ff)
        parents = choose_parents(scores, manifest["language_to_expert"])
    elif select == "ppl":
        scores = expert_perplexities(cfg, rd, langs)
        parents = choose_parents(scores)
    else:
        names = average_parent(rd, key)
        scores = {lang: {name: 1 / len(names) for name in names} for lang in langs}
        parents = {lang: {"parent": AVERAGE, "via": f"{len(names)} experts", "value": None}
                   for lang in langs}
    for lang, p in parents.items():
        if select == "average":
            log.info("adapt: %s branches from the parameter average of %s", lang, p["via"])
        else:
            how = "nearest language" if select == "typology" else "perplexity of"
            log.info("adapt: %s branches from expert %s (%s %s = %.4g)", lang, p["parent"],
                     how, p["via"], p["value"])
    call = {"languages": langs, "tokens": budget, "select": select, "features_file": ff,
            "scores": scores, "parents": parents, "done": False,
            "experts": {lang: f"{p['parent']}+{lang}" for lang, p in parents.items()}}
    record["calls"][key] = call
    write_json(rd.adapt_json, record)
    return call


def average_parent(rd: RunDir, key: str) -> list[str]:
    """Write the uniform parameter average of the set's experts to ``adapt/<key>/average``;
    return the experts' names (written once: a resumed call reuses the folder)."""
    from xelm.experts.manifest import ExpertSet
    from xelm.infer.average import merge_to_folder

    folder = rd.adapt_call(key) / AVERAGE
    if not (folder / "merge.json").is_file():
        experts = ExpertSet.load(rd.root)
        merge_to_folder(experts, folder)
        log.info("adapt: averaged %d experts into %s", len(experts.names), folder)
    return list(read_json(folder / "merge.json")["weights"])


# --------------------------------------------------------------------------- training
def lapt_budget(cfg: Config, manifest: dict, tokens: int | None) -> int:
    """Tokens per new language in whole optimizer steps (as :func:`xelm.train.jobs.
    expert_budget`); default: the run's per-expert budget."""
    from xelm.train.jobs import one_batch

    one = one_batch(cfg)
    if tokens is None:
        counts = Counter(e["tokens"] for e in manifest["experts"]
                         if e.get("tokens") and not e.get("adapted_language"))
        tokens = counts.most_common(1)[0][0] if counts else 0
    if tokens // one < 1:
        raise AdaptError(f"--tokens {tokens:,} is less than one batch ({cfg.train.batch_size} x "
                         f"{cfg.model.context} = {one:,} tokens); raise it")
    return tokens // one * one


def call_jobs(cfg: Config, rd: RunDir, key: str, call: dict, manifest: dict) -> list:
    """The call's experts and LAPT baselines (:func:`xelm.train.jobs.lapt_jobs`)."""
    from xelm.train.jobs import lapt_jobs

    parents = {e["name"]: rd.root / e["path"] for e in manifest["experts"]}
    parents[AVERAGE] = rd.adapt_call(key) / AVERAGE
    return lapt_jobs(cfg, rd, key, call, parents)


def _train(cfg: Config, rd: RunDir, key: str, call: dict, manifest: dict) -> dict:
    """Train the call's jobs as one round, as the train stage does (:mod:`xelm.train.jobs`)."""
    from xelm.train.jobs import run_round

    return run_round(cfg, call_jobs(cfg, rd, key, call, manifest))


def _add_centres(cfg: Config, rd: RunDir, key: str, call: dict) -> None:
    """Give the new experts TF-IDF centres, so c-BTM routing (``top1_tfidf``,
    ``ensemble_tfidf``) can choose them: the set's router plus one centre per new expert,
    written to ``adapt/<key>/router`` (the run's own router is not touched)."""
    from xelm.allocate.fit import extend_router

    out = rd.adapt_call(key) / "router"
    experts = {lang: call["experts"][lang] for lang in call["languages"]}
    if extend_router(cfg, rd, experts, out):
        call["router"] = out.relative_to(rd.root).as_posix()


def _register(rd: RunDir, manifest: dict, call: dict) -> None:
    """Append the new experts to ``xelm.json``; every old entry is kept as it was."""
    from xelm.experts.manifest import write_manifest

    entries = [dict(e) for e in manifest["experts"]]
    rounds = {e["name"]: e.get("round") or 1 for e in entries}
    mapping = dict(manifest["language_to_expert"])
    for lang in call["languages"]:
        name, parent = call["experts"][lang], call["parents"][lang]["parent"]
        mapping[lang] = name
        if name in rounds:
            continue
        ledger = read_json(rd.experts / name / TRAIN_STATE)
        merged = list(call["scores"][lang]) if parent == AVERAGE else []
        entry = {"name": name, "path": f"experts/{name}", "languages": [lang],
                 "parent": parent, "round": max(rounds[n] for n in merged or [parent]) + 1,
                 "tokens": ledger["tokens"], "flops": ledger["flops"], "adapted_language": lang}
        entries.append({**entry, "averaged": merged} if merged else entry)
    write_manifest(rd.root, entries, manifest["tokenizer"], language_to_expert=mapping,
                   prior=manifest.get("prior"), tfidf=call.get("router") or manifest.get("tfidf"))
    manifest.update(read_json(rd.manifest))


# --------------------------------------------------------------------------- publishing
def _finished(rd: RunDir, record: dict, key: str, manifest: dict) -> dict:
    """A call that already finished: restore its experts and results if they were replaced."""
    call = record["calls"][key]
    served = manifest["language_to_expert"]
    if any(served.get(lang) != call["experts"][lang] for lang in call["languages"]):
        verified_hashes(rd, manifest)
        _register(rd, manifest, call)
        log.info("adapt: re-registered %s in xelm.json", ", ".join(call["experts"].values()))
    from xelm.evaluate.scoring import eval_settings

    path = rd.adapt_results(key)
    results = read_json(path)
    cfg = load_run(rd)
    if results.get("eval_settings") != eval_settings(cfg):  # rescore: keyed caches
        new = set(call["experts"].values())
        hashes = old_hashes_after(rd, manifest, verified_hashes(rd, manifest), new)
        results = evaluate_call(cfg, rd, key, call, record, manifest, hashes)
        write_json(path, results)
        log.info("adapt: %s rescored with the run's eval settings", key.replace("+", ", "))
    publish(rd, results)
    log.info("adapt: %s already added by a finished `xelm adapt`; nothing to train",
             key.replace("+", ", "))
    return results


def publish(rd: RunDir, results: dict) -> None:
    """Set ``results.json["adapt"]`` (other keys kept) and render ``report.md`` again,
    which shows the "Adding languages" section whenever that key exists."""
    from xelm.report.results import set_section, write_report

    write_report(rd, set_section(rd, "adapt", results))
