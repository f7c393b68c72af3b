"""Clock trouble: the wall clock stepping backwards during a capture, and between two runs
of a feed. ``ts_recv`` comes from ``RecvClock``: the wall clock read once, then only the
monotonic clock, so the store keeps arrival order and replay is unaffected."""

from __future__ import annotations

import logging
import time
from itertools import pairwise
from pathlib import Path

import pytest

import replay
from recorder.capture import RecvClock
from tests.faults.support import running, scaled, wait_for
from tests.helpers import read_table
from tickrec.verify import verify

pytestmark = pytest.mark.timeout(scaled(60, 1800))
NS = 1_000_000_000
HOUR = 3600 * NS


def test_recv_clock_follows_the_monotonic_clock_not_the_wall_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    wall, mono = [1_767_225_600 * NS], [5 * NS]
    monkeypatch.setattr(time, "time_ns", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic_ns", lambda: mono[0])
    clock = RecvClock()
    assert clock.now() == wall[0]
    mono[0] += 1_000
    wall[0] -= HOUR                         # NTP steps the wall clock back an hour
    assert clock.now() == 1_767_225_600 * NS + 1_000
    wall[0] += 7 * HOUR                     # ... and forwards: still ignored
    mono[0] += 2_000
    assert clock.now() == 1_767_225_600 * NS + 3_000
    before = clock.now()                    # the monotonic clock did not move: +1 ns
    assert clock.now() == before + 1        # strictly increasing, always


def test_a_run_starting_after_the_clock_stepped_back_continues_from_the_last_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = RecvClock(floor=time.time_ns() + HOUR)      # the previous run ended "later"
    assert clock.held_back_ns >= HOUR - NS
    first = clock.now()
    assert first > time.time_ns() + HOUR - NS and clock.now() > first


async def test_the_wall_clock_stepping_back_mid_capture_and_between_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickrec")
    real = time.time_ns
    async with running(tmp_path, ["AAPL.US", "700.HK"], rate=300, steps=450) as run:
        assert await wait_for(lambda: run.rec.capture is not None
                              and run.rec.capture.frames_in > 150, 10)
        stepped_at = run.rec.capture.clock.last
        monkeypatch.setattr(time, "time_ns", lambda: real() - HOUR)    # mid-capture
        await wait_for(run.sim.done.is_set, 15)
    first_run = read_table(tmp_path, "raw")
    # journal order is receive order: ts_recv strictly increases with the frames
    for session in {r["session"] for r in first_run}:
        mine = sorted((r["frame"], r["ts_recv"]) for r in first_run if r["session"] == session)
        assert all(a[1] < b[1] for a, b in pairwise(mine))
    after = [r for r in first_run if r["ts_recv"] > stepped_at]
    assert len(after) > 100 and all(abs(r["ts_recv"] - real()) < 60 * NS for r in after)
    trades = read_table(tmp_path, "trades")         # the venue's own times did step back
    assert min(t["ts_event"] for t in trades) < stepped_at - HOUR / 2

    # a second run with the clock still an hour behind continues after the first
    async with running(tmp_path, ["AAPL.US", "700.HK"], rate=300, steps=300) as run2:
        await wait_for(run2.sim.done.is_set, 15)
    assert any("behind the feed's last receive time" in r.getMessage() for r in caplog.records)
    raw = read_table(tmp_path, "raw")
    end_of_first = max(r["ts_recv"] for r in first_run)
    second = [r for r in raw if r["ts_recv"] > end_of_first]
    assert len(second) == len(raw) - len(first_run) > 100
    # the outage between the runs is a disconnect gap of positive length
    disc = [g for g in read_table(tmp_path, "gaps") if g["kind"] == "disconnect"]
    assert disc and all(g["ts_end"] > g["ts_start"] for g in disc)
    report = verify(tmp_path)
    assert report.ok, report.problems
    # replay order is receive order, whatever the wall clock did
    async with replay.open(tmp_path, "alltick", speed="max", kind="raw") as feed:
        replayed = [(r.session, r.frame) async for r in feed]
    by_arrival = [(r["session"], r["frame"]) for r in sorted(raw, key=lambda r: r["ts_recv"])]
    assert replayed == by_arrival
