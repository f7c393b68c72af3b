from __future__ import annotations

import pyarrow as pa

from schemas.events import EVENT_CLASSES, EVENT_COLUMNS
from schemas.tables import METADATA_KEY, SCHEMA_VERSION, TABLES


def test_event_records_match_table_columns() -> None:
    for name in EVENT_CLASSES:
        assert EVENT_COLUMNS[name] == tuple(TABLES[name].names)


def test_every_table_carries_the_schema_version() -> None:
    assert set(TABLES) == {"raw", "trades", "book", "tickers", "bars", "gaps", "sessions"}
    for schema in TABLES.values():
        assert schema.metadata[METADATA_KEY] == SCHEMA_VERSION.encode()


def test_times_are_nanoseconds_utc() -> None:
    for schema in TABLES.values():
        for field in schema:
            if field.name.startswith("ts_") or field.name in ("opened", "closed"):
                assert field.type == pa.timestamp("ns", tz="UTC"), field.name
