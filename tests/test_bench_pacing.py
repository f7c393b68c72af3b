"""The pacing benchmark's own pieces run and measure what they say (``make bench``)."""

from __future__ import annotations

import asyncio
import time

from benchmarks import deadline_cost, pacing


def test_the_pacing_limit_releases_every_event_never_early_on_the_same_grid() -> None:
    n = 400                                   # 0.1-0.5 ms apart, at 20x: about 6 ms of events
    ours = asyncio.run(pacing._pace(20.0, False, n))
    t0 = time.monotonic()
    limit = asyncio.run(pacing.limit_pace(20.0, n, window=0.001))
    t1 = time.monotonic()
    floor = asyncio.run(pacing.loop_floor_pace(20.0, n, window=0.001))
    assert ours["wakeups"] > 0 and limit["blocks"] > 0
    for cpu in (ours["cpu"], limit["cpu"], floor):
        assert 0 < cpu <= 1.05                  # a share of one core (process time / wall)
    assert 0 <= limit["p99_ms"] < 1000          # lateness is never negative (never early)
    # the schedule starts 2 ms after the call, its last event is not released before its
    # time: the call lasts the span / 20 at least. (Its own ``seconds`` starts a moment
    # after the schedule is fixed: a machine frozen in between shortens it, so it is
    # only checked to lie inside the call.)
    span = (pacing._times(n)[-1] - pacing._times(n)[0]) / 20 / 1e9
    assert t1 - t0 >= span + 0.002
    assert 0 < limit["seconds"] <= t1 - t0



def test_the_drive_records_every_events_lateness_across_pieces() -> None:
    n = 2 * pacing.PIECE_ROWS + 5               # three pieces, the last one short
    clock = pacing.WallClock(1000.0)
    asyncio.run(pacing._drive(clock, pacing._times(n)))
    clock.close()
    assert clock.lateness.count == n and min(clock.lateness.values) >= 0


def test_steal_is_a_count_that_only_grows() -> None:
    first = pacing.steal_s()
    assert 0 <= first <= pacing.steal_s()


def test_the_deadline_cost_is_a_positive_time_an_event_for_lists_and_arrays() -> None:
    n = 3 * pacing.PIECE_ROWS                   # at 1000x: a few ms of events
    for as_array in (False, True):
        ns = asyncio.run(deadline_cost.per_event_ns(pacing.WallClock, as_array, n, 1000.0))
        assert 0 < ns < 1e6                     # thread CPU per event, under a millisecond
