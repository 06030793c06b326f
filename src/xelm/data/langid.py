"""Language identification for text that carries no language label.

Two uses: ``corpus.source: unlabelled`` sorts documents of mixed, unlabelled files into
the run's languages before anything else happens, and the ``top1_langid`` inference
method routes a text to the expert of its detected language.

The detector is ``lingua-language-detector`` (maintained, 75 languages, its n-gram models
ship inside the wheel, so it works offline; detection runs in Rust on all cores). It is
chosen over ``langid.py`` (unmaintained since 2016) for its accuracy on short texts.
Languages lingua does not know (e.g. the synthetic corpus' private-use codes) are a clear
error that points at the label-free alternatives (``top1_tfidf``, ``ensemble_posterior``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from xelm.data.errors import CorpusError

# Detection looks at a document's first characters only: enough for any language, and it
# keeps very long documents from dominating the time.
MAX_CHARS = 2000
OTHER, UNDETECTED = "other", "undetected"  # what LanguageDetector.classify says besides a code


@functools.lru_cache(maxsize=1)
def _lingua_codes() -> dict[str, object]:
    """ISO 639-1 and 639-3 code -> lingua ``Language``."""
    from lingua import Language

    codes: dict[str, object] = {}
    for lang in Language.all():
        codes[lang.iso_code_639_1.name.lower()] = lang
        codes[lang.iso_code_639_3.name.lower()] = lang
    return codes


def supported_languages() -> list[str]:
    """The ISO 639-1 codes the detector knows, sorted."""
    return sorted(code for code in _lingua_codes() if len(code) == 2)


def _primary(code: str) -> str:
    """'zh-Hant' -> 'zh': lingua tells languages apart, not scripts or regions."""
    return code.split("-")[0].lower()


class LanguageDetector:
    """Detects which of ``languages`` (normalised codes, e.g. from ``corpus.languages``)
    a text is in.

    ``closed=True`` (routing) always answers one of ``languages`` when the text has any
    letters; ``closed=False`` (sorting a corpus) considers every language lingua knows,
    so a document in some other language is reported as such (:meth:`detect` returns
    ``None`` for it) instead of being forced into the closest listed one.
    """

    def __init__(self, languages: Sequence[str], *, closed: bool = True):
        from lingua import LanguageDetectorBuilder

        if not languages:
            raise CorpusError("language identification needs at least one language")
        known = _lingua_codes()
        missing = [code for code in languages if _primary(code) not in known]
        if missing:
            raise CorpusError(
                f"the language identifier (lingua) does not know {', '.join(missing)}; it "
                f"covers {', '.join(supported_languages())}. Label the documents (one "
                "<code>.txt per language) or, for inference, use a method that needs no "
                "language label: top1_tfidf, ensemble_tfidf or ensemble_posterior")
        self.languages = list(languages)
        self._code = {}
        for code in self.languages:
            lang = known[_primary(code)]
            if lang in self._code:
                raise CorpusError(f"languages {self._code[lang]!r} and {code!r} are the same "
                                  "language to the identifier; keep one")
            self._code[lang] = code
        builder = (LanguageDetectorBuilder.from_languages(*self._code) if closed
                   else LanguageDetectorBuilder.from_all_languages())
        self._detector = builder.build()

    def detect(self, texts: Sequence[str]) -> list[str | None]:
        """The detected code of each text (one of ``languages``); ``None`` where the text
        has no detectable language, or (``closed=False``) is in a language not listed."""
        return [None if c in (OTHER, UNDETECTED) else c for c in self.classify(texts)]

    def classify(self, texts: Sequence[str]) -> list[str]:
        """Per text: its code (one of ``languages``), ``"other"`` (a language not listed;
        only with ``closed=False``) or ``"undetected"`` (no letters, or too ambiguous)."""
        return [UNDETECTED if lang is None else self._code.get(lang, OTHER)
                for lang in self._raw(texts)]

    def _raw(self, texts: Sequence[str]) -> list:
        """lingua's answer per text: a ``Language`` (maybe one not listed) or None."""
        return self._detector.detect_languages_in_parallel_of([t[:MAX_CHARS] for t in texts])

    def detect_one(self, text: str) -> str | None:
        return self.detect([text])[0]


@functools.lru_cache(maxsize=8)
def detector_for(languages: tuple[str, ...]) -> LanguageDetector:
    """A routing detector (``closed=True``) for these languages, built once per process."""
    return LanguageDetector(languages)
