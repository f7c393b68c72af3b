"""Typed event records: what a Feed yields, live or replayed.

Times are ``int`` nanoseconds since the Unix epoch, UTC (exact, cheap to
compare). ``ts_event`` and ``seq`` are ``None`` when the vendor gives none.
Every event keeps where it came from: ``session`` (the connection), ``frame``
(the raw frame's number in that session) and ``pos`` (its position among the
events that frame produced). Those three and ``ts_recv`` give the total order
of replay: (ts_recv, session, frame, pos).

``RawRecord`` is one journal entry / one ``raw`` row: a frame in either
direction, or a connection event (open, close, error).

The records are slotted dataclasses, deliberately not ``frozen``: a frozen
dataclass sets each field through ``object.__setattr__`` and costs three times
as much to build (3.8 µs against 1.3 µs for a trade here), and two are built per
captured frame. Treat them as values: nothing in tickrec mutates one after it
is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from schemas.jsonline import line_maker


@dataclass(slots=True)
class RawRecord:
    ts_recv: int
    frame: int
    direction: str          # "in" | "out" | "event"
    kind: str               # "text" | "binary" | "open" | "close" | "error"
    payload: bytes
    note: str | None = None

    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


@dataclass(slots=True, kw_only=True)
class _Base:
    TABLE: ClassVar[str] = ""
    venue: str
    symbol: str
    ts_recv: int
    ts_event: int | None
    seq: int | None
    session: str
    frame: int
    pos: int

    def sort_key(self) -> tuple[int, str, int, int]:
        return (self.ts_recv, self.session, self.frame, self.pos)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TABLE}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    def to_json(self) -> str:
        """One canonical JSON line: ``to_dict()`` through ``json.dumps`` with sorted
        keys, no spaces, ``ensure_ascii=False``, NaN as ``NaN``; what digests hash.
        Made by a function written once per class (``schemas.jsonline``)."""
        cls = type(self)
        line = _LINES.get(cls)
        if line is None:
            line = _LINES[cls] = line_maker({f.name: str(f.type) for f in fields(cls)},
                                            {"type": cls.TABLE})
        return line(self)


_LINES: dict[type, Callable[[Any], str]] = {}     # record class -> its to_json


@dataclass(slots=True, kw_only=True)
class Trade(_Base):
    TABLE: ClassVar[str] = "trades"
    price: float | None
    size: float | None
    turnover: float | None = None
    side: str = "unknown"           # buy / sell / unknown
    trade_type: str | None = None
    extras: str | None = None


@dataclass(slots=True, kw_only=True)
class Book(_Base):
    TABLE: ClassVar[str] = "book"
    depth: int
    bid_px: list[float]
    bid_sz: list[float]
    ask_px: list[float]
    ask_sz: list[float]
    bid_n: list[int] | None = None
    ask_n: list[int] | None = None


@dataclass(slots=True, kw_only=True)
class Ticker(_Base):
    TABLE: ClassVar[str] = "tickers"
    last: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    prev_close: float | None = None
    volume: float | None = None
    turnover: float | None = None
    avg_price: float | None = None
    open_interest: float | None = None
    lower_limit: float | None = None
    upper_limit: float | None = None
    extras: str | None = None


@dataclass(slots=True, kw_only=True)
class Bar(_Base):
    TABLE: ClassVar[str] = "bars"
    interval: str
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None


@dataclass(slots=True, kw_only=True)
class Gap(_Base):
    TABLE: ClassVar[str] = "gaps"
    stream: str
    kind: str
    ts_start: int | None
    ts_end: int | None
    seq_from: int | None = None
    seq_to: int | None = None
    missing: int | None = None
    detail: str | None = None


@dataclass(slots=True)
class Status:
    """A change of the feed's state (live only; not stored as a table row).

    kind: "connected", "subscribed", "disconnected", "error", "fatal", "end".
    """
    venue: str
    kind: str
    ts: int
    detail: str = ""
    TABLE: ClassVar[str] = "status"


Event = Trade | Book | Ticker | Bar | Gap
EVENT_CLASSES: dict[str, type[_Base]] = {
    c.TABLE: c for c in (Trade, Book, Ticker, Bar, Gap)
}
# Column names of each event table in schema order (venue is the partition).
EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in fields(cls) if f.name != "venue")
    for name, cls in EVENT_CLASSES.items()
}
