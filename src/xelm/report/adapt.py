"""The report's "Adding languages" section, from ``results.json["adapt"]``."""

from __future__ import annotations

import statistics

from xelm.evaluate.adapt import NEW_MODELS

SECTION = "## Adding languages"


def _change(new: float | None, old: float | None) -> str:
    return "-" if new is None or old is None else f"{100 * (new / old - 1):+.1f}%"


def _new_table(res: dict) -> list[str]:
    ppl, bpb = res["perplexity"], res["bits_per_byte"]
    lines = ["| language | parent (via) | tokens/byte | seed | dense | seed LAPT | dense LAPT | "
             "x-ELM new expert | x-ELM posterior ensemble | new expert vs dense LAPT | "
             "ensemble vs dense LAPT | bits/byte dense LAPT | x-ELM new expert |",
             "|---" * 13 + "|"]
    for lang in res["languages"]:
        p = res["parents"][lang]
        # (results written before a model was scored lack it: "-")
        got = {m: ppl[m][lang] if m in ppl else None for m in NEW_MODELS}
        cells = " | ".join("-" if v is None else f"{v:.2f}" for v in got.values())
        value = "" if p["value"] is None else f", {p['value']:.3g}"
        lines.append(f"| {lang} | {p['parent']} ({p['via']}{value}) | "
                     f"{res['tokens_per_byte'][lang]:.3f} | {cells} | "
                     f"{_change(ppl['xelm_top1'][lang], ppl['dense_lapt'][lang])} | "
                     f"{_change(got['xelm_posterior'], ppl['dense_lapt'][lang])} | "
                     f"{bpb['dense_lapt'][lang]:.3f} | {bpb['xelm_top1'][lang]:.3f} |")
    return lines


def _forgetting_table(res: dict) -> list[str]:
    f = res["forgetting"]["perplexity"]
    lines = ["| language | dense | dense LAPT | change | x-ELM top-1 in eval | now | change |",
             "|---" * 7 + "|"]
    for lang in res["old_languages"]:
        was = f["xelm_top1_before"].get(lang)
        lines.append(f"| {lang} | {f['dense'][lang]:.2f} | {f['dense_lapt'][lang]:.2f} | "
                     f"{_change(f['dense_lapt'][lang], f['dense'][lang])} | "
                     f"{'-' if was is None else f'{was:.2f}'} | {f['xelm_top1'][lang]:.2f} | "
                     f"{_change(f['xelm_top1'][lang], was)} |")
    return lines


def markdown_section(res: dict) -> str:
    """The report section: perplexity on the new languages, forgetting on the old ones."""
    b, old_tpb = res["budget"], list(res["tokens_per_byte_old"].values())
    via = {"typology": "the expert chosen by nearest language",
           "ppl": "the expert chosen by validation perplexity",
           "average": "the parameter average of all experts"}[res["select"]]
    files = sum(len(v) for v in res["old_expert_hashes"].values())
    lines = [SECTION, "", f"Each new language branched {via} and was "
             f"trained on {b['tokens_per_language']:,} tokens of it (LAPT); dense and seed LAPT "
             f"were trained on all new languages together (sampled uniformly) for {b['dense_lapt_tokens']:,} tokens. "
             "Perplexity on the test split (lower is better; x-ELM new expert: top-1 by the language "
             "label; posterior ensemble: every expert of the adapted set, weighted by its "
             "posterior on the preceding block and the prefix, no label):", "", *_new_table(res), ""]
    if old_tpb:
        lines += [f"Tokens per byte of the old languages: mean {statistics.fmean(old_tpb):.3f}.",
                  ""]
    lines += ["Forgetting: perplexity on the old languages.", "", *_forgetting_table(res), "",
              "Old experts' weight files byte-identical after adapting: "
              f"{'**yes**' if res['old_experts_unchanged'] else '**NO**'} "
              f"(sha256 of {files} files, before and after).", ""]
    return "\n".join(lines)
