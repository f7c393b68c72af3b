"""Checking what a caller asks the replay for: times, speed, symbols, tables.

Every bad value raises ``ConfigError`` with a one-line message.

Times (``start``/``end``) are UTC and may be given as
- an ``int``: nanoseconds since the epoch (a string of digits is read the same way);
- a ``datetime`` (naive means UTC) or a ``date`` (its midnight, UTC);
- an ISO 8601 string: ``2024-05-01``, ``2024-05-01T13:45``, ``2024-05-01 13:45:10.123456789``,
  optionally with ``Z`` or ``±HH:MM``; up to nine fractional digits are kept exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from schemas.errors import ConfigError
from schemas.tables import EVENT_TABLES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?")
_US = timedelta(microseconds=1)


def parse_time(value: object, what: str = "time") -> int | None:
    """``None`` stays ``None``; anything else becomes int ns since the epoch, UTC."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"bad {what} {value!r}: expected ns since the epoch, a datetime or ISO text")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return ((dt - EPOCH) // _US) * 1000
    if isinstance(value, date):
        return parse_time(datetime(value.year, value.month, value.day), what)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        m = _ISO.fullmatch(text)
        if m:
            y, mo, d, hh, mi, ss, frac, tz = m.groups()
            try:
                dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0),
                              tzinfo=UTC)
            except ValueError:
                m = None
            else:
                ns = ((dt - EPOCH) // _US) * 1000 + int((frac or "").ljust(9, "0"))
                if tz and tz != "Z":
                    sign = -1 if tz[0] == "-" else 1
                    hours, minutes = int(tz[1:3]), int(tz[-2:])
                    ns -= sign * (hours * 3600 + minutes * 60) * 1_000_000_000
                return ns
    raise ConfigError(f"bad {what} {value!r}: expected ns since the epoch, a datetime "
                      f"or ISO 8601 text like 2024-05-01T13:45:00Z")


def parse_speed(speed: object) -> float | None:
    """A positive finite factor, or ``None`` for ``"max"`` (no waiting)."""
    if isinstance(speed, str):
        if speed.strip().lower() == "max":
            return None
        try:
            speed = float(speed)
        except ValueError:
            raise ConfigError(f"bad speed {speed!r}: expected a positive number or 'max'") from None
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise ConfigError(f"bad speed {speed!r}: expected a positive number or 'max'")
    if math.isinf(speed) and speed > 0:
        return None
    if not speed > 0 or math.isnan(speed):
        raise ConfigError(f"bad speed {speed!r}: expected a positive number or 'max'")
    return float(speed)


def _items(value: str | Sequence[str], what: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    if any(not isinstance(i, str) for i in items):
        raise ConfigError(f"bad {what} {value!r}: expected names (a list or 'A,B')")
    return [i.strip() for i in items if i.strip()]


def parse_symbols(symbols: str | Sequence[str] | None) -> list[str] | None:
    """``None`` = every symbol; a string is a comma-separated list."""
    if symbols is None:
        return None
    out = sorted(set(_items(symbols, "symbols")))
    if not out:
        raise ConfigError("symbols is empty: pass None for every symbol")
    return out


def parse_tables(tables: str | Sequence[str] | None, kind: str) -> tuple[str, ...]:
    """The tables to read, in ``EVENT_TABLES`` order (``("raw",)`` for kind raw)."""
    if kind not in ("events", "raw"):
        raise ConfigError(f"bad kind {kind!r}: expected 'events' or 'raw'")
    wanted = None if tables is None else set(_items(tables, "tables"))
    if kind == "raw":
        if wanted not in (None, {"raw"}):
            raise ConfigError("kind 'raw' reads the raw table only; leave tables unset")
        return ("raw",)
    if wanted is None:
        return EVENT_TABLES
    bad = sorted(wanted - set(EVENT_TABLES))
    if bad:
        raise ConfigError(f"unknown table {bad[0]!r}: expected some of {', '.join(EVENT_TABLES)}")
    if not wanted:
        raise ConfigError("tables is empty: pass None for every event table")
    return tuple(t for t in EVENT_TABLES if t in wanted)
