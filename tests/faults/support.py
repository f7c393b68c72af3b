"""Helpers of the fault suite: the soak switch, a simulator + recorder pair that a
test can disturb while it runs, and store readers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from recorder.live import Recorder
from replay.sim.server import Simulator, make_adapter

# `make soak` sets SOAK=1: the randomized tests run longer (more kills, more examples).
SOAK = os.environ.get("SOAK", "") not in ("", "0")


def scaled(normal: int, soak: int) -> int:
    """``soak`` under ``make soak``, else ``normal``."""
    return soak if SOAK else normal


async def wait_for(predicate: Any, limit: float, step: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``limit`` seconds pass."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


async def settle(rec: Recorder, quiet: float = 0.4, limit: float = 10.0) -> None:
    """Wait until no new frame has arrived for ``quiet`` seconds (the recorder caught up)."""
    end, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet:
        await asyncio.sleep(0.05)
        n = rec.capture.frames_in if rec.capture is not None else 0
        if n != last:
            last, since = n, time.monotonic()


class Run:
    """A simulator and a recorder running together (see ``running``)."""

    def __init__(self, sim: Simulator, rec: Recorder, task: asyncio.Task[None]) -> None:
        self.sim, self.rec, self.task = sim, rec, task
        self.events: list[Any] = []


@asynccontextmanager
async def running(root: Path, symbols: list[str], *, venue: str = "alltick", rate: float = 300,
                  steps: int | None = None, seed: int = 7, faults: str | None = None,
                  token: str | None = None, adapter_options: dict[str, Any] | None = None,
                  **rec_kw: Any) -> AsyncIterator[Run]:
    """Simulator + in-process Recorder; on exit waits for the recorder to catch up and
    stops both. Every event and Status the recorder emits is in ``run.events``."""
    adapter = make_adapter(venue, **(adapter_options or {}))
    sim_class = getattr(adapter, "simulator", Simulator)
    sim = sim_class(adapter, symbols, rate=rate, steps=steps, seed=seed, faults=faults,
                    token=token)
    await sim.start()
    rec_kw.setdefault("flush_seconds", 1.0)
    rec_kw.setdefault("reconnect_min", 0.2)
    sink_events: list[Any] = []

    async def sink(events: list[Any]) -> None:
        sink_events.extend(events)

    rec = Recorder(venue, sim.url, symbols, root, sink=sink, **rec_kw)
    task = asyncio.create_task(rec.run())
    run = Run(sim, rec, task)
    run.events = sink_events
    try:
        yield run
        if not task.done():
            await settle(rec)
            rec.stop()
        await asyncio.wait_for(asyncio.shield(task), 20)
    finally:
        if not task.done():
            rec.stop()
            await asyncio.gather(asyncio.wait_for(task, 20), return_exceptions=True)
        await sim.stop()


def tiny_store(root: Path, symbols: tuple[str, ...] = ("AAPL.US", "700.HK"), n: int = 40) -> Path:
    """A small AllTick store written through ``Capture`` (no network): both subscriptions,
    their acknowledgements and ``n`` trades, published and sealed."""
    from recorder.capture import Capture
    from schemas.venues.alltick import AllTickClient, encode_trade
    client = AllTickClient(list(symbols))
    cap = Capture(root, "alltick")
    cap.open_session("ws://127.0.0.1/", list(symbols), client.decoder_options())
    for out in client.on_open():
        cap.frame_out(out.stored, out.kind)
    for cmd in (22003, 22005):
        cap.frame_in(f'{{"cmd_id":{cmd},"seq_id":1,"ret":200,"msg":"ok","data":{{}}}}')
    for i in range(n):
        cap.frame_in(encode_trade(symbols[i % len(symbols)], i // len(symbols) + 1,
                                  1_700_000_000_000 + i, 10.0 + i, 1.0, 1))
    cap.close()
    return root
