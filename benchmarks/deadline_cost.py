"""CPU per event of a paced piece's deadlines, inside a paced 10x run (cold caches).

``python -m benchmarks.deadline_cost REV`` paces 40,960 events at 10x four times
with each clock, interleaved: the clock of git revision ``REV`` given each piece's
``ts_recv`` as a Python list (what ``Piece.ts_recv`` returned up to session 8), and
this one given the int64 slice the feed now hands it. Around each
``clock.deadlines`` call it reads the thread's CPU time; it prints the median per
event of each round. The pacing is ``pacing._drive``'s loop, so the calls
run where the feed makes them: right after a wake-up, with the caches cold, where
they cost three to five times what a tight loop says (docs/benchmarks.md,
"Pacing, session 9").
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from typing import Any

import numpy as np

from benchmarks.pacing import _clock_at, _drive, _times
from replay.clock import WallClock


async def per_event_ns(clock_type: Any, as_array: bool, n: int = 40_960,
                       speed: float = 10.0) -> float:
    """Median thread CPU ns per event of ``deadlines`` over the run's pieces."""
    clock = clock_type(speed)
    times: Any = _times(n)
    if as_array:
        times = np.asarray(times, dtype=np.int64)
    spent: list[float] = []
    await _drive(clock, times, spent)
    clock.close()
    return statistics.median(spent[1:] or spent)     # the first piece also anchors


def main(rev: str, rounds: int = 4) -> None:
    old = _clock_at(rev)
    runs: dict[str, list[float]] = {f"{rev}, list": [], "this, int64": []}
    for _ in range(rounds):
        runs[f"{rev}, list"].append(asyncio.run(per_event_ns(old, False)))
        runs["this, int64"].append(asyncio.run(per_event_ns(WallClock, True)))
    for name, values in runs.items():
        print(f"{name:>16s}: " + " ".join(f"{v:.0f}" for v in values) + " ns an event")
    ratio = statistics.median(runs["this, int64"]) / statistics.median(runs[f"{rev}, list"])
    print(f"ratio of medians {ratio:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "HEAD")
