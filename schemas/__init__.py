"""tickrec schemas: tables, events, the Feed protocol and one sans-I/O codec per venue."""

from __future__ import annotations

from schemas.events import Bar, Book, Event, Gap, RawRecord, Status, Ticker, Trade
from schemas.tables import SCHEMA_VERSION, TABLES

__all__ = ["Bar", "Book", "Event", "Gap", "RawRecord", "Status", "Ticker", "Trade",
           "SCHEMA_VERSION", "TABLES"]
