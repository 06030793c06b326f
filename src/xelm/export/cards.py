"""Model cards (``README.md``, ``huggingface_hub.ModelCard``) for a run's models.

Every expert folder, ``dense/``, every export under ``RUN/exports/`` and the run as a
whole get a card: what the model is (an x-ELM expert, the dense baseline, an MoE
export), its languages, where it came from (parent, seed model, random seed, training
tokens), its evaluation figures from ``results.json``, the corpus and its licences as
configured, how to load it, and links to its siblings. Cards are plain text beside the
weights: writing them changes no ``*.safetensors`` file, so the SHA-256s in ``xelm.json``
still verify.

``repo`` (``ORG/NAME``) is where ``xelm push`` puts the run; with it the cards show hub
ids and links, without it local paths relative to the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from xelm.io import read_json
from xelm.rundir import RunDir

TAGS = ["xelm", "x-elm", "cross-lingual-expert-lm", "branch-train-merge"]
PAPER = "https://arxiv.org/abs/2401.10440"


def run_facts(run: Path) -> dict:
    """What every card of a run needs, read once."""
    import yaml

    from xelm.experts.manifest import read_manifest

    run = Path(run)
    rd = RunDir(run)
    cfg_path = rd.config_yaml
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    results = read_json(rd.results) if rd.results.is_file() else {}
    return {"run": run, "name": run.resolve().name, "cfg": cfg or {},
            "manifest": read_manifest(run), "results": results}


def _corpus(f: dict, licenses: dict | None) -> str:
    corpus = f["cfg"].get("corpus", {})
    source = corpus.get("source", "synthetic")
    if source == "synthetic":
        what = "xelm's embedded synthetic corpus (generated languages; no licence restrictions)"
    elif source == "hf":
        what = f"the Hugging Face dataset `{corpus.get('hf', {}).get('name')}`"
    else:  # a local path says nothing to a reader elsewhere: its last part only
        what = f"the local corpus `{Path(str(corpus.get('path') or '?')).name}` ({source})"
    licenses = licenses or corpus.get("licenses")
    if licenses:
        rows = "\n".join(f"| {lang} | {text} |" for lang, text in sorted(licenses.items()))
        lic = "Licences of the training text, as configured:\n\n| language | licence |\n|---|---|\n" + rows
    elif source == "synthetic":
        lic = ""
    else:
        lic = ("The run's config records no licences for this corpus: check the licence of "
               "every source text before you redistribute this model.")
    return f"Trained on {what}.\n\n{lic}".rstrip()


def _ppl_table(results: dict, langs: list[str], columns: dict[str, str]) -> str:
    """Per-language test perplexity (lower is better) for the given results keys."""
    ppl = results.get("perplexity", {})
    cols = {label: key for label, key in columns.items() if key in ppl}
    if not cols or not langs:
        return "No evaluation figures yet (run `xelm eval`)."
    head = "| language | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    rows = []
    for lang in langs:
        vals = [ppl[key].get(lang) for key in cols.values()]
        rows.append(f"| {lang} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
                    + " |")
    return "Test perplexity per language (lower is better):\n\n" + head + "\n".join(rows)


def _where(repo: str | None, run: Path, rel: str) -> tuple[str, str]:
    """(load path, subfolder argument) for a model at ``rel`` inside the run/repo."""
    if repo:
        return repo, f', subfolder="{rel}"' if rel else ""
    return os.fspath(Path(run).resolve() / rel), ""


def _load_snippet(repo: str | None, run: Path, rel: str) -> str:
    path, sub = _where(repo, run, rel)
    return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{path}"{sub})\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{path}"{sub})\n```')


def _set_snippet(repo: str | None, run: Path) -> str:
    if repo:
        fetch = ("from huggingface_hub import snapshot_download\n\n"
                 f'run = snapshot_download("{repo}")  # the expert set: xelm.json + experts/\n')
    else:
        fetch = f'run = "{os.fspath(Path(run).resolve())}"\n'
    return ("```python\n" + fetch + "from xelm.experts.manifest import ExpertSet\n\n"
            "experts = ExpertSet.load(run)  # checks every weight file's SHA-256\n```")


def _link(f: dict, repo: str | None, here: str | None, rel: str) -> str:
    """Where the card at ``here`` (inside the run/repo; None: outside) finds ``rel``."""
    if repo:
        return f"https://huggingface.co/{repo}/tree/main/{rel}"
    if here is None:
        return (Path(f["run"]).resolve() / rel).as_posix()
    return os.path.relpath(rel, here or ".").replace(os.sep, "/")


def _siblings(f: dict, repo: str | None, here: str | None, skip: str | None = None,
              links: bool = True) -> str:
    lines = []
    for e in f["manifest"]["experts"]:
        if e["name"] != skip:
            name = f"[{e['name']}]({_link(f, repo, here, e['path'])})" if links else e["name"]
            lines.append(f"- {name}: " + ", ".join(e["languages"]))
    return "\n".join(lines)


def _card(languages: list[str], body: str, license: str | None = None, extra_tags=()):
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(language=sorted(set(languages)) or None, library_name="transformers",
                         pipeline_tag="text-generation", tags=[*TAGS, *extra_tags],
                         license=license)
    return ModelCard("---\n" + data.to_yaml() + "\n---\n" + body.strip() + "\n")


def _served(f: dict, name: str) -> list[str]:
    return sorted(lang for lang, e in f["manifest"]["language_to_expert"].items() if e == name)


def expert_card(run, name: str, repo: str | None = None, licenses: dict | None = None,
                license: str | None = None, facts: dict | None = None):
    """The card of expert ``name``."""
    f = facts or run_facts(run)
    entry = next((e for e in f["manifest"]["experts"] if e["name"] == name), None)
    if entry is None:
        raise ValueError(f"no expert {name!r} in {run}/xelm.json")
    served = _served(f, name) or list(entry["languages"])
    seed_tokens = f["results"].get("budget", {}).get("seed_tokens")
    tokens = entry.get("tokens")
    table = _ppl_table(f["results"], served, {"this expert (x-ELM top-1)": "xelm_top1",
                                              "dense": "dense", "seed": "seed"})
    body = f"""
