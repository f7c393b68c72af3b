"""Helpers of the wire replay tests: one recorded store per venue, recorders and
servers run together, the stored frames a client is owed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recorder.live import Recorder
from replay.serve import ReplayServer
from replay.sim.symbols import default_symbols
from schemas.events import Status
from schemas.venues import get
from schemas.venues.alltick import AllTickClient
from tests.helpers import read_table, record_sim

# venue: (steps, rate, adapter options, faults): faults that leave gap rows to compare
# without cutting the capture into two sessions
CASES: dict[str, tuple[int, float, dict[str, Any], str | None]] = {
    "alltick": (700, 400, {"request_interval": 0.0}, "skip@300,dup@450"),
    "finazon": (40, 20, {"bar_seconds": 5}, "dup@20"),
    "noren": (500, 300, {}, "dup@200"),
    "hedgetech": (300, 150, {}, "dup@100"),
    "futu": (500, 300, {"cache_ticks": 5}, "dup@200,upstream@300:40"),
}
FAST = {"request_interval": 0.0}        # serve options: AllTick without its 1 s request spacing
_STORES: dict[str, Path] = {}


@contextlib.contextmanager
def fast_alltick() -> Iterator[None]:
    """AllTick clients send both subscribes at once (the vendor spaces requests 1 s).

    Which frames a client gets, and how its decoder counts sequence gaps, depend on
    when each subscription took effect; with both in force before the first frame,
    two recordings of the same frames decode to the same rows."""
    before = AllTickClient.request_interval
    AllTickClient.request_interval = 0.0
    try:
        yield
    finally:
        AllTickClient.request_interval = before


async def store(venue: str, base: Path) -> Path:
    """A simulator session of ``venue`` recorded once per test run (read-only for tests)."""
    if venue not in _STORES:
        steps, rate, options, faults = CASES[venue]
        root = base / f"store-{venue}"
        with fast_alltick():
            await record_sim(root, default_symbols(venue), venue=venue, steps=steps, rate=rate,
                             adapter_options=options, faults=faults)
        _STORES[venue] = root
    return _STORES[venue]


def data_frames(root: Path, venue: str) -> list[dict[str, Any]]:
    """The stored incoming data frames in replay order, each with its (symbol, stream)."""
    route = get(venue).route
    out = []
    for r in read_table(root, "raw"):
        rt = route(r["payload"]) if r["direction"] == "in" else None
        if rt is not None:
            out.append({**r, "symbol": rt[0], "stream": rt[1]})
    return out


async def record_served(server: ReplayServer, venue: str, root: Path,
                        symbols: list[str] | None = None, **kw: Any) -> Recorder:
    """Record one connection to ``server`` with our own recorder, until the server
    closes it at the end of the range."""
    closed = asyncio.Event()

    async def sink(events: list[Any]) -> None:
        if any(isinstance(e, Status) and e.kind == "disconnected" for e in events):
            closed.set()

    rec = Recorder(venue, server.url, symbols or default_symbols(venue), root, sink=sink,
                   flush_seconds=1.0, reconnect_min=60.0, **kw)
    task = asyncio.create_task(rec.run())
    try:
        await asyncio.wait_for(closed.wait(), 20)
    finally:
        rec.stop()
        await asyncio.wait_for(task, 15)
    return rec


def comparable(root: Path, table: str) -> list[dict[str, Any]]:
    """A table's rows without what belongs to the receiving connection: ``ts_recv`` and
    ``session`` (and ``date``, the partition of ``ts_recv``); a gap's ``ts_start`` /
    ``ts_end`` are receive times too."""
    drop = {"ts_recv", "session", "date"} | ({"ts_start", "ts_end"} if table == "gaps" else set())
    return [{k: v for k, v in r.items() if k not in drop} for r in read_table(root, table)]
