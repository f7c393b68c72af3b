"""Flood and slow consumers: a venue that sends faster than the store can write, a live
consumer and a replay consumer slower than the feed. Memory stays bounded (the queues are),
nothing is dropped (back-pressure instead), and a late replay says by how much."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import replay
from recorder.capture import Capture
from recorder.live import Recorder
from tests.faults.support import SOAK, scaled, tiny_store, wait_for
from tests.helpers import LoopLag, read_table

pytestmark = pytest.mark.timeout(scaled(90, 1800))
MS = 1_000_000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def blast_server(n: int) -> Iterator[str]:
    """``benchmarks.blast`` in its own process, sending ``n`` frames to the first client
    as fast as the socket takes them; yields its URL and stops it on the way out."""
    blast = subprocess.Popen([sys.executable, "-m", "benchmarks.blast", str(n)],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert blast.stdout is not None
        yield blast.stdout.readline().strip()
    finally:
        blast.terminate()
        blast.wait(10)
        if blast.stdout is not None:
            blast.stdout.close()


async def test_a_flood_faster_than_the_store_is_held_back_not_buffered_or_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A separate process sends frames as fast as the socket takes them; each Parquet
    publish takes an extra 0.2 s. The rows waiting for Parquet never pass the cap (twice
    ``flush_rows``), the journal buffer never passes its flush threshold by much, the
    process does not grow with the flood, and every frame sent is stored, no gap."""
    n = 200_000 if SOAK else 10_000
    flush_rows = 2_000
    real = Capture.publish

    def slow_publish(self: Capture, batch: Any) -> Any:
        time.sleep(0.2)
        return real(self, batch)

    monkeypatch.setattr(Capture, "publish", slow_publish)
    with blast_server(n) as url:
        rec = Recorder("alltick", url, ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"], tmp_path,
                       flush_rows=flush_rows, flush_seconds=3600, reconnect_min=0.2)
        task = asyncio.create_task(rec.run())
        peak = {"rows": 0, "journal": 0, "rss": 0}
        rss0 = rss_bytes()

        async def sample() -> None:
            while True:
                cap = rec.capture
                if cap is not None:
                    peak["rows"] = max(peak["rows"], cap.writer.buffered)
                    peak["journal"] = max(peak["journal"], cap.journal.buffered)
                    peak["rss"] = max(peak["rss"], rss_bytes() - rss0)
                await asyncio.sleep(0.002)

        sampler = asyncio.create_task(sample())
        try:
            assert await wait_for(lambda: rec.capture is not None
                                  and rec.capture.frames_in >= n + 1, 60)
        finally:
            sampler.cancel()
            rec.stop()
            await asyncio.wait_for(task, 30)
    assert rec.max_buffered_rows == 2 * flush_rows
    assert peak["rows"] <= rec.max_buffered_rows + 8, peak     # a frame adds a few rows
    assert peak["journal"] <= 2048 + 64, peak
    assert peak["rss"] < 150 << 20, peak                      # not the 15k frames in memory
    raw = [r for r in read_table(tmp_path, "raw") if r["direction"] == "in"]
    assert len(raw) == n + 1                                  # the ack and every frame
    rows = read_table(tmp_path, "trades") + read_table(tmp_path, "book")
    assert len(rows) == n
    assert read_table(tmp_path, "gaps") == []                 # nothing shed, nothing lost
    assert rec.connections == 1


async def test_a_slow_live_consumer_slows_the_reading_and_misses_nothing(tmp_path: Path) -> None:
    from recorder import connect
    from replay.sim.server import Simulator, make_adapter
    maxsize, got, peak = 32, [], 0
    async with (
        Simulator(make_adapter("alltick"), ["AAPL.US", "700.HK"], rate=400) as sim,
        connect("alltick", url=sim.url, symbols=["AAPL.US", "700.HK"],
                root=tmp_path / "live", maxsize=maxsize, flush_seconds=1.0) as feed,
    ):
        async for ev in feed:
            got.append(ev)
            peak = max(peak, feed._queue.qsize())
            await asyncio.sleep(0.005)              # slower than 400 frames/s
            if len(got) >= 150:
                break
    assert peak <= maxsize
    stored = sorted(read_table(tmp_path / "live", "trades") + read_table(tmp_path / "live", "book")
                    + read_table(tmp_path / "live", "gaps"),
                    key=lambda r: (r["ts_recv"], r["session"], r["frame"], r["pos"]))
    keys = [(e.session, e.frame, e.pos) for e in got]
    # what the consumer got is the store's first rows, in order: none skipped
    assert keys == [(r["session"], r["frame"], r["pos"]) for r in stored[:len(got)]]


def _spaced_store(root: Path, n: int, spacing_ns: int) -> Path:
    """``tiny_store`` with receive times exactly ``spacing_ns`` apart."""
    times = iter(range(1_767_225_600_000_000_000, 1 << 62, spacing_ns))

    class Clock:
        last = 0
        held_back_ns = 0

        def now(self) -> int:
            self.last = next(times)
            return self.last

    real_init = Capture.__init__

    def init(self: Capture, *a: Any, **kw: Any) -> None:
        real_init(self, *a, **kw)
        self.clock = Clock()  # type: ignore[assignment]

    Capture.__init__ = init  # type: ignore[method-assign]
    try:
        return tiny_store(root, n=n)
    finally:
        Capture.__init__ = real_init  # type: ignore[method-assign]


async def test_a_slow_replay_consumer_falls_behind_and_the_feed_says_by_how_much(
        tmp_path: Path) -> None:
    root = _spaced_store(tmp_path / "store", 60, 10 * MS)        # 10 ms apart
    async with LoopLag() as lag, replay.open(root, "alltick", speed=1, tables="trades") as feed:
        got, behind = [], []
        async for ev in feed:
            got.append(ev)
            await asyncio.sleep(0.030)                          # 3x slower than the pace
            behind.append(feed.behind_ns)
        lateness = feed.lateness
    assert len(got) == 60 and [e.frame for e in got] == sorted(e.frame for e in got)
    # behind by ~20 ms more per event: half-way ~0.6 s, at the end ~1.2 s
    assert 0.3e9 < behind[30] < 1.2e9 + lag.total * 1e9, (behind[30], lag.total)
    assert behind[-1] > behind[30] > behind[5]
    assert lateness is not None and lateness.max_ns > 0.8e9
    async with LoopLag() as lag, replay.open(root, "alltick", speed=1,     # keeping up
                                             tables="trades") as feed:
        async for ev in feed:
            assert feed.behind_ns < 60 * MS + lag.max * 1e9, (feed.behind_ns, lag.max)
    async with replay.open(root, "alltick", speed="max") as feed:
        async for ev in feed:
            assert feed.behind_ns == 0 and feed.lateness is None
