"""Pacing: how late each event is released at 1x and 10x, and what it costs in CPU.

Feeds 10,000 events at 1x and 100,000 at 10x (3 s of each), spaced like a busy
feed (0.1 to 0.5 ms apart), through the replay clock exactly as ``ReplayFeed``
does (``WallClock.deadlines`` for a piece of ``PIECE_ROWS``, then one reading per
event and ``pause`` when one is not yet due), in the default mode and in the
precise mode (spins the last stretch of each wait). Lateness is measured
against the monotonic clock as the feed does; CPU is process time over wall
time; ``wakeups`` counts the sleeps the clock took and ``blocks`` the times the
process really blocked (voluntary context switches, ``getrusage``): what the
default mode's CPU is mostly made of, see docs/benchmarks.md, "Pacing".

Beside each default-mode run, the same run measures what a wake-up costs at the
least on this machine: ``bare_us``, a plain ``time.sleep(0.001)`` loop (no event
loop: the kernel's and the interpreter's share), and ``loop_us``, an asyncio
loop waking every 1 ms to run a callback that does nothing but re-schedule
itself (the least anything paced inside asyncio pays). ``wake_us`` is ours: all
the process time of the run (its events included) over its blocking wake-ups.

``limit_cpu`` is the machine's limit for the same schedule: the least a feed
consumed with ``async for`` pays to release the same events on the same grid (one
wake-up per window, so the same lateness). Its deadlines are computed before it
starts, and one task loops over them: one monotonic reading and one lateness
``append`` per event, and when the next is not due it sleeps on the same timerfd
wake-up as the clock's (``TimerFd.wake``, which resumes the task inside the
loop's reader callback: the cheapest resumption we know). It has no clock
object, no per-event call and no window logic. ``floor_cpu`` is the same
schedule with no task at all: the reader callback releases the events itself.
What a task's resumption costs is the gap between the two.

``python -m benchmarks.pacing --compare REV`` runs the clock of git revision
``REV`` (its ``replay/clock.py`` and ``replay/timer.py``) and this one in
interleaved rounds through the same events and prints the medians.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from array import array
from pathlib import Path
from typing import Any, Self

import numpy as np

from replay.clock import WINDOW_S, WallClock
from replay.feed import PIECE_ROWS, ReplayFeed
from replay.timer import NS, TimerFd
from storage.atomic import write_parquet
from storage.layout import partition_dir
from storage.writer import to_arrow

FLOOR_WAKES = 1000
DAY0 = 1_767_225_600 * NS              # 2026-01-01T00:00Z: where feed_pace's trades start


def steal_s() -> float:
    """CPU seconds the hypervisor has taken from this VM since boot, over all its CPUs
    (``/proc/stat``'s steal column); 0.0 where there is no such count."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _times(n: int) -> list[int]:
    rng = random.Random(5)
    ts, times = 0, []
    for _ in range(n):
        ts += rng.randint(100_000, 500_000)          # 0.1-0.5 ms apart
        times.append(ts)
    return times


class _Usage:
    """Process CPU time, wall time and blocking waits (voluntary context switches) of
    the ``with`` block: ``cpu``, ``wall``, ``blocks`` once it has ended."""

    def __enter__(self) -> Self:
        self.blocks = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall
        self.blocks = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - self.blocks


def _feed_times(clock: Any, times: list[int]) -> Any:
    """``times`` as the feed holds them for ``clock``: an int64 array (a piece's
    ``ts_recv`` column) where the feed computes deadlines, else Python ints."""
    return np.asarray(times, dtype=np.int64) if hasattr(clock, "deadlines") else times


async def _drive(clock: Any, times: Any, deadline_ns: list[float] | None = None) -> None:
    """As ``ReplayFeed._paced`` does: a piece's deadlines in one step (from
    ``_feed_times``; the next piece's while it waits for an event), then one clock
    reading and one lateness append per event, ``pause`` when it is not due. A clock of
    an older revision as that revision's feed did (session 8's computed each piece's
    deadlines at its first event). ``deadline_ns`` gets each ``deadlines`` call's
    thread CPU ns per event."""
    if not hasattr(clock, "deadlines"):
        await _drive_by_release(clock, times)
        return
    mono, cpu = time.monotonic_ns, time.thread_time_ns

    def deadlines_from(start: int) -> list[int]:
        began = cpu() if deadline_ns is not None else 0
        dues: list[int] = clock.deadlines(times[start:start + PIECE_ROWS])
        if deadline_ns is not None:
            deadline_ns.append((cpu() - began) / len(dues))
        return dues

    late = clock.lateness
    append = late.values.append
    prev_due = 0
    ahead: list[int] | None = None
    for start in range(0, len(times), PIECE_ROWS):
        dues, ahead = ahead or deadlines_from(start), None
        following = start + PIECE_ROWS
        late.make_room(len(dues))
        for i in range(len(dues)):
            due = dues[i]
            now = mono()
            if now < due:
                prev = dues[i - 1] if i else prev_due
                if ahead is None and following < len(times):
                    ahead = deadlines_from(following)
                while now < due:
                    await clock.pause(due, prev)
                    now = mono()
            append(now - due)
        prev_due = dues[-1]


async def _drive_by_release(clock: Any, times: list[int]) -> None:
    """Sessions 6-7's feed: ``release`` per event; before that, ``wait_until``."""
    if not hasattr(clock, "release"):
        for t in times:
            await clock.wait_until(t)
        return
    for t in times:
        while not clock.release(t):
            await clock.sleep()


async def _pace(speed: float, precise: bool, n: int, clock_type: Any = WallClock,
                **clock_args: Any) -> dict[str, Any]:
    clock = clock_type(speed, precise=precise, **clock_args)
    times = _feed_times(clock, _times(n))
    with _Usage() as used:
        await _drive(clock, times)
    if hasattr(clock, "close"):
        clock.close()
    s = clock.lateness.summary()
    return {"speed": speed, "precise": precise, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
            "max_ms": s["max_ms"], "cpu": used.cpu / used.wall, "seconds": used.wall,
            "wakeups": clock.wakeups, "blocks": used.blocks,
            "wake_us": used.cpu / max(used.blocks, 1) * 1e6}


async def feed_pace(speed: float, n: int) -> dict[str, Any]:
    """The same events as trades in a store, replayed with ``ReplayFeed`` at ``speed``
    by a loop that drops them: what a whole paced replay costs (its reading thread,
    its records and its pacing; CPU share as ``_pace``), and its p99 lateness."""
    times = [DAY0 + t for t in _times(n)]
    rows = [("BTCUSDT", t, None, None, "s", i, 0, 100.0, 1.0, None, "buy", None, None)
            for i, t in enumerate(times)]
    with tempfile.TemporaryDirectory() as root:
        write_parquet(to_arrow("trades", rows),
                      partition_dir(Path(root), "trades", "alltick", "2026-01-01") / "a.parquet")
        async with ReplayFeed(root, "alltick", speed=speed) as feed:
            with _Usage() as used:
                async for _ in feed:
                    pass
            late = feed.lateness
    assert late is not None and late.count == n
    return {"cpu": used.cpu / used.wall, "p99_ms": late.p99_ns / 1e6}


def _deadlines(speed: float, n: int, start: int) -> list[int]:
    times = _times(n)
    return [start + int((t - times[0]) / speed) for t in times]


async def limit_pace(speed: float, n: int, window: float = WINDOW_S) -> dict[str, Any]:
    """The machine's limit for the same schedule as a feed (module doc): a task woken
    once per ``window`` releases every event then due. CPU share, p99 lateness."""
    timer = TimerFd.open(asyncio.get_running_loop())
    assert timer is not None, "the pacing limit needs a Linux timerfd"
    period = int(window * NS)
    mono = time.monotonic_ns
    deadlines = _deadlines(speed, n, mono() + 2_000_000)
    late = array("q")
    try:
        with _Usage() as used:
            for due in deadlines:
                now = mono()
                while now < due:
                    await timer.wake(due, due + period, period)
                    now = mono()
                late.append(now - due)
    finally:
        timer.close()
    return {"cpu": used.cpu / used.wall, "p99_ms": sorted(late)[round(0.99 * (n - 1))] / 1e6,
            "blocks": used.blocks, "seconds": used.wall}


async def loop_floor_pace(speed: float, n: int, window: float = WINDOW_S) -> float:
    """CPU share of the same schedule with no task at all: the loop's reader callback,
    on a timer expiring every ``window``, releases the due events itself."""
    loop = asyncio.get_running_loop()
    timer = TimerFd.open(loop)
    assert timer is not None, "the pacing floor needs a Linux timerfd"
    done = loop.create_future()
    period = int(window * NS)
    mono = time.monotonic_ns
    start = mono() + 2_000_000
    deadlines = _deadlines(speed, n, start)
    late = array("q")
    fd = timer.fd
    taken = 0

    def on_expiry() -> None:
        nonlocal taken
        os.read(fd, 8)
        i = taken
        while i < n:
            now = mono()
            due = deadlines[i]
            if now < due:
                break
            late.append(now - due)
            i += 1
        taken = i
        if i == n and not done.done():
            done.set_result(None)

    loop.remove_reader(fd)                  # the timer's own callback would wake a task
    loop.add_reader(fd, on_expiry)
    try:
        with _Usage() as used:
            timer._arm(start + period, period)
            await done
    finally:
        timer.close()                       # unregisters the fd, whoever reads it
    return used.cpu / used.wall


def bare_sleep_us(wakes: int = FLOOR_WAKES, period: float = 0.001) -> float:
    """Process time per wake-up of a plain ``time.sleep(period)`` loop (µs)."""
    cpu0 = time.process_time()
    for _ in range(wakes):
        time.sleep(period)
    return (time.process_time() - cpu0) / wakes * 1e6


async def loop_pass_us(wakes: int = FLOOR_WAKES, period: float = 0.001) -> float:
    """Process time per wake-up of an asyncio loop running one callback every ``period``
    (it re-schedules itself with ``call_later`` and does nothing else), in µs."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = [wakes]

    def tick() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_later(period, tick)
        else:
            done.set_result(None)

    cpu0 = time.process_time()
    loop.call_later(period, tick)
    await done
    return (time.process_time() - cpu0) / wakes * 1e6


def run(n: int = 10_000, clock_type: Any = WallClock, rounds: int = 5) -> list[dict[str, Any]]:
    """Default and precise mode at 1x and 10x; ``clock_type`` to compare another clock.
    Each speed replays ``n`` × speed events (the same seconds of wall time at both).
    The default mode runs ``rounds`` times, interleaved with the floors and limits of
    the module doc, and reports each figure's median over the rounds; its results also
    hold ``bare_us``, ``loop_us``, ``limit_cpu``, ``limit_p99_ms``, ``floor_cpu`` and
    ``steal``: the share of the machine's CPU time the host took during those rounds;
    ``feed_cpu`` and ``feed_p99_ms`` are one whole replay of the same events
    (``feed_pace``) after them."""
    results = []
    for speed in (1.0, 10.0):
        events = n * max(1, int(speed))
        runs: list[dict[str, Any]] = []
        stolen_s, began = steal_s(), time.perf_counter()
        for _ in range(rounds):
            p = asyncio.run(_pace(speed, False, events, clock_type))
            p["bare_us"] = bare_sleep_us()
            p["loop_us"] = asyncio.run(loop_pass_us())
            limit = asyncio.run(limit_pace(speed, events))
            p["limit_cpu"], p["limit_p99_ms"] = limit["cpu"], limit["p99_ms"]
            p["floor_cpu"] = asyncio.run(loop_floor_pace(speed, events))
            runs.append(p)
        steal = (steal_s() - stolen_s) / ((time.perf_counter() - began) * (os.cpu_count() or 1))
        whole = asyncio.run(feed_pace(speed, events))
        results.append({key: statistics.median(r[key] for r in runs)
                        if isinstance(runs[0][key], (int, float)) and key != "precise"
                        else runs[0][key] for key in runs[0]}
                       | {"steal": steal, "feed_cpu": whole["cpu"], "feed_p99_ms": whole["p99_ms"]})
        results.append(asyncio.run(_pace(speed, True, events, clock_type)))
    return results


def _clock_at(rev: str) -> Any:
    """``WallClock`` of git revision ``rev`` (its clock and timer modules, loaded apart)."""
    def load(name: str, path: str, *replace: tuple[str, str]) -> types.ModuleType:
        src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True,
                             check=True).stdout
        for old, new in replace:
            src = src.replace(old, new)
        module = sys.modules[name] = types.ModuleType(name)
        exec(compile(src, f"{rev}:{path}", "exec"), module.__dict__)      # noqa: S102
        return module

    load("_rev_timer", "replay/timer.py")
    clock = load("_rev_clock", "replay/clock.py",
                 ("from replay.timer import", "from _rev_timer import"))
    return clock.WallClock


def compare(rev: str, rounds: int = 4, n: int = 10_000, speeds: tuple[float, ...] = (1.0, 10.0),
            windows: tuple[float, ...] = (0.001,)) -> None:
    """Default mode, ``rev``'s clock and this one, interleaved rounds; prints medians."""
    clocks = {rev: _clock_at(rev), "this": WallClock}
    runs: dict[tuple[float, str, float], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for speed in speeds:
            for window in windows:
                for name, clock_type in clocks.items():
                    p = asyncio.run(_pace(speed, False, n, clock_type, window=window))
                    runs.setdefault((speed, name, window), []).append(p)
            bare, loop = bare_sleep_us(), asyncio.run(loop_pass_us())
            runs.setdefault((speed, "floor", 0), []).append({"bare_us": bare, "loop_us": loop})
    print(f"{rounds} rounds of {n:,} events, medians (ranges)")
    for (speed, name, window), ps in runs.items():
        def med(key: str, ps: list[dict[str, Any]] = ps) -> str:
            values = sorted(p[key] for p in ps)
            return f"{statistics.median(values):.3f} ({values[0]:.3f}-{values[-1]:.3f})"
        if name == "floor":
            print(f"{speed:4g}x floor: bare sleep loop {med('bare_us')} µs/wake-up, "
                  f"asyncio loop pass {med('loop_us')} µs/wake-up")
            continue
        print(f"{speed:4g}x {name:>10s} window {window * 1e3:.2f} ms: p50 {med('p50_ms')} "
              f"p99 {med('p99_ms')} ms, CPU {med('cpu')}, blocks/s "
              f"{statistics.median(p['blocks'] / p['seconds'] for p in ps):.0f}, "
              f"{med('wake_us')} µs/wake-up")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=compare.__doc__)
    parser.add_argument("--compare", metavar="REV", required=True, help="git revision")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--speeds", default="1,10", help="comma-separated")
    parser.add_argument("--windows", default="1", help="ms, comma-separated")
    a = parser.parse_args()
    compare(a.compare, a.rounds, a.events, tuple(float(s) for s in a.speeds.split(",")),
            tuple(float(w) / 1e3 for w in a.windows.split(",")))