# {f['name']} / {name}: an x-ELM expert for {', '.join(entry['languages'])}

A cross-lingual expert language model ([x-ELM]({PAPER}), Blevins et al. 2024), made with
xelm: branched from a shared seed model and trained only on its own languages. It is one of {len(f['manifest']['experts'])} experts of the run
`{f['name']}`; use it alone for its languages, or with its siblings as an ensemble.

- languages: {', '.join(entry['languages'])} (top-1 expert for: {', '.join(served)})
- parent: `{entry.get('parent')}` (round {entry.get('round', 1)}); seed model trained on
  {'-' if seed_tokens is None else f'{seed_tokens:,}'} tokens of all languages
- training tokens: {'-' if tokens is None else f'{tokens:,}'}; random seed
  {f['cfg'].get('random_seed', '-')}

## Evaluation

{table}

## Training data

{_corpus(f, licenses)}

## How to load

{_load_snippet(repo, f['run'], entry['path'])}

The whole expert set (routing, ensembles, generation) with xelm:

{_set_snippet(repo, f['run'])}

## Siblings

{_siblings(f, repo, entry['path'], skip=name)}
"""
    return _card(entry["languages"], body, license)


def dense_card(run, repo: str | None = None, licenses: dict | None = None,
               license: str | None = None, facts: dict | None = None):
    """The card of the dense baseline (the seed trained on all languages)."""
    f = facts or run_facts(run)
    langs = f["results"].get("languages") or sorted(f["manifest"]["language_to_expert"])
    tokens = f["results"].get("budget", {}).get("dense_tokens")
    table = _ppl_table(f["results"], langs, {"dense": "dense", "x-ELM top-1": "xelm_top1",
                                             "seed": "seed"})
    body = f"""
# {f['name']} / dense: the dense multilingual baseline of an x-ELM run

The seed model trained on all {len(langs)} languages for
{'-' if tokens is None else f'{tokens:,}'} tokens: the same training compute as the
run's expert set together. It is the baseline the [x-ELM]({PAPER}) experts are compared
with. Random seed {f['cfg'].get('random_seed', '-')}.

## Evaluation

{table}

## Training data

{_corpus(f, licenses)}

## How to load

{_load_snippet(repo, f['run'], 'dense')}

## The experts of this run

