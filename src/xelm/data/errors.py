"""The one error type of the corpus layer (readers, splits, sources, preparation)."""

from __future__ import annotations


class CorpusError(ValueError):
    """A corpus problem the user must fix; the message names the file or language and how."""
