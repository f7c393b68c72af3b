"""Arrow schemas of the seven store tables.

A file holds the columns below; ``venue`` and ``date`` are not stored inside
the file, they are the hive partition directories (``venue=…/date=…``) and the
readers (DuckDB views, pyarrow datasets) add them back as columns.

``pos`` (the event's position inside its frame) is not in DESIGN.md's list; it
makes the replay order (``ts_recv``, ``session``, ``frame``, ``pos``) total
across tables, so a sealed file sorted by symbol can always be put back into
arrival order.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"
METADATA_KEY = b"tickrec.schema_version"

TS = pa.timestamp("ns", tz="UTC")
F64 = pa.float64()
STR = pa.string()

_COMMON = [
    pa.field("symbol", STR, nullable=False),
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),
    pa.field("seq", pa.int64()),
    pa.field("session", STR, nullable=False),
    pa.field("frame", pa.int64(), nullable=False),
    pa.field("pos", pa.int32(), nullable=False),
]


def _schema(table: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={METADATA_KEY: SCHEMA_VERSION, b"tickrec.table": table})


RAW = _schema("raw", [
    pa.field("ts_recv", TS, nullable=False),
    pa.field("session", STR, nullable=False),
    pa.field("frame", pa.int64(), nullable=False),
    pa.field("direction", STR, nullable=False),   # in / out / event
    pa.field("kind", STR, nullable=False),        # text / binary / open / close / error
    pa.field("payload", pa.binary(), nullable=False),
    pa.field("note", STR),
])

TRADES = _schema("trades", _COMMON + [
    pa.field("price", F64),
    pa.field("size", F64),
    pa.field("turnover", F64),
    pa.field("side", STR, nullable=False),        # buy / sell / unknown
    pa.field("trade_type", STR),
    pa.field("extras", STR),
])

BOOK = _schema("book", _COMMON + [
    pa.field("depth", pa.int32(), nullable=False),
    pa.field("bid_px", pa.list_(F64), nullable=False),
    pa.field("bid_sz", pa.list_(F64), nullable=False),
    pa.field("ask_px", pa.list_(F64), nullable=False),
    pa.field("ask_sz", pa.list_(F64), nullable=False),
    pa.field("bid_n", pa.list_(pa.int64())),
    pa.field("ask_n", pa.list_(pa.int64())),
])

TICKER_FIELDS = ("last", "open", "high", "low", "close", "prev_close", "volume", "turnover",
                 "avg_price", "open_interest", "lower_limit", "upper_limit")

TICKERS = _schema("tickers", _COMMON + [pa.field(n, F64) for n in TICKER_FIELDS]
                  + [pa.field("extras", STR)])

BARS = _schema("bars", _COMMON + [
    pa.field("interval", STR, nullable=False),
    pa.field("open", F64),
    pa.field("high", F64),
    pa.field("low", F64),
    pa.field("close", F64),
    pa.field("volume", F64),
])

GAPS = _schema("gaps", _COMMON + [
    pa.field("stream", STR, nullable=False),
    pa.field("kind", STR, nullable=False),  # sequence/disconnect/stale/duplicate/regression/rejected
    pa.field("ts_start", TS),
    pa.field("ts_end", TS),
    pa.field("seq_from", pa.int64()),
    pa.field("seq_to", pa.int64()),
    pa.field("missing", pa.int64()),
    pa.field("detail", STR),
])

SESSIONS = _schema("sessions", [
    pa.field("ts_recv", TS, nullable=False),      # = opened; decides the date partition
    pa.field("session", STR, nullable=False),
    pa.field("feed", STR, nullable=False),
    pa.field("host", STR, nullable=False),
    pa.field("url", STR, nullable=False),         # secrets removed
    pa.field("subscriptions", pa.list_(STR), nullable=False),
    pa.field("opened", TS, nullable=False),
    pa.field("closed", TS),
    pa.field("close_code", pa.int32()),
    pa.field("close_reason", STR),
    pa.field("frames_in", pa.int64(), nullable=False),
    pa.field("frames_out", pa.int64(), nullable=False),
])

TABLES: dict[str, pa.Schema] = {
    "raw": RAW, "trades": TRADES, "book": BOOK, "tickers": TICKERS,
    "bars": BARS, "gaps": GAPS, "sessions": SESSIONS,
}
EVENT_TABLES = ("trades", "book", "tickers", "bars", "gaps")
GAP_KINDS = ("sequence", "disconnect", "stale", "duplicate", "regression", "rejected")
