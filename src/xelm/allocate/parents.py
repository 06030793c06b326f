"""Parents for new languages (``xelm adapt``): the expert of the typologically nearest
language, or the expert with the lowest perplexity on the new language."""

from __future__ import annotations


def choose_parents(scores: dict[str, dict[str, float]],
                   language_to_expert: dict[str, str] | None = None) -> dict[str, dict]:
    """The lowest-scoring candidate per new language: ``{lang: {parent, via, value}}``.

    ``scores[new][candidate]`` is a distance to an old language (then
    ``language_to_expert`` maps it to its expert) or a perplexity of an expert (then
    ``language_to_expert`` is None). Ties go to the alphabetically first candidate.
    """
    out = {}
    for lang, row in scores.items():
        if not row:
            raise ValueError(f"no candidate parents for {lang!r}")
        best = min(sorted(row), key=row.__getitem__)
        parent = language_to_expert[best] if language_to_expert is not None else best
        out[lang] = {"parent": parent, "via": best, "value": float(row[best])}
    return out


def typology_distances(new: list[str], old: list[str], features: str,
                       features_file: str | None) -> dict[str, dict[str, float]]:
    """Cosine distance (missing features skipped) from each new to each old language."""
    from xelm.allocate.typology import cosine_distances, language_vectors

    d = cosine_distances(language_vectors(old + new, features, features_file))
    return {lang: {o: float(d[len(old) + i, j]) for j, o in enumerate(old)}
            for i, lang in enumerate(new)}
