"""Pacing: the wall clock keeps recorded spacing / speed, the virtual clock never sleeps."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

import replay
from replay.clock import Lateness, VirtualClock, WallClock, make_clock
from schemas.errors import ConfigError
from schemas.events import Trade
from storage.atomic import write_parquet
from storage.layout import partition_dir
from storage.writer import to_arrow

VENUE = "alltick"
T0 = 1_714_608_000_000_000_000 - 500_000_000       # 0.5 s before 2024-05-02T00:00Z
MS = 1_000_000


def paced_store(root: Path, span_ms: int = 2000, seed: int = 3) -> list[int]:
    """Trades spaced 1-5 ms over ``span_ms`` (across midnight); returns their ts_recv."""
    rnd = random.Random(seed)
    ts, times = T0, []
    while ts <= T0 + span_ms * MS:
        times.append(ts)
        ts += rnd.randint(1, 5) * MS
    rows = [(("BTC", t, None, None, "s", i, 0, 1.0, 1.0, None, "buy", None, None))
            for i, t in enumerate(times)]
    by_date: dict[str, list[tuple[object, ...]]] = {}
    for r in rows:
        by_date.setdefault("2024-05-01" if r[1] < T0 + 500 * MS else "2024-05-02", []).append(r)
    for date, part in by_date.items():
        write_parquet(to_arrow("trades", part), partition_dir(root, "trades", VENUE, date) / "a.parquet")
    return times


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    root = tmp_path_factory.mktemp("paced")
    return root, paced_store(root)


async def test_speed_10_shrinks_the_spacing_tenfold(paced: tuple[Path, list[int]]) -> None:
    root, times = paced
    span_s = (times[-1] - times[0]) / 1e9
    released: list[tuple[int, int]] = []
    async with replay.open(root, VENUE, speed=10) as feed:
        clock = feed.clock
        assert isinstance(clock, WallClock)
        async for ev in feed:
            released.append((time.monotonic_ns(), ev.ts_recv))
    assert [ts for _, ts in released] == times
    elapsed = (released[-1][0] - released[0][0]) / 1e9
    assert span_s / 10 * 0.9 <= elapsed <= span_s / 10 * 1.5, (elapsed, span_s)
    # Never early: each event at or after anchor + (ts - ts0) / speed.
    assert all(wall >= clock.deadline(ts) for wall, ts in released)
    lat = clock.lateness
    assert lat.count == len(times) and 0 <= lat.p50_ns <= lat.p99_ns <= lat.max_ns


async def test_precise_mode_is_never_early(paced: tuple[Path, list[int]]) -> None:
    root, times = paced
    end = times[0] + 600 * MS                                   # 60 ms of wall time at speed 10
    async with replay.open(root, VENUE, speed=10, precise=True, end=end) as feed:
        clock = feed.clock
        assert isinstance(clock, WallClock)
        async for ev in feed:
            assert time.monotonic_ns() >= clock.deadline(ev.ts_recv)
    assert clock.lateness.count == sum(1 for t in times if t < end)


async def test_speed_max_and_virtual_do_not_wait(paced: tuple[Path, list[int]]) -> None:
    root, times = paced
    for kw in ({"speed": "max"}, {"clock": "virtual", "speed": 0.01}):
        t0 = time.monotonic()
        async with replay.open(root, VENUE, **kw) as feed:   # type: ignore[arg-type]
            assert isinstance(feed.clock, VirtualClock)
            n = 0
            async for ev in feed:
                assert feed.now() == ev.ts_recv
                n += 1
        assert n == len(times) and time.monotonic() - t0 < 1.0


async def test_wall_clock_now_runs_at_speed() -> None:
    clock = WallClock(50.0, start=T0 - 5)
    assert clock.now() == T0 - 5                              # before the first event
    await clock.wait_until(T0)
    anchor = time.monotonic_ns()
    await asyncio.sleep(0.05)
    advanced = clock.now() - T0
    slept = time.monotonic_ns() - anchor
    assert 50 * slept * 0.9 <= advanced <= 50 * (slept + 0.02e9), (advanced, slept)
    await clock.wait_until(T0 + 5 * 10**9)                    # 5 s recorded = 0.1 s at 50x
    waited = time.monotonic_ns() - anchor
    assert 0.1e9 * 0.99 <= waited <= 0.1e9 + 0.15e9, waited
    assert clock.now() >= T0 + 5 * 10**9


async def test_a_late_consumer_catches_up_instead_of_shifting(paced: tuple[Path, list[int]]) -> None:
    root, times = paced
    end = times[0] + 1000 * MS                                # 100 ms at speed 10
    async with replay.open(root, VENUE, speed=10, end=end) as feed:
        t0: float | None = None
        async for _ in feed:
            if t0 is None:
                t0 = time.monotonic()
                await asyncio.sleep(0.1)                      # stall on the first event
        assert t0 is not None
        elapsed = time.monotonic() - t0
    assert 0.1 <= elapsed < 0.15, elapsed                     # not 100 ms + 100 ms


async def test_virtual_clock() -> None:
    clock = VirtualClock(start=7)
    assert clock.now() == 7 and not clock.paced
    await clock.wait_until(T0)
    assert clock.now() == T0
    clock.advance(T0 + 3)
    assert clock.now() == T0 + 3


def test_lateness_statistics() -> None:
    lat = Lateness(window=4)
    for v in (5, -3, 1, 2, 100, 3):        # negatives count as on time; window keeps 4
        lat.add(v)
    assert lat.count == 6 and lat.max_ns == 100 and lat.total_ns == 111
    assert sorted(lat._ring) == [1, 2, 3, 100]
    assert lat.p50_ns in (2, 3) and lat.p99_ns == 100
    assert Lateness().p99_ns == 0
    assert set(lat.summary()) == {"count", "p50_ms", "p99_ms", "max_ms", "mean_ms"}


def test_make_clock() -> None:
    assert isinstance(make_clock("wall", None), VirtualClock)
    assert isinstance(make_clock("virtual", 3.0), VirtualClock)
    wall = make_clock("wall", 2.0, precise=True)
    assert isinstance(wall, WallClock) and wall.precise and wall.speed == 2.0
    with pytest.raises(ConfigError):
        make_clock("sundial", 1.0)
    with pytest.raises(ConfigError):
        WallClock(0)


def test_trade_rows_match_the_helper() -> None:
    """The hand-written rows above follow the trades column order."""
    ev = Trade(venue=VENUE, symbol="BTC", ts_recv=1, ts_event=None, seq=None, session="s",
               frame=0, pos=0, price=1.0, size=1.0, side="buy")
    from storage.writer import _GETTERS
    assert _GETTERS["trades"](ev) == ("BTC", 1, None, None, "s", 0, 0, 1.0, 1.0, None, "buy", None,
                                      None)


async def test_events_already_due_are_released_without_a_wakeup() -> None:
    clock = WallClock(1.0)
    await clock.wait_until(T0)
    await asyncio.sleep(0.005)
    for k in range(100):                        # all due 5 ms ago .. now: no sleep at all
        await clock.wait_until(T0 + k * 40_000)
    assert clock.wakeups == 0 and clock.lateness.count == 101
    await clock.wait_until(T0 + 20 * MS)        # 15 ms ahead: one sleep, never early
    assert clock.wakeups >= 1 and time.monotonic_ns() >= clock.deadline(T0 + 20 * MS)
