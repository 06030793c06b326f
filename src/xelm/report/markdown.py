"""``report.md`` and the terminal table, from ``results.json`` alone."""

from __future__ import annotations

import statistics


def _models(results: dict) -> list[str]:
    return list(results["perplexity"])


def gains(results: dict, method: str = "xelm_top1", metric: str = "perplexity") -> dict[str, float]:
    """Relative reduction of ``metric`` by ``method`` versus dense, per language (positive = better)."""
    table = results[metric]
    return {lang: 1 - table[method][lang] / table["dense"][lang] for lang in results["languages"]}


def summary(results: dict, method: str = "xelm_top1") -> dict:
    ppl, bpb = gains(results, method), gains(results, method, "bits_per_byte")
    values = list(ppl.values())
    return {"method": method, "wins": sum(v > 0 for v in values), "languages": len(values),
            "mean_ppl_reduction": statistics.fmean(values),
            "mean_bpb_reduction": statistics.fmean(bpb.values()),
            "std_ppl_reduction": statistics.pstdev(values),
            "min_ppl_reduction": min(values), "max_ppl_reduction": max(values)}


def table(results: dict, metric: str = "perplexity") -> str:
    models = _models(results)
    head = "| language | " + " | ".join(models) + " | top1 vs dense |"
    rule = "|---" * (len(models) + 2) + "|"
    fmt = "{:.2f}" if metric == "perplexity" else "{:.3f}"
    delta = gains(results, metric=metric) if "xelm_top1" in models else {}
    rows = []
    for lang in results["languages"]:
        cells = [fmt.format(results[metric][m][lang]) for m in models]
        d = f"{-100 * delta[lang]:+.1f}%" if lang in delta else "-"
        rows.append(f"| {lang} | " + " | ".join(cells) + f" | {d} |")
    return "\n".join([head, rule, *rows])


def budget_line(results: dict) -> str:
    b = results["budget"]
    earlier = b.get("hmr_round_tokens") or {}  # HMR rounds before the final expert set
    experts = sum(b["expert_tokens"].values()) + sum(earlier.values())
    dense = b["dense_tokens"] or 0
    diff = abs(experts - dense) / max(dense, 1)
    verdict = "equal within 1%" if diff <= 0.01 else f"NOT equal ({100 * diff:.1f}% apart)"
    hmr = "".join(f"round {r} {t:,} + " for r, t in earlier.items())
    final = f" ({hmr}final round {sum(b['expert_tokens'].values()):,})" if earlier else ""
    return (f"Training tokens: dense {dense:,}; experts {experts:,} in total{final} over "
            f"{len(b['expert_tokens'])} experts ({verdict}); seed {b['seed_tokens'] or 0:,}.")


def allocation_table(results: dict, colours: dict[str, str] | None = None) -> str:
    """Each expert: its languages, its training tokens and their share of the experts'."""
    b = results["budget"]
    tokens, langs = b["expert_tokens"], b.get("expert_languages") or {}
    total = sum(tokens.values()) or 1
    colours = colours or {}
    head = "| expert | languages | training tokens | share |" + (" colour in the tree |"
                                                                  if colours else "")
    rule = "|---|---|---|---|" + ("---|" if colours else "")
    rows = [f"| {name} | {' '.join(langs.get(name, [])) or '-'} | {n:,} | {100 * n / total:.1f}% |"
            + (f" {colours.get(name, '-')} |" if colours else "") for name, n in tokens.items()]
    return "\n".join([head, rule, *rows])


def tokens_per_parameter(results: dict) -> tuple[str, str | None]:
    """The line on training tokens per parameter, and the regime warning when it applies."""
    from xelm.train.budget import REGIME_MIN_TOKENS_PER_PARAMETER as LOW

    b = results["budget"]
    params = b.get("parameters")
    if not params:
        return "", None
    seed, dense = b.get("seed_tokens") or 0, b.get("dense_tokens") or 0
    total = (seed + dense) / params
    line = (f"Model: {params:,} parameters. Training tokens per parameter: seed {seed / params:.1f}, "
            f"dense (= the experts together) {dense / params:.1f}; total {total:.1f}.")
    warning = None
    if total < LOW:
        warning = (f"**Warning:** {total:.1f} total training tokens per parameter is below "
                   f"~{LOW}, where BENCHMARKS.md's regime map (bench/results/regime.png) found no "
                   "mean gain for the experts over dense: train the seed longer or use a "
                   "smaller model.")
    return line, warning


def render(results: dict, title: str = "x-ELM run", figures: dict[str, str] | None = None,
           colours: dict[str, str] | None = None, plots_missing: bool = False) -> str:
    parts = [f"# {title}", "", budget_line(results), ""]
    line, warning = tokens_per_parameter(results)
    for paragraph in (line, warning):
        if paragraph:
            parts += [paragraph, ""]
    if "xelm_top1" in results["perplexity"]:
        s = summary(results)
        parts += [f"x-ELM (top-1) beats dense on **{s['wins']}/{s['languages']}** languages. "
                  f"Perplexity vs dense: mean {-100 * s['mean_ppl_reduction']:+.1f}% "
                  f"(std {100 * s['std_ppl_reduction']:.1f}; best {-100 * s['max_ppl_reduction']:+.1f}%, "
                  f"worst {-100 * s['min_ppl_reduction']:+.1f}%); bits per byte vs dense: mean "
                  f"{-100 * s['mean_bpb_reduction']:+.1f}%. Negative is better.", ""]
    if results["budget"].get("expert_tokens"):
        parts += ["## Allocation", "", allocation_table(results, colours), ""]
    parts += ["## Perplexity (test split, lower is better)", "", table(results), "",
              "## Bits per byte", "", table(results, "bits_per_byte"), ""]
    if figures:
        parts += ["## Figures", ""]
        parts += [f"![{caption}]({path})  \n*{caption}*\n" for caption, path in figures.items()]
    elif plots_missing:
        parts += ["Figures need matplotlib: `pip install 'xelm[plots]'`, then `xelm report`.", ""]
    parts += [*_extra_sections(results),
              "## Time per stage (seconds)", "",
              ", ".join(f"{k} {v:.0f}" for k, v in results.get("timing", {}).items()), ""]
    return "\n".join(parts)


def _extra_sections(results: dict) -> list[str]:
    """Sections written by other commands (adapt, eval --downstream), when their results exist."""
    parts = []
    if "adapt" in results:
        from xelm.report.adapt import markdown_section

        parts += [markdown_section(results["adapt"]), ""]
    if "downstream" in results:
        from xelm.report.downstream import markdown_section as downstream_section

        parts += [downstream_section(results["downstream"]), ""]
    return parts
