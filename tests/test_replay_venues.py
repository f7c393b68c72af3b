"""Every venue: record its simulator, replay the capture: the same stream at any speed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import replay
from replay.digest import Digest
from replay.sim.symbols import default_symbols
from tests.helpers import read_table, record_sim
from tickrec.verify import verify

CASES = {   # venue: (steps, rate, adapter options)
    "alltick": (900, 400, {}),
    "finazon": (40, 20, {"bar_seconds": 5}),
    "noren": (500, 300, {}),
    "hedgetech": (300, 150, {}),
    "futu": (500, 300, {}),
}


async def _digest(root: Path, venue: str, **kw: object) -> tuple[str, int, list[int]]:
    d = Digest()
    nows: list[int] = []
    async with replay.open(root, venue, **kw) as feed:   # type: ignore[arg-type]
        async for ev in feed:
            d.add(ev)
            if kw.get("clock") == "virtual":
                nows.append(feed.now() - ev.ts_recv)
    return d.hexdigest(), d.count, nows


@pytest.mark.parametrize("venue", sorted(CASES))
async def test_replay_digest_is_the_same_at_max_at_10x_and_on_the_virtual_clock(
        venue: str, tmp_path: Path) -> None:
    steps, rate, options = CASES[venue]
    await record_sim(tmp_path, default_symbols(venue), venue=venue, steps=steps, rate=rate,
                     adapter_options=options)
    stored = sum(len(read_table(tmp_path, t)) for t in ("trades", "book", "tickers", "bars", "gaps"))
    assert stored > 0

    top, n_top, _ = await _digest(tmp_path, venue, speed="max")
    again, _, _ = await _digest(tmp_path, venue, speed="max")
    t0 = time.monotonic()
    fast, n_fast, _ = await _digest(tmp_path, venue, speed=10)
    assert time.monotonic() - t0 < 10
    virtual, n_virtual, lags = await _digest(tmp_path, venue, clock="virtual")
    assert n_top == n_fast == n_virtual == stored
    assert top == again == fast == virtual
    assert set(lags) == {0}, "on the virtual clock, now() is the event's own time"
    assert verify(tmp_path).ok
    _ = asyncio
