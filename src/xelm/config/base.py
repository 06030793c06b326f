"""The base of every config section, and token or byte counts as people write them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PositiveInt


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says how."""


class Section(BaseModel):
    # each field's docstring is its help (`xelm config show`)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}


def parse_count(value: Any) -> Any:
    """A token or byte count as people write it: ``5M``, ``500k``, ``1.5e6``, ``2_000_000``.

    Returns an int when ``value`` names a whole number; anything else is returned as it
    is, for pydantic to refuse with its own message."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        scale = _SUFFIXES.get(text[-1:].lower(), 1) if text else 1
        number = text[:-1] if scale != 1 else text
        try:
            amount = float(number) * scale
        except ValueError:
            return value
        if amount.is_integer():
            return int(amount)
    return value


# A positive count of tokens or bytes: 5M, 500k, 1.5e6 and 5000000 are all accepted.
Count = Annotated[PositiveInt, BeforeValidator(parse_count)]
