"""The inference methods of an expert set: one registry, one entry per method.

Config validation (``eval.methods``), the CLI (``xelm generate --method``), evaluation,
the per-document stream scores (:mod:`xelm.evaluate.streams`), the lm-eval model and
generation all read this table; adding a method is one entry here (and, for a new kind of
routing, its router in :mod:`xelm.infer.mixture` or its scorer in
:mod:`xelm.evaluate.scoring` and :mod:`xelm.evaluate.streams`). No heavy imports:
``xelm.config`` imports it.

``route`` says how the experts are weighted:

* ``label`` -- only the expert of the text's (known) language runs;
* ``langid`` -- only the expert of the language detected in the text (or the context);
* ``prior`` -- static weights: uniform, or the expert set's prior;
* ``posterior`` -- BTM's posterior given the prefix;
* ``posterior_context`` -- the posterior with the preceding block as evidence too;
* ``tfidf`` -- c-BTM's softmax(-d²/T) over TF-IDF distances of the preceding context.

``combine`` is ``mixture`` (a weighted mixture of the experts' distributions) or
``product`` (a renormalised weighted geometric mean).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    route: str
    combine: str = "mixture"
    needs_label: bool = False    # the text's language must be given
    needs_text: bool = False     # reads the text itself (language identification)
    needs_context: bool = False  # reads the block before the one scored (evaluation only)
    options: tuple[str, ...] = ()  # the eval.* options it reads besides the batch size
    generates: bool = True       # usable one request at a time: generation, lm-eval
    streams: bool = True         # scored per document by evaluate.streams (a mixture)
    hint: str = ""               # a few words for the CLI's help, when the name is not enough

    @property
    def by_text(self) -> bool:
        """Weighed by the text of the block before (TF-IDF, language identification)."""
        return self.route in ("langid", "tfidf")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("top1", "label", needs_label=True),
    Method("top1_langid", "langid", needs_text=True, needs_context=True,
           hint="the prompt's detected language"),
    Method("ensemble", "prior"),
    Method("ensemble_posterior", "posterior", options=("top_k",)),
    Method("ensemble_posterior_context", "posterior_context", needs_context=True,
           options=("top_k",), generates=False),
    Method("ensemble_tfidf", "tfidf", needs_context=True, options=("top_k", "temperature"),
           generates=False),
    Method("top1_tfidf", "tfidf", needs_context=True, options=("temperature",),
           generates=False),
    Method("product_of_experts", "prior", combine="product", streams=False),
)}

# Every method, in the order of the table: what eval.methods accepts.
EVAL_METHODS = tuple(METHODS)
# The methods that score one request at a time (xelm generate, the lm-eval model).
GENERATE_METHODS = tuple(name for name, m in METHODS.items() if m.generates)


def method_help(names: tuple[str, ...] = GENERATE_METHODS) -> str:
    """``top1 | top1_langid (the prompt's detected language) | ...`` for a CLI help."""
    return " | ".join(f"{n} ({METHODS[n].hint})" if METHODS[n].hint else n for n in names)
