"""Noren field mapping: a merged instrument state (vendor field → value) → row columns.

Pure functions used by the Noren decoder (``schemas.venues.noren``). A *state*
is the dict of vendor fields of one ``e|tk`` and one stream (touchline or
depth) after the snapshot and every partial update were laid over it; the
functions here turn it into the keyword arguments of a ``Ticker`` or ``Book``.

Rules (PROTOCOLS.md, Noren; vendor-docs/jainam-noren.txt):

- Values are strings (numbers accepted too); ``""``, ``"NA"`` and JSON null are
  nulls. A value that is present but not a number where a number is required
  raises ``ProtocolError`` (the frame is rejected, the state left as it was).
- ``c`` is the *previous* close: in the vendor's own examples
  ``pc`` = (``lp`` − ``c``) / ``c`` · 100 (84.00 vs 42.20 → 99.05 %), so it goes
  to ``prev_close``; Noren sends no close of the running day (``close`` is null).
- Prices with a column are rounded to ``pp`` decimals (the state's price
  precision) when ``pp`` is given.
- ``ft`` (epoch seconds) is ``ts_event``; ``ltt`` (``HH:MM:SS`` or
  ``dd-mm-yyyy HH:MM:SS``, exchange time) goes to ``extras`` as sent, with
  ``ltt_time`` / ``ltt_date`` (ISO) added when it parses.
- Book levels are ``bp/bq/bo`` (bids) and ``sp/sq/so`` (asks) 1..5; a level
  whose price is null or zero is empty and left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from schemas.errors import ProtocolError
from schemas.venues.values import epoch_ns, integer, num

TOUCHLINE, DEPTH = "touchline", "depth"
LEVELS = 5
MAX_PP = 10

# ticker column → vendor field
PRICE_COLUMNS = {"last": "lp", "open": "o", "high": "h", "low": "l", "prev_close": "c",
                 "avg_price": "ap", "lower_limit": "lc", "upper_limit": "uc"}
QTY_COLUMNS = {"volume": "v", "open_interest": "oi"}
LEVEL_FIELDS = frozenset(f"{kind}{i}" for kind in ("bp", "sp", "bq", "sq", "bo", "so")
                         for i in range(1, LEVELS + 1))
# fields that have a column somewhere (or are the key / the frame type)
_MAPPED = frozenset({"t", "e", "tk", "ft", *PRICE_COLUMNS.values(), *QTY_COLUMNS.values()})
# as values.num: text that means "no value"
_NULL_TEXT = frozenset(("", "NA", "N/A", "null", "None", "-"))
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d):([0-5]\d)")
_DATE_TIME = re.compile(r"(\d{2})-(\d{2})-(\d{4}) (\S+)")


def number(value: Any, name: str) -> float | None:
    """``values.num`` with a fast path for the plain strings Noren sends."""
    if type(value) is str:
        if value in _NULL_TEXT:
            return None
        try:
            f = float(value)
            if f - f == 0.0:            # not NaN or ±inf: those num() rejects
                return f
        except ValueError:
            pass
    return num(value, name)


def count(value: Any, name: str) -> int | None:
    """``values.integer`` with the same fast path."""
    if type(value) is str:
        if value in _NULL_TEXT:
            return None
        try:
            n = int(value)
            if -(2**63) <= n < 2**63:   # beyond int64 integer() rejects
                return n
        except ValueError:
            pass
    return integer(value, name)


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in _NULL_TEXT)


def precision(state: Mapping[str, Any]) -> int | None:
    """The state's ``pp`` (price decimals) or None; ProtocolError when unusable."""
    pp = count(state.get("pp"), "pp")
    if pp is not None and not 0 <= pp <= MAX_PP:
        raise ProtocolError(f"pp out of range: {pp}")
    return pp


def price(state: Mapping[str, Any], field: str, pp: int | None) -> float | None:
    value = number(state.get(field), field)
    if value is None or pp is None:
        return value
    return round(value, pp)


def ltt_parts(value: Any) -> dict[str, str]:
    """``ltt_time`` (and ``ltt_date``) from either ``ltt`` format; {} when it does not parse."""
    if not isinstance(value, str):
        return {}
    text = value.strip()
    m = _DATE_TIME.fullmatch(text)
    if m:
        try:
            day = date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        except ValueError:
            return {}
        if not _TIME.fullmatch(m.group(4)):
            return {}
        return {"ltt_date": day.isoformat(), "ltt_time": m.group(4)}
    if _TIME.fullmatch(text):
        return {"ltt_time": text}
    return {}


def extras(state: Mapping[str, Any], stream: str, skip_levels: bool) -> str:
    """JSON text of the fields without a column (nulls as null), plus ``stream``."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in _MAPPED or (skip_levels and key in LEVEL_FIELDS):
            continue
        out[key] = None if is_null(value) else value
    if "ltt" in out:
        out.update(ltt_parts(out["ltt"]))
    out["stream"] = stream
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def ticker_columns(state: Mapping[str, Any], stream: str, pp: int | None) -> dict[str, Any]:
    """Keyword arguments of a ``Ticker`` (without the common columns) for ``state``,
    prices rounded to ``pp`` decimals (``precision(state)``)."""
    cols: dict[str, Any] = {col: price(state, f, pp) for col, f in PRICE_COLUMNS.items()}
    cols.update({col: number(state.get(f), f) for col, f in QTY_COLUMNS.items()})
    cols["extras"] = extras(state, stream, skip_levels=True)
    return cols


_BID_KEYS = tuple((f"bp{i}", f"bq{i}", f"bo{i}") for i in range(1, LEVELS + 1))
_ASK_KEYS = tuple((f"sp{i}", f"sq{i}", f"so{i}") for i in range(1, LEVELS + 1))


def _side(state: Mapping[str, Any], keys: tuple[tuple[str, str, str], ...], levels: int,
          pp: int | None) -> tuple[list[float], list[float], list[int]]:
    prices: list[float] = []
    sizes: list[float] = []
    counts: list[int] = []
    get = state.get
    for px, qty, orders in keys[:levels]:
        q = number(get(qty), qty)           # checked even on empty levels
        n = count(get(orders), orders)
        p = number(get(px), px)
        if p is not None and pp is not None:
            p = round(p, pp)
        if p is None or p == 0:
            continue
        prices.append(p)
        sizes.append(q or 0.0)
        counts.append(n or 0)
    return prices, sizes, counts


def book_columns(state: Mapping[str, Any], levels: int, pp: int | None) -> dict[str, Any] | None:
    """Keyword arguments of a ``Book`` for the first ``levels`` levels of ``state``.

    With ``levels`` = 1 (touchline) the result is None when neither side has a
    price, and order counts are left out (touchline carries none).
    """
    bid_px, bid_sz, bid_n = _side(state, _BID_KEYS, levels, pp)
    ask_px, ask_sz, ask_n = _side(state, _ASK_KEYS, levels, pp)
    if levels == 1 and not bid_px and not ask_px:
        return None
    full = levels > 1
    return dict(depth=max(len(bid_px), len(ask_px)), bid_px=bid_px, bid_sz=bid_sz,
                ask_px=ask_px, ask_sz=ask_sz, bid_n=bid_n if full else None,
                ask_n=ask_n if full else None)


def event_time(state: Mapping[str, Any]) -> int | None:
    """``ft`` (feed time, epoch seconds) as nanoseconds."""
    return epoch_ns(state.get("ft"), "ft")
