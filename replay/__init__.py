"""tickrec replay: the store played back, in process or on the wire.

In process (this package's public API)::

    async with replay.open(root, venue="alltick", symbols=["BTCUSDT"],
                           start="2024-05-01", end="2024-05-02", speed=10) as feed:
        async for event in feed:          # schemas.events records, replay order
            ...

- ``open(...) -> ReplayFeed``: the Feed protocol (``schemas.feed.Feed``) over the
  store; see ``replay.feed`` (feed), ``replay.scan`` (order, filters, memory) and
  ``replay.clock`` (pacing).
- ``replay_sync(...)``: the same stream unpaced, as a plain iterator.
- ``iter_batches(...)``: the same rows as sorted ``pyarrow.RecordBatch``es.
- ``digest(events)`` / ``adigest(feed)``: sha256 of the stream's JSON lines.
- ``use_system_pool()``: the allocator a long replay should run on (less memory).

On the wire: ``replay.serve.ReplayServer`` (``tickrec serve``) serves the store's
recorded frames in the venue's own protocol to unmodified vendor clients (see
``docs/serve.md``).

``replay.digest`` is the function (it shadows the submodule's name); the
module's other names come with ``from replay.digest import ...``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from replay.clock import WINDOW_S, VirtualClock, WallClock

# After the submodule import, so ``replay.digest`` is the function.
from replay.digest import adigest, digest, replay_sync
from replay.feed import ReplayFeed
from replay.rows import RawRow
from replay.scan import Scan


def open(root: str | os.PathLike[str], venue: str, *,
         symbols: str | Sequence[str] | None = None, start: Any = None, end: Any = None,
         speed: float | str = 1.0, clock: str = "wall", kind: str = "events",
         tables: str | Sequence[str] | None = None, precise: bool = False,
         pace_window: float = WINDOW_S, read_ahead: bool = True) -> ReplayFeed:
    """A ``ReplayFeed``: async context manager and async iterator of the stream.

    ``venue`` is required; ``symbols`` a list (or "A,B"); ``start``/``end`` ns ints,
    datetimes or ISO text, UTC, half-open on ``ts_recv``; ``speed`` a factor or
    ``"max"``; ``clock`` "wall" or "virtual" (never sleeps, ``now()`` = the event's
    ``ts_recv``); ``kind`` "events" or "raw" (``RawRow``s); ``tables`` a subset of
    the event tables (default all five); ``precise`` spins the last millisecond of
    each wait; ``pace_window`` (seconds, default 0.00135) is how late the default mode
    may release an event so that the events due within it share one wake-up
    (``replay.clock``: more saves CPU at high rates, less is less late).
    ``read_ahead`` (default) reads the next rows on a reader thread, so reading a
    day never stalls the event loop; ``read_ahead=False`` reads on the loop, between
    events: an unpaced replay (``speed="max"``, ``clock="virtual"``) whose program
    owns its loop runs faster that way (docs/benchmarks.md, "Replay through ``async
    for``"), but every other task on the loop waits while a day is read. Bad
    arguments, a missing root or a directory that is not a store raise
    ``ConfigError`` here; an empty range just yields nothing.
    """
    return ReplayFeed(root, venue, symbols=symbols, start=start, end=end, speed=speed,
                      clock=clock, kind=kind, tables=tables, precise=precise,
                      pace_window=pace_window, read_ahead=read_ahead)


def use_system_pool() -> None:
    """Put this process's Arrow buffers on the C allocator (the system pool).

    A replay frees and reallocates windows of rows all day long. Arrow's default
    pool (mimalloc) keeps much of what is freed: streaming two 10M-row sealed days
    of trades and books peaked at 322 MB on it and at 245 MB on the system pool,
    at the same speed (docs/benchmarks.md, "Replay"). This sets pyarrow's default;
    Arrow's C++ default (what the Parquet reader allocates from) is fixed when
    pyarrow is imported, by ``ARROW_DEFAULT_MEMORY_POOL=system`` in the
    environment. ``tickrec replay`` and ``tickrec serve`` do both; a program
    replaying in process may too.
    """
    pa.set_memory_pool(pa.system_memory_pool())


def iter_batches(root: str | os.PathLike[str], venue: str, *,
                 symbols: str | Sequence[str] | None = None, start: Any = None, end: Any = None,
                 kind: str = "events", tables: str | Sequence[str] | None = None,
                 columns: Sequence[str] | None = None,
                 batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """Sorted Arrow record batches of the range (schema: ``replay.scan`` module doc)."""
    scan = Scan(root, venue, symbols=symbols, start=start, end=end, tables=tables, kind=kind)
    return scan.iter_batches(columns, batch_rows)


__all__ = ["RawRow", "ReplayFeed", "Scan", "VirtualClock", "WallClock", "adigest", "digest",
           "iter_batches", "open", "replay_sync", "use_system_pool"]
