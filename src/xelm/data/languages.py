"""Language codes: every code a user writes (file names, ``corpus.languages``, groups) is
normalised here to one standard tag, so ``eng.txt`` and ``languages: [en]`` meet.

Codes are checked with ``langcodes``; anything that is not an ISO 639 language (or a
private-use code 'qaa'..'qtz') is a :class:`CorpusError` that suggests the code when the
user wrote a language's name ('english' -> 'en').
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
from collections.abc import Iterable

import langcodes

from xelm.data.errors import CorpusError

# 'und' (undetermined) and 'zxx' (no linguistic content) are valid tags but not languages.
_NOT_LANGUAGES = frozenset({"und", "zxx"})
CODE_HINT = ("use an ISO 639 code such as 'en', 'de' or 'ceb', or a private-use code "
             "'qaa'..'qtz'")


def normalize_language(code: str) -> str:
    """The shortest standard tag for ``code``: 'eng'/'EN' -> 'en', 'deu' -> 'de', 'ceb' -> 'ceb'.

    Accepts ISO 639-1/-3 codes (with optional script/region subtags, 'en_US' -> 'en-US')
    and the private-use range 'qaa'..'qtz'. Raises :class:`CorpusError` for anything
    else, suggesting codes when ``code`` looks like a language name ('english' -> 'en').
    """
    text = str(code).strip()
    try:
        tag = langcodes.Language.get(text)
    except ValueError:  # LanguageTagError: not even the shape of a tag
        tag = None
    primary = tag.language if tag is not None else None
    if (tag is None or not tag.is_valid() or not primary or not primary.isalpha()
            or len(primary) not in (2, 3) or primary in _NOT_LANGUAGES):
        raise CorpusError(_unknown_language(text))
    return tag.to_tag()


def _unknown_language(text: str) -> str:
    suggestions = suggest_languages(text)
    hint = f" (did you mean {' or '.join(map(repr, suggestions))}?)" if suggestions else ""
    return f"unknown language code {text!r}{hint}: {CODE_HINT}"


def suggest_languages(text: str) -> list[str]:
    """Codes of languages whose name is ``text`` or close to it; [] when none is."""
    if len(text) < 3:
        return []
    if importlib.util.find_spec("language_data") is not None:
        with contextlib.suppress(LookupError, ValueError):
            return [langcodes.find(text).to_tag()]
    names = _language_names()
    if text.lower() in names:
        return [names[text.lower()]]
    close = difflib.get_close_matches(text.lower(), list(names), n=3, cutoff=0.8)
    return list(dict.fromkeys(names[name] for name in close))


@functools.lru_cache(maxsize=1)
def _language_names() -> dict[str, str]:
    """Lower-case English name -> code, from the IANA registry that ships with langcodes.

    Used when the optional ``language_data`` package (langcodes' name lookup) is absent.
    """
    from langcodes.registry_parser import parse_registry

    names: dict[str, str] = {}
    for entry in parse_registry():
        subtag = entry.get("Subtag", "")
        if entry.get("Type") != "language" or "Deprecated" in entry or ".." in subtag:
            continue
        for name in entry.get("Description", []):
            names.setdefault(name.lower(), langcodes.Language.get(subtag).to_tag())
    return names


def normalize_in(code: str, where: str) -> str:
    """:func:`normalize_language`, with ``where`` the code came from in the message."""
    try:
        return normalize_language(code)
    except CorpusError as exc:
        raise CorpusError(f"{where}: {exc}") from None


def normalize_list(codes: Iterable[str], where: str) -> list[str]:
    """Normalised codes in the given order; a language listed twice is an error."""
    seen: dict[str, str] = {}
    for code in codes:
        lang = normalize_in(code, where)
        if lang in seen:
            raise CorpusError(f"{where} lists language {lang!r} twice ({seen[lang]!r} and "
                              f"{code!r}); keep one")
        seen[lang] = code
    return list(seen)
