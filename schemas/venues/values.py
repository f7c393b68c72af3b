"""Lenient value parsing shared by the venue codecs.

Vendors send numbers as JSON numbers or as strings (AllTick changed its docs,
Noren sends only strings), sometimes ``""`` or ``"NA"``. These helpers accept
all of them and raise ``ProtocolError`` only for values that are really wrong.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from schemas.errors import ProtocolError

_NULLS = frozenset(("", "NA", "N/A", "null", "None", "-"))
# Arrow's timestamp[ns] is an int64: a time past 2262 would fail at publish, not here.
MAX_NS = 2**63 - 1
# Every integer column of the store is an int64: a larger value would fail at publish.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def num(value: Any, name: str = "value") -> float | None:
    """A finite float from a number or numeric string; None for absent/empty/"NA".

    NaN and infinities (JSON ``NaN``, ``"inf"``, ``1e999``) raise ``ProtocolError``:
    no vendor sends them as data, so they mark a broken frame.
    """
    kind = type(value)
    if kind is float:                       # fast paths first: this runs per field per frame
        if value - value == 0.0:            # False for NaN and ±inf
            finite: float = value           # type(value) is float: Any narrowed by hand
            return finite
        raise ProtocolError(f"{name} is not finite: {value!r}")
    if kind is str:
        try:
            f = float(value)
        except ValueError:
            pass
        else:
            if f - f == 0.0:
                return f
            raise ProtocolError(f"{name} is not finite: {value[:40]!r}")
    elif kind is int:
        return _finite(value, name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{name} is a boolean")
    if isinstance(value, (int, float)):
        return _finite(value, name)
    if isinstance(value, str):
        v = value.strip()
        if v in _NULLS:
            return None
        try:
            f = float(v)
        except ValueError:
            raise ProtocolError(f"{name} is not a number: {value[:40]!r}") from None
        return _finite(f, name)
    raise ProtocolError(f"{name} has type {type(value).__name__}")


def _finite(value: float, name: str) -> float:
    try:
        f = float(value)
    except OverflowError:               # an int beyond float's range
        raise ProtocolError(f"{name} is too large: {str(value)[:40]}") from None
    if f - f == 0.0:
        return f
    raise ProtocolError(f"{name} is not finite: {value!r:.40}")


def integer(value: Any, name: str = "value") -> int | None:
    """An int from an int or an integral string/float; None for absent/empty.

    Raises ``ProtocolError`` for a value outside int64 (the store's integer type):
    such a value would otherwise fail the Parquet publish of the whole batch.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return _int64(value, name)
    if isinstance(value, str):
        v = value.strip()
        if v in _NULLS:
            return None
        try:
            return _int64(int(v), name)
        except ValueError:
            pass
    f = num(value, name)
    if f is None:
        return None
    if not math.isfinite(f) or f != int(f):
        raise ProtocolError(f"{name} is not an integer: {value!r:.40}")
    return _int64(int(f), name)


def _int64(n: int, name: str) -> int:
    if INT64_MIN <= n <= INT64_MAX:
        return n
    raise ProtocolError(f"{name} out of the int64 range: {str(n)[:40]}")


def epoch_ns(value: Any, name: str = "time") -> int | None:
    """Epoch milliseconds, or seconds when below 1e11, as nanoseconds."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or value > 4_000_000_000_000:
            raise ProtocolError(f"{name} out of range: {value}")
        ns = value * 1_000_000_000 if value < 100_000_000_000 else value * 1_000_000
        if ns > MAX_NS:
            raise ProtocolError(f"{name} out of range: {value}")
        return ns
    f = num(value, name)
    if f is None:
        return None
    if not math.isfinite(f) or f < 0 or f > 4e12:
        raise ProtocolError(f"{name} out of range: {value!r:.40}")
    ns = round(f * 1e9) if f < 1e11 else round(f * 1e6)
    if ns > MAX_NS:
        raise ProtocolError(f"{name} out of range: {value!r:.40}")
    return ns


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9})\d*)?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?")


def iso_ns(value: Any, naive_zone: tzinfo, name: str = "timestamp") -> int | None:
    """ISO-8601 text (any fraction of a second, with or without a zone) as epoch ns.

    A time without a zone is local time in ``naive_zone``. Numbers are taken as
    epoch seconds/milliseconds (``epoch_ns``). None/""/"NA" give None; anything
    else that is not a date-time between 1970 and 2262 raises ``ProtocolError``.
    """
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return epoch_ns(value, name)
    if not isinstance(value, str):
        raise ProtocolError(f"{name} has type {type(value).__name__}")
    text = value.strip()
    if text in _NULLS:
        return None
    m = _ISO.fullmatch(text)
    if m is None:
        raise ProtocolError(f"{name} is not an ISO-8601 time: {value[:40]!r}")
    y, mo, d, hh, mi, ss, frac, zone = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0))
        if zone is None:
            tz: tzinfo = naive_zone
        elif zone in "Zz":
            tz = UTC
        else:
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            tz = timezone(-offset if zone[0] == "-" else offset)
        seconds = int(dt.replace(tzinfo=tz).timestamp())
    except (ValueError, OverflowError, OSError) as exc:
        raise ProtocolError(f"{name} is not a valid time: {value[:40]!r} ({exc})") from None
    ns = seconds * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    if ns < 0 or ns > MAX_NS:
        raise ProtocolError(f"{name} out of range: {value[:40]!r}")
    return ns


def json_object(payload: bytes | str) -> dict[str, Any]:
    """A frame's JSON object; ``ProtocolError`` (one line) for anything else."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"JSON {type(obj).__name__}, not an object")
    return obj
