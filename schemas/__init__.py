"""tickrec schemas: tables, events, the Feed protocol and one sans-I/O codec per venue.

The names below are loaded on first use (PEP 562), so importing a light submodule
(``schemas.errors``, ``schemas.venues``) does not import pyarrow: ``tickrec record``
sets up Arrow's allocator before pyarrow is first imported (``recorder.lean``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.events import Bar, Book, Event, Gap, RawRecord, Status, Ticker, Trade
    from schemas.tables import SCHEMA_VERSION, TABLES

_WHERE = {**dict.fromkeys(("Bar", "Book", "Event", "Gap", "RawRecord", "Status", "Ticker",
                           "Trade"), "schemas.events"),
          "SCHEMA_VERSION": "schemas.tables", "TABLES": "schemas.tables"}

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "Bar",
    "Book",
    "Event",
    "Gap",
    "RawRecord",
    "Status",
    "Ticker",
    "Trade",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
