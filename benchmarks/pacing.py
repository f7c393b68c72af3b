"""Pacing: how late each event is released at 1x and 10x, and what it costs in CPU.

Feeds 10,000 events spaced like a busy feed (0.1 to 0.5 ms apart) through the
replay clock exactly as ``ReplayFeed`` does, in the default mode and in the
precise mode (spins the last stretch of each wait). Lateness is measured by the
clock itself against the monotonic clock; CPU is process time over wall time;
``wakeups`` counts the sleeps the clock took (what the default mode's CPU is
mostly made of: see docs/benchmarks.md, "Pacing").
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from replay.clock import WallClock


async def _pace(speed: float, precise: bool, n: int) -> dict[str, Any]:
    rng = random.Random(5)
    ts, times = 0, []
    for _ in range(n):
        ts += rng.randint(100_000, 500_000)          # 0.1-0.5 ms apart
        times.append(ts)
    clock = WallClock(speed, precise=precise)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for t in times:
        await clock.wait_until(t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    s = clock.lateness.summary()
    return {"speed": speed, "precise": precise, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
            "max_ms": s["max_ms"], "cpu": cpu / wall, "seconds": wall,
            "wakeups": clock.wakeups}


def run(n: int = 10_000) -> list[dict[str, Any]]:
    return [asyncio.run(_pace(speed, precise, n))
            for speed in (1.0, 10.0) for precise in (False, True)]