{_siblings(f, repo, 'dense')}
"""
    return _card(langs, body, license)


def export_card(run, export_dir, repo: str | None = None, licenses: dict | None = None,
                license: str | None = None, facts: dict | None = None, root: bool = False):
    """The card of an export folder (``export.json``); ``root``: it is the repo's root."""
    import math

    f = facts or run_facts(run)
    record = read_json(Path(export_dir) / "export.json")
    langs = sorted(lang for v in record.get("languages", {}).values() for lang in v)
    tuning = record.get("router_tuning")
    nll = (tuning or {}).get("valid_nll_after") or record["shared_tried"][record["shared"]]["valid_nll"]
    rows = "\n".join(f"| {lang} | {math.exp(v):.2f} |" for lang, v in sorted(nll.items()))
    tuned = ("no router tuning" if not tuning else
             f"router tuned on {tuning['tokens']:,} tokens of the mixed training data "
             f"(`{tuning['what']}`)")
    folder, base = Path(export_dir).resolve(), Path(run).resolve()
    rel = os.path.relpath(folder, base) if base in folder.parents else None
    load = (_load_snippet(repo, f["run"], "") if root and repo else
            _load_snippet(None, Path(export_dir), ""))
    shared = ("the experts' average" if record["shared"] == "average"
              else "the seed model's")
    experts = "\n".join(f"| {e} | {', '.join(v)} |" for e, v in record["languages"].items())
    # at a repository's root the experts are elsewhere: names only
    siblings = _siblings(f, repo, rel, links=not root)
    body = f"""
# {f['name']}: x-ELM experts as one mixture-of-experts model

The {len(record['experts'])} experts of the x-ELM run `{f['name']}` merged into one
`{record['architecture']}` (as in Branch-Train-MiX): each expert's feed-forward blocks
are one expert of every MoE layer, the embeddings, attention and norms are
{shared}, and
{record['experts_per_token']} experts serve each token. The router was initialised from
the mean hidden state of each expert's languages' validation text; {tuned}. It needs no
language label.

| expert | languages |
|---|---|
{experts}

## Evaluation

Validation perplexity per language (the text the export was checked on; see the run's
benchmarks for test figures):

| language | perplexity |
|---|---|
{rows}

Training tokens behind it: experts {record['tokens']['experts']:,}, router tuning
{record['tokens']['router_tuning']:,}.

## Training data

{_corpus(f, licenses)}

## How to load

{load}

Loading in serving engines (vLLM and others) has not been checked yet.

## The experts

{siblings}
"""
    return _card(langs, body, license, extra_tags=("moe", "mixtral"))


def set_card(run, repo: str | None = None, licenses: dict | None = None,
             license: str | None = None, facts: dict | None = None):
    """The card of the whole run (the repo root of ``xelm push --what experts|all``)."""
    f = facts or run_facts(run)
    langs = sorted(f["manifest"]["language_to_expert"])
    table = _ppl_table(f["results"], langs, {"x-ELM top-1": "xelm_top1", "dense": "dense",
                                             "seed": "seed"})
    body = f"""
# {f['name']}: an x-ELM expert set

{len(f['manifest']['experts'])} cross-lingual expert language models ([x-ELM]({PAPER}))
branched from one seed and trained on their own languages, with the dense baseline of
equal compute. `xelm.json` lists each expert's folder, languages, parent, tokens and
the SHA-256 of its weights.

{_siblings(f, repo, '')}

## Evaluation

{table}

## Training data

{_corpus(f, licenses)}

## How to load

{_set_snippet(repo, f['run'])}
"""
    return _card(langs, body, license)


def export_dirs(run) -> list[Path]:
    """Exports of ``run`` that cards and pushes know about: ``RUN/exports/*/export.json``."""
    base = RunDir(Path(run)).exports
    return sorted(p.parent for p in base.glob("*/export.json")) if base.is_dir() else []


def write_model_cards(run_dir, repo: str | None = None, licenses: dict | None = None,
                      license: str | None = None) -> list[Path]:
    """Write README.md model cards into every expert folder, dense/ and each MoE export
    under RUN/exports/ (weights untouched: xelm.json still verifies). Returns the files."""
    run = Path(run_dir)
    f = run_facts(run)
    written = []
    for e in f["manifest"]["experts"]:
        path = run / e["path"] / "README.md"
        expert_card(run, e["name"], repo, licenses, license, f).save(os.fspath(path))
        written.append(path)
    dense = RunDir(run).dense
    if dense.is_dir():
        dense_card(run, repo, licenses, license, f).save(os.fspath(dense / "README.md"))
        written.append(dense / "README.md")
    for folder in export_dirs(run):
        if read_json(folder / "export.json").get("format") == "moe":
            export_card(run, folder, repo, licenses, license, f).save(os.fspath(folder / "README.md"))
            written.append(folder / "README.md")
    return written
