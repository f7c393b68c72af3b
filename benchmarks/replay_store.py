"""A busy replay store, generated vectorised (no Python per row): trades and 5-level books.

``make_day(root, day, rows, layout=...)`` writes one date partition of venue
``alltick`` holding ``rows`` events spread over ``SYMBOLS`` symbols and the whole
UTC day, about a third of them trades and two thirds book snapshots; every
tenth trade comes with a book of the same frame (same ``ts_recv``, session and
frame, ``pos`` 1), so tables tie on ``ts_recv``. Two layouts, as the store has them:

- ``"sealed"``: what ``tickrec compact`` writes: per table, files of at most
  ``sealio.FILE_ROWS`` rows sorted by (symbol, ts_recv, session, frame, pos), row
  groups of ``sealio.ROW_GROUP_ROWS``, statistics and ``sorting_columns``;
- ``"rolled"``: what a recorder publishes: files of ``ROLLED_ROWS`` rows in
  arrival order, written like ``storage.atomic.write_parquet``.

The day is made symbol by symbol (sealed) or in arrival-order slices (rolled),
so the generator's memory stays far below the day's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES
from storage import sealio
from storage.atomic import PARQUET_OPTIONS, encoding_options
from storage.layout import DAY_NS, partition_dir

DAY0 = 1_767_225_600 * 10**9          # 2026-01-01T00:00Z
SYMBOLS = 100
LEVELS = 5
ROLLED_ROWS = 100_000
SESSION = "20260101T000000-bench-1-abcdef"
TS = pa.timestamp("ns", "UTC")


def date_name(day: int) -> str:
    return f"2026-01-{day + 1:02d}"


def _frames(rng: np.random.Generator, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frame receive times (sorted, ns, within the day) and the frames' symbols."""
    ts = start + np.sort(rng.integers(0, DAY_NS, n))
    return ts, rng.integers(0, SYMBOLS, n).astype(np.int32)


def _events(rng: np.random.Generator, ts: np.ndarray, sym: np.ndarray,
            frame: np.ndarray) -> dict[str, pa.Table]:
    """The events of these frames (arrival order) as a trades and a book table."""
    n = len(ts)
    is_trade = rng.random(n) < 0.3
    both = is_trade & (rng.random(n) < 0.1)             # a trade and a book of one frame
    names = np.array([f"S{s:03d}" for s in range(SYMBOLS)], dtype=object)
    out: dict[str, pa.Table] = {}
    for table, rows, pos in (("trades", is_trade, 0), ("book", ~is_trade | both, None)):
        idx = np.flatnonzero(rows)
        k = len(idx)
        t = ts[idx]
        cols: dict[str, pa.Array] = {
            "symbol": pa.array(names[sym[idx]], pa.string()),
            "ts_recv": pa.array(t, TS), "ts_event": pa.array(t - 1_000_000, TS),
            "seq": pa.array(frame[idx], pa.int64()),
            "session": pa.DictionaryArray.from_arrays(np.zeros(k, np.int32), [SESSION]).cast(pa.string()),
            "frame": pa.array(frame[idx], pa.int64()),
            "pos": pa.array(np.zeros(k, np.int32) if pos == 0 else both[idx].astype(np.int32)),
        }
        mid = 100.0 + sym[idx] + np.round(rng.normal(0, 0.5, k), 2)
        if table == "trades":
            cols |= {"price": pa.array(mid), "size": pa.array(rng.integers(1, 100, k) * 100.0),
                     "turnover": pa.nulls(k, pa.float64()),
                     "side": pa.DictionaryArray.from_arrays(
                         rng.integers(0, 2, k).astype(np.int32), ["buy", "sell"]).cast(pa.string()),
                     "trade_type": pa.nulls(k, pa.string()), "extras": pa.nulls(k, pa.string())}
        else:
            offsets = pa.array(np.arange(0, LEVELS * k + 1, LEVELS, dtype=np.int32))
            step = np.arange(1, LEVELS + 1) * 0.01

            def ladder(values: np.ndarray, offsets: pa.Array = offsets) -> pa.Array:
                return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))
            cols |= {"depth": pa.array(np.full(k, LEVELS, np.int32)),
                     "bid_px": ladder(mid[:, None] - step), "bid_sz": ladder(
                         rng.integers(1, 50, (k, LEVELS)) * 100.0),
                     "ask_px": ladder(mid[:, None] + step), "ask_sz": ladder(
                         rng.integers(1, 50, (k, LEVELS)) * 100.0),
                     "bid_n": pa.nulls(k, pa.list_(pa.int64())),
                     "ask_n": pa.nulls(k, pa.list_(pa.int64()))}
        out[table] = pa.table(cols).cast(TABLES[table])
    return out


