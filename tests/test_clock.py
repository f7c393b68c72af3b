"""Pacing: the wall clock keeps recorded spacing / speed, the virtual clock never sleeps."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replay
import replay.clock
import replay.feed
from replay.clock import Lateness, VirtualClock, WallClock, make_clock
from replay.feed import RECORD_ROWS, ReplayFeed
from replay.timer import TimerFd
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
    write_trades(root, times)
    return times


def write_trades(root: Path, times: list[int]) -> None:
    """One trade at each of ``times`` (ts_recv), in day files of ``VENUE``."""
    rows = [(("BTC", t, None, None, "s", i, 0, 1.0, 1.0, None, "buy", None, None))
            for i, t in enumerate(times)]
    by_date: dict[str, list[tuple[object, ...]]] = {}
    for r in rows:
        by_date.setdefault("2024-05-01" if r[1] < T0 + 500 * MS else "2024-05-02", []).append(r)
    for date, part in by_date.items():
        write_parquet(to_arrow("trades", part), partition_dir(root, "trades", VENUE, date) / "a.parquet")


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
    # at most 3x: a loaded machine is slow, but speed 1 would be 10x
    assert span_s / 10 * 0.9 <= elapsed <= span_s / 10 * 3, (elapsed, span_s)
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
    # 100 ms of recorded time at speed 10, and the consumer stalls 100 ms on the first
    # event: every later event is due by then and goes out at once, with no sleep
    # (a shifted schedule would sleep ~100 ms more); how late they were is recorded.
    root, times = paced
    end = times[0] + 1000 * MS
    async with replay.open(root, VENUE, speed=10, end=end) as feed:
        clock = feed.clock
        assert isinstance(clock, WallClock)
        n, sleeps_after_stall = 0, None
        async for _ in feed:
            n += 1
            if sleeps_after_stall is None:
                await asyncio.sleep(0.1)                      # stall on the first event
                sleeps_after_stall = clock.wakeups
        assert n > 10 and clock.wakeups == sleeps_after_stall
        assert clock.lateness.max_ns >= 90 * 1_000_000


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
    assert sorted(lat.values[-lat.window:]) == [1, 2, 3, 100] and lat.last_ns == 3
    assert lat.p50_ns in (2, 3) and lat.p99_ns == 100
    assert Lateness().p99_ns == 0 and Lateness().last_ns == 0
    for v in range(1000):                  # folded: totals exact, the array stays bounded
        lat.add(v)
    assert lat.count == 1006 and lat.max_ns == 999 and lat.total_ns == 111 + sum(range(1000))
    assert len(lat.values) < 2 * lat.window and lat.p99_ns == 999 and lat.last_ns == 999
    assert set(lat.summary()) == {"count", "p50_ms", "p99_ms", "max_ms", "mean_ms"}


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(st.integers(0, 5_000_000), st.integers(0, 2**62)), max_size=300),
       window=st.integers(1, 20))
def test_lateness_totals_stay_exact_whatever_is_folded(values: list[int], window: int) -> None:
    """``fold`` sums in int64 unless that could overflow (huge values): exact either way."""
    lat = Lateness(window=window)
    for v in values:
        lat.add(v)
    assert lat.count == len(values) and lat.total_ns == sum(values)
    assert lat.max_ns == max(values, default=0) and len(lat.values) < 2 * window
    assert list(lat.values) == values[len(values) - len(lat.values):]


def test_make_clock() -> None:
    assert isinstance(make_clock("wall", None), VirtualClock)
    assert isinstance(make_clock("virtual", 3.0), VirtualClock)
    wall = make_clock("wall", 2.0, precise=True)
    assert isinstance(wall, WallClock) and wall.precise and wall.speed == 2.0
    with pytest.raises(ConfigError):
        make_clock("sundial", 1.0)
    with pytest.raises(ConfigError):
        WallClock(0)
    assert make_clock("wall", 1.0, window=0.002).window_ns == 2 * MS    # type: ignore[union-attr]
    with pytest.raises(ConfigError):
        WallClock(1.0, window=-0.001)


def test_deadlines_are_exact_integer_ns() -> None:
    for speed, recorded, wall in ((2.5, 10**9, 400_000_000), (10.0, 7, 0), (0.25, 3, 12),
                                  (1.0, 86_400 * 10**9 + 1, 86_400 * 10**9 + 1)):
        clock = WallClock(speed)
        clock.anchor(T0)
        assert clock.deadline(T0 + recorded) - clock._wall0 == wall


async def test_the_pace_window_reaches_the_clock(paced: tuple[Path, list[int]]) -> None:
    root, _ = paced
    feed = replay.open(root, VENUE, speed=2, pace_window=0.0005)
    assert isinstance(feed.clock, WallClock) and feed.clock.window_ns == 500_000
    with pytest.raises(ConfigError):
        replay.open(root, VENUE, pace_window=5)


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
    await clock.wait_until(T0 + 300 * MS)       # still ahead: one sleep, never early
    assert clock.wakeups >= 1 and time.monotonic_ns() >= clock.deadline(T0 + 300 * MS)


# -- the default mode's schedule, on a simulated monotonic clock ---------------------------

@dataclass
class FakeTime:
    """Monotonic ns that moves ``tick`` per reading and jumps when the fake timer fires."""
    now: int = 10**12
    tick: int = 0

    def monotonic_ns(self) -> int:
        self.now += self.tick
        return self.now


@dataclass
class FakeTimer:
    """Stands for ``TimerFd``: keeps its next expiry (and period) as the real one does and
    wakes at that expiry plus the loop's latency."""
    clock: FakeTime
    latencies: list[int]
    asked: list[int] = field(default_factory=list)      # arming times (timerfd_settime)
    waits: list[tuple[int, int, int]] = field(default_factory=list)   # earliest, latest, expiry
    next: int = 0
    busy = False

    def wake(self, earliest: int, latest: int, period: int = 0) -> Any:
        if not earliest <= self.next <= latest:
            self.asked.append(latest)
            self.next = latest
        expiry = self.next
        self.waits.append((earliest, latest, expiry))
        return self._sleep(expiry, period)

    async def _sleep(self, expiry: int, period: int) -> None:
        latency = self.latencies[len(self.waits) % len(self.latencies)]
        self.clock.now = max(self.clock.now, expiry) + latency
        self.next = 0
        if period:                   # the next expiry on the period's grid after now
            self.next = expiry + period * ((self.clock.now - expiry) // period + 1)
        await asyncio.sleep(0)

    def close(self) -> None:
        pass


def simulate(mp: pytest.MonkeyPatch, fake: FakeTime, timer: FakeTimer) -> None:
    """The clock and the feed read ``fake`` for monotonic time and sleep on ``timer``."""
    mp.setattr(replay.clock, "time", SimpleNamespace(monotonic_ns=fake.monotonic_ns))
    mp.setattr(replay.clock, "_monotonic_ns", fake.monotonic_ns)
    mp.setattr(replay.feed, "_monotonic_ns", fake.monotonic_ns)
    mp.setattr(TimerFd, "open", classmethod(lambda cls, loop: timer))


schedules = dict(gaps=st.lists(st.integers(0, 3 * MS), min_size=1, max_size=60),
                 speed=st.sampled_from([0.5, 1.0, 3.0, 10.0, 100.0]),
                 window_us=st.sampled_from([0, 300, 1000, 1500]),
                 latencies=st.lists(st.integers(0, 400_000), min_size=1, max_size=5),
                 tick=st.integers(0, 20_000))


def check_schedule(clock: WallClock, timer: FakeTimer, times: list[int],
                   released: list[tuple[int, int]], latencies: list[int], tick: int) -> None:
    """Each event out once, in order, never early and within the window plus the loop's
    latency of its deadline (or right after the one before it); wake-ups only when needed."""
    window = clock.window_ns
    assert [ts for ts, _ in released] == times                       # same events, same order
    # never early; out within window + latency of its deadline, or right after the event
    # before it (a burst goes out back to back: only the readings' own ticks between)
    deadlines = [clock.deadline(ts) for ts in times]
    prev = 0
    for (_, at), due in zip(released, deadlines, strict=True):
        assert due <= at <= max(due + window + max(latencies), prev) + 4 * tick
        prev = at
    # each wake ends within [due, due + window] of the event it waits for, and an event
    # already due when the previous one went out takes no wake-up
    waited = [i for i in range(1, len(times)) if deadlines[i] > released[i - 1][1] + tick]
    assert clock.wakeups == len(timer.waits) <= len(waited)
    assert len(timer.asked) <= len(timer.waits)                       # armed only when needed
    for earliest, latest, expiry in timer.waits:
        assert earliest <= expiry <= latest <= earliest + window
        assert earliest in deadlines


def pace_with_release(times: list[int], speed: float, window_us: int, latencies: list[int],
                      tick: int) -> tuple[WallClock, FakeTimer, list[tuple[int, int]]]:
    """``times`` through ``release``/``sleep`` (``wait_until``) on simulated time: the
    clock, its timer and (ts, when released) per event."""
    fake = FakeTime(tick=tick)
    timer = FakeTimer(fake, latencies)
    clock = WallClock(speed, window=window_us / 1e6)
    released: list[tuple[int, int]] = []

    async def run() -> None:
        for ts in times:
            await clock.wait_until(ts)
            released.append((ts, fake.now))

    with pytest.MonkeyPatch.context() as mp:
        simulate(mp, fake, timer)
        asyncio.run(run())
    return clock, timer, released


@settings(max_examples=150, deadline=None)
@given(**schedules)
def test_schedule_never_early_in_order_and_bounded(gaps: list[int], speed: float, window_us: int,
                                                   latencies: list[int], tick: int) -> None:
    times = [T0 + sum(gaps[:i]) for i in range(len(gaps) + 1)]
    clock, timer, released = pace_with_release(times, speed, window_us, latencies, tick)
    check_schedule(clock, timer, times, released, latencies, tick)
    assert clock.lateness.count == len(times)


@settings(max_examples=60, deadline=None)
@given(**schedules, piece_rows=st.integers(1, 8))
def test_the_feed_keeps_the_same_schedule(gaps: list[int], speed: float, window_us: int,
                                          latencies: list[int], tick: int,
                                          piece_rows: int) -> None:
    """``ReplayFeed`` checks a piece's deadlines itself (``WallClock.deadlines``, ``pause``):
    the same guarantees as ``release``/``sleep``, across piece boundaries too."""
    fake = FakeTime(tick=tick)
    timer = FakeTimer(fake, latencies)
    times = [T0 + sum(gaps[:i]) for i in range(len(gaps) + 1)]
    released: list[tuple[int, int]] = []

    async def run(root: Path) -> WallClock:
        async with ReplayFeed(root, VENUE, speed=speed, pace_window=window_us / 1e6,
                              chunk_rows=piece_rows) as feed:
            assert isinstance(feed.clock, WallClock)
            async for ev in feed:
                released.append((ev.ts_recv, fake.now))
            return feed.clock

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        write_trades(Path(tmp), times)
        simulate(mp, fake, timer)
        clock = asyncio.run(run(Path(tmp)))
    check_schedule(clock, timer, times, released, latencies, tick)
    late = [at - clock.deadline(ts) for ts, at in released]
    assert list(clock.lateness.values) == late                # what the feed recorded
    if tick == 0:       # the same readings: to the ns the same wake-ups as release/sleep
        _, timer_r, released_r = pace_with_release(times, speed, window_us, latencies, 0)
        assert released == released_r and timer.waits == timer_r.waits


@settings(max_examples=200, deadline=None)
@given(since=st.lists(st.integers(-10**15, 10**15), max_size=20),
       speed=st.one_of(st.sampled_from([0.3, 1.0, 7.0, 1e-6]), st.floats(1e-3, 1e3)))
def test_a_pieces_deadlines_are_each_events_deadline(since: list[int], speed: float) -> None:
    clock = WallClock(speed)
    times = [T0 + s for s in since]
    deadlines = clock.deadlines(times)
    assert deadlines == [clock.deadline(ts) for ts in times]
    assert clock.anchored == bool(times)
    assert clock.deadlines(np.array(times, dtype=np.int64)) == deadlines   # a piece's column


def test_a_sparse_feed_is_released_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    timer = FakeTimer(fake, [0])
    simulate(monkeypatch, fake, timer)
    clock = WallClock(1.0, window=0.001)

    async def run() -> None:
        for ts in (T0, T0 + 5 * MS, T0 + 10 * MS, T0 + 10 * MS + 100_000):
            await clock.wait_until(ts)

    asyncio.run(run())
    due = [clock.deadline(t) for t in (T0 + 5 * MS, T0 + 10 * MS, T0 + 10 * MS + 100_000)]
    # 5 ms apart: nothing to share a wake-up with, so no window, the timer is armed at the
    # deadline; 0.1 ms apart: the window, and the timer's period (1 ms) already ends in it
    assert timer.asked == [due[0], due[1]]
    assert [expiry for _, _, expiry in timer.waits] == [due[0], due[1], due[1] + MS]


# -- the timerfd on a real loop ---------------------------------------------------------------

def fd_open(fd: int) -> bool:
    return os.path.exists(f"/proc/self/fd/{fd}")


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


@linux
async def test_the_timerfd_is_never_early() -> None:
    clock = WallClock(1.0)
    await clock.wait_until(T0)
    for k in range(1, 41):                       # 1.1-3 ms apart: with and without the window
        ts = T0 + k * 3 * MS - (k % 2) * 1_900_000
        await clock.wait_until(ts)
        assert time.monotonic_ns() >= clock.deadline(ts)
    timer = clock._timer
    assert timer is not None and fd_open(timer.fd) and clock.wakeups >= 1
    clock.close()
    assert not fd_open(timer.fd) and clock._timer is None


@linux
async def test_one_loop_many_clocks_each_its_own_timer() -> None:
    clocks = [WallClock(s) for s in (1.0, 2.0, 5.0)]

    async def pace(clock: WallClock) -> list[bool]:
        ok = []
        for k in range(30):
            await clock.wait_until(T0 + k * 700_000)
            ok.append(time.monotonic_ns() >= clock.deadline(T0 + k * 700_000))
        return ok

    results = await asyncio.gather(*(pace(c) for c in clocks))
    assert all(all(r) for r in results)
    fds = {c._timer.fd for c in clocks if c._timer is not None}
    assert len(fds) == 3
    for c in clocks:
        c.close()
    assert not any(fd_open(fd) for fd in fds)


async def test_two_tasks_on_one_clock_are_both_never_early() -> None:
    clock = WallClock(1.0)
    await clock.wait_until(T0)

    async def wait(ts: int) -> bool:
        await clock.wait_until(ts)
        return time.monotonic_ns() >= clock.deadline(ts)

    assert await asyncio.gather(wait(T0 + 4 * MS), wait(T0 + 6 * MS)) == [True, True]
    clock.close()


async def test_a_cancelled_wait_leaves_the_timer_usable() -> None:
    clock = WallClock(1.0)
    await clock.wait_until(T0)
    task = asyncio.ensure_future(clock.wait_until(T0 + 200 * MS))
    await asyncio.sleep(0)                      # the task arms the timer and waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.wait_until(T0 + 300 * MS)       # the cancelled wait's timer must not release it
    assert time.monotonic_ns() >= clock.deadline(T0 + 300 * MS)
    clock.close()


async def test_a_loop_without_add_reader_falls_back_to_asyncio_sleep(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    before = set(os.listdir("/proc/self/fd")) if sys.platform.startswith("linux") else set()

    def no_readers(*a: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_reader", no_readers)
    clock = WallClock(1.0)
    await clock.wait_until(T0)
    for k in range(1, 6):
        await clock.wait_until(T0 + k * 2 * MS)
        assert time.monotonic_ns() >= clock.deadline(T0 + k * 2 * MS)
    assert clock._timer is None and clock.wakeups >= 1
    if before:
        assert set(os.listdir("/proc/self/fd")) <= before    # the timerfd it tried was closed


@linux
async def test_a_timer_that_fails_to_arm_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = WallClock(1.0)
    await clock.wait_until(T0)
    await clock.wait_until(T0 + 2 * MS)
    timer = clock._timer
    assert timer is not None

    def refuse(when_ns: int, period_ns: int) -> None:
        raise OSError(22, "timerfd_settime failed")

    monkeypatch.setattr(timer, "_arm", refuse)
    ts = clock.now() + 20 * MS                  # surely not due yet: a sleep
    await clock.wait_until(ts)
    assert time.monotonic_ns() >= clock.deadline(ts)
    assert clock._timer is None and not fd_open(timer.fd)
    await clock.wait_until(ts + 3 * MS)         # and keeps pacing, on asyncio.sleep
    assert time.monotonic_ns() >= clock.deadline(ts + 3 * MS)


@linux
def test_a_clock_moves_to_a_new_loop_and_a_dropped_one_closes_its_timer() -> None:
    async def pace(clock: WallClock) -> TimerFd:
        base = clock.now() if clock.anchored else T0     # however long the last run took
        await clock.wait_until(base)
        await clock.wait_until(base + 2 * MS)              # 2 ms ahead: a sleep, on this loop
        assert clock._timer is not None and clock._timer.loop is asyncio.get_running_loop()
        return clock._timer

    clock = WallClock(1.0)
    old = asyncio.run(pace(clock))
    new = asyncio.run(pace(clock))      # a second loop: a new timer, the old one closed
    assert old is not new and not old._finalizer.alive and fd_open(new.fd)
    fd = new.fd
    del clock, new
    gc.collect()
    assert not fd_open(fd)                       # never closed by hand: closed when collected


@linux
async def test_the_feed_closes_its_clock_timer(paced: tuple[Path, list[int]]) -> None:
    root, times = paced
    async with replay.open(root, VENUE, speed=10, end=times[0] + 200 * MS) as feed:
        async for _ in feed:
            pass
        clock = feed.clock
        assert isinstance(clock, WallClock) and clock._timer is not None
        fd = clock._timer.fd
        assert fd_open(fd)
    assert clock._timer is None and not fd_open(fd)


@linux
async def test_a_dense_feed_rides_the_timer_period_and_an_idle_timer_stops() -> None:
    clock = WallClock(10.0)
    times = [T0 + k * 500_000 for k in range(2000)]     # 0.5 ms apart: 50 µs, 100 ms at 10x
    for ts in times:
        while not clock.release(ts):
            await clock.sleep()
        assert time.monotonic_ns() >= clock.deadline(ts)
    timer = clock._timer
    assert timer is not None and clock.wakeups >= 5
    # the 1 ms period ends inside the next event's window: no timerfd_settime per wake-up
    assert timer.armed < clock.wakeups, (timer.armed, clock.wakeups)
    await asyncio.sleep(0.01)                   # nobody waits: the next expiry disarms it
    assert timer._next == 0 and not timer.busy
    armed = timer.armed
    await asyncio.sleep(0.01)
    assert timer.armed == armed                 # and it stays quiet
    clock.close()


@linux
def test_the_wake_works_with_the_pure_python_task() -> None:
    async def pace() -> list[bool]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.tasks._PyTask(coro, loop=loop, **kw))

        async def run() -> list[bool]:
            clock = WallClock(1.0)
            ok = []
            for k in range(20):
                await clock.wait_until(T0 + k * 400_000)
                ok.append(time.monotonic_ns() >= clock.deadline(T0 + k * 400_000))
            task = asyncio.ensure_future(clock.wait_until(T0 + 500 * MS))
            await asyncio.sleep(0.002)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            ok.append(clock._timer is not None and not clock._timer.busy and clock.wakeups >= 1)
            clock.close()
            return ok

        return await asyncio.ensure_future(run())

    assert all(asyncio.run(pace()))


@linux
async def test_a_sleep_can_be_wrapped_in_a_task_or_a_timeout() -> None:
    clock = WallClock(1.0)
    await clock.wait_until(T0)
    ts = T0 + 3 * MS
    assert not clock.release(ts)
    await asyncio.wait_for(clock.sleep(), 1.0)          # a plain awaitable, not a future
    while not clock.release(ts):
        await asyncio.ensure_future(clock.sleep())
    assert time.monotonic_ns() >= clock.deadline(ts) and clock._timer is not None
    clock.close()


async def test_a_feed_cancelled_while_it_sleeps_keeps_the_event_next(tmp_path: Path) -> None:
    """A timeout around ``anext(feed)`` cancels the sleep: the event is not lost, the
    next ``anext`` and ``async for`` go on from it, its lateness counted once."""
    times = [T0, T0 + MS, T0 + 300 * MS, T0 + 301 * MS]
    write_trades(tmp_path, times)
    async with ReplayFeed(tmp_path, VENUE, speed=1.0) as feed:
        got = [await anext(feed), await anext(feed)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(feed), 0.05)       # the third is 300 ms away
        assert feed.count == 2 and feed.behind_ns == 0
        got.append(await anext(feed))
        got += [ev async for ev in feed]
        late = feed.lateness
    assert [ev.ts_recv for ev in got] == times and feed.count == 4
    assert late is not None and late.count == 4


async def test_a_paced_piece_is_made_in_cuts_in_order_whether_kept_or_dropped(
        tmp_path: Path) -> None:
    """A piece longer than ``RECORD_ROWS`` is made cut after cut (``Piece.split``):
    every event once, in order, each with its lateness, kept or dropped."""
    times = [T0 + i * 1_000 for i in range(2 * RECORD_ROWS + 300)]   # 1 µs apart
    write_trades(tmp_path, times)
    for keep in (False, True):
        kept: list[Any] = []
        seen: list[int] = []
        async with ReplayFeed(tmp_path, VENUE, speed=1.0) as feed:
            async for ev in feed:
                seen.append(ev.ts_recv)
                if keep:
                    kept.append(ev)
            late = feed.lateness
        assert seen == times and late is not None and late.count == len(times)
        assert [ev.ts_recv for ev in kept] == (times if keep else [])


async def test_a_paced_feed_takes_the_next_piece_while_it_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces read in time are taken, their deadlines worked out, while the feed waits
    for an event (not when the piece boundary is due): the same events, in order."""
    times = [T0 + i * 20 * MS for i in range(12)]                # 20 ms apart
    write_trades(tmp_path, times)
    taken: list[int] = []
    look_ahead = ReplayFeed._look_ahead

    def spy(feed: ReplayFeed, clock: WallClock) -> None:
        look_ahead(feed, clock)
        if feed._ahead is not None:
            taken.append(feed.count)
    monkeypatch.setattr(ReplayFeed, "_look_ahead", spy)
    async with ReplayFeed(tmp_path, VENUE, speed=4.0, chunk_rows=3) as feed:
        got = [ev.ts_recv async for ev in feed]
        late = feed.lateness
    assert got == times and late is not None and late.count == len(times)
    assert taken and all(0 < n < len(times) for n in taken)   # ahead, during the replay
