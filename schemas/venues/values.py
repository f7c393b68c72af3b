"""Lenient value parsing shared by the venue codecs.

Vendors send numbers as JSON numbers or as strings (AllTick changed its docs,
Noren sends only strings), sometimes ``""`` or ``"NA"``. These helpers accept
all of them and raise ``ProtocolError`` only for values that are really wrong.
"""

from __future__ import annotations

import math
from typing import Any

from schemas.errors import ProtocolError

_NULLS = frozenset(("", "NA", "N/A", "null", "None", "-"))


def num(value: Any, name: str = "value") -> float | None:
    """A float from a number or numeric string; None for absent/empty/"NA"."""
    kind = type(value)
    if kind is float:                       # fast paths first: this runs per field per frame
        return value  # type: ignore[no-any-return]
    if kind is str:
        try:
            return float(value)
        except ValueError:
            pass
    elif kind is int:
        return float(value)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{name} is a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        v = value.strip()
        if v in _NULLS:
            return None
        try:
            return float(v)
        except ValueError:
            raise ProtocolError(f"{name} is not a number: {value[:40]!r}") from None
    raise ProtocolError(f"{name} has type {type(value).__name__}")


def integer(value: Any, name: str = "value") -> int | None:
    """An int from an int or an integral string/float; None for absent/empty."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip()
        if v in _NULLS:
            return None
        try:
            return int(v)
        except ValueError:
            pass
    f = num(value, name)
    if f is None:
        return None
    if not math.isfinite(f) or f != int(f):
        raise ProtocolError(f"{name} is not an integer: {value!r:.40}")
    return int(f)


def epoch_ns(value: Any, name: str = "time") -> int | None:
    """Epoch milliseconds, or seconds when below 1e11, as nanoseconds."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or value > 4_000_000_000_000:
            raise ProtocolError(f"{name} out of range: {value}")
        return value * 1_000_000_000 if value < 100_000_000_000 else value * 1_000_000
    f = num(value, name)
    if f is None:
        return None
    if not math.isfinite(f) or f < 0 or f > 4e12:
        raise ProtocolError(f"{name} out of range: {value!r:.40}")
    return int(round(f * 1e9)) if f < 1e11 else int(round(f * 1e6))