def _by_symbol(rng: np.random.Generator, start: int, rows: int) -> Iterator[dict[str, pa.Table]]:
    """The day's events one symbol at a time (symbol order), each sorted by time."""
    counts = rng.multinomial(rows, np.full(SYMBOLS, 1 / SYMBOLS))
    for s in range(SYMBOLS):
        n = int(counts[s])
        ts = start + np.sort(rng.integers(0, DAY_NS, n))
        # frame numbers unique in the session: interleave symbols by their index
        frame = np.arange(n, dtype=np.int64) * SYMBOLS + s
        yield _events(rng, ts, np.full(n, s, np.int32), frame)


def _sealed_writer(path: Path, table: str) -> pq.ParquetWriter:
    """A writer with the options ``tickrec compact`` seals with (``sealio.sealed_options``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return pq.ParquetWriter(path, TABLES[table], **sealio.sealed_options(table))


def _write_sealed(root: Path, date: str, parts: Iterator[dict[str, pa.Table]],
                  row_group_rows: int, file_rows: int) -> None:
    pending: dict[str, list[pa.Table]] = {"trades": [], "book": []}
    writers: dict[str, pq.ParquetWriter | None] = {"trades": None, "book": None}
    in_file = {"trades": 0, "book": 0}
    files = {"trades": 0, "book": 0}

    def flush(table: str, final: bool) -> None:
        held = pa.concat_tables(pending[table]) if pending[table] else None
        while held is not None and (held.num_rows >= row_group_rows or (final and held.num_rows)):
            if writers[table] is None:
                name = f"sealed-bench-{files[table]:03d}.parquet"
                writers[table] = _sealed_writer(partition_dir(root, table, "alltick", date) / name,
                                                table)
                files[table] += 1
            n = min(row_group_rows, held.num_rows)
            writers[table].write_table(held.slice(0, n), row_group_size=row_group_rows)
            in_file[table] += n
            held = held.slice(n)
            if in_file[table] >= file_rows:
                writers[table].close()
                writers[table], in_file[table] = None, 0
        pending[table] = [held] if held is not None and held.num_rows else []

    for part in parts:
        for table, t in part.items():
            pending[table].append(t)
            flush(table, False)
    for table in pending:
        flush(table, True)
        if writers[table] is not None:
            writers[table].close()


def _write_rolled(root: Path, date: str, rng: np.random.Generator, start: int, rows: int) -> None:
    ts, sym = _frames(rng, start, rows)
    frame = np.arange(rows, dtype=np.int64)
    for i, lo in enumerate(range(0, rows, ROLLED_ROWS)):
        hi = min(rows, lo + ROLLED_ROWS)
        for table, t in _events(rng, ts[lo:hi], sym[lo:hi], frame[lo:hi]).items():
            out = partition_dir(root, table, "alltick", date) / f"{SESSION}-{i:06d}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, out, **PARQUET_OPTIONS, **encoding_options(t.schema))


def make_day(root: Path, day: int, rows: int, layout: str = "sealed", *,
             row_group_rows: int = sealio.ROW_GROUP_ROWS,
             file_rows: int = sealio.FILE_ROWS) -> None:
    """One date partition (``date_name(day)``) of about ``rows`` events (see module doc)."""
    rng = np.random.default_rng(day)
    start = DAY0 + day * DAY_NS
    if layout == "sealed":
        _write_sealed(root, date_name(day), _by_symbol(rng, start, rows), row_group_rows,
                      file_rows)
    elif layout == "rolled":
        _write_rolled(root, date_name(day), rng, start, rows)
    else:
        raise ValueError(f"unknown layout {layout!r}")


__all__ = ["DAY0", "SYMBOLS", "date_name", "make_day"]
