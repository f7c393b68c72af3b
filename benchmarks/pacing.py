"""Pacing: how late each event is released at 1x and 10x, and what it costs in CPU.

Feeds 10,000 events spaced like a busy feed (0.1 to 0.5 ms apart) through the
replay clock exactly as ``ReplayFeed`` does, in the default mode and in the
precise mode (spins the last stretch of each wait). Lateness is measured by the
clock itself against the monotonic clock; CPU is process time over wall time;
``wakeups`` counts the sleeps the clock took and ``blocks`` the times the process
really blocked (voluntary context switches, ``getrusage``): what the default
mode's CPU is mostly made of, see docs/benchmarks.md, "Pacing".
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from typing import Any

from replay.clock import WallClock


async def _pace(speed: float, precise: bool, n: int, clock_type: Any = WallClock
                ) -> dict[str, Any]:
    rng = random.Random(5)
    ts, times = 0, []
    for _ in range(n):
        ts += rng.randint(100_000, 500_000)          # 0.1-0.5 ms apart
        times.append(ts)
    clock = clock_type(speed, precise=precise)
    blocks0 = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for t in times:                                  # as ReplayFeed.__anext__ does
        while not clock.release(t):
            await clock.sleep()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    blocks = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - blocks0
    if hasattr(clock, "close"):
        clock.close()
    s = clock.lateness.summary()
    return {"speed": speed, "precise": precise, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
            "max_ms": s["max_ms"], "cpu": cpu / wall, "seconds": wall,
            "wakeups": clock.wakeups, "blocks": blocks}


def run(n: int = 10_000, clock_type: Any = WallClock) -> list[dict[str, Any]]:
    """Default and precise mode at 1x and 10x; ``clock_type`` to compare another clock."""
    return [asyncio.run(_pace(speed, precise, n, clock_type))
            for speed in (1.0, 10.0) for precise in (False, True)]
