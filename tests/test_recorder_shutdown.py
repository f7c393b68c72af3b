"""Stopping a recorder while a periodic publish is still running in its worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recorder.capture import Capture
from recorder.live import Recorder
from replay.sim.server import Simulator, make_adapter
from storage.journal import read_journal
from tests.helpers import read_table, until

SYMBOLS = ["NSE|22", "NFO|35003"]


async def test_stop_waits_for_the_publish_in_flight(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread cannot be cancelled: before the fix the run ended (and close() published
    # concurrently, racing the checkpoint file) while this publish was still going.
    real = Capture.publish
    entered = threading.Event()

    def slow_publish(self: Capture, batch: Any) -> list[Path]:
        if batch.rows:
            entered.set()
            time.sleep(0.4)
        return real(self, batch)

    monkeypatch.setattr(Capture, "publish", slow_publish)
    sim = Simulator(make_adapter("noren"), SYMBOLS, rate=300, seed=2)
    await sim.start()
    try:
        rec = Recorder("noren", sim.url, SYMBOLS, tmp_path, flush_seconds=0.3,
                       reconnect_min=0.2)
        task = asyncio.create_task(rec.run())
        # enough frames that the final publish has rows to race with (a count, not a
        # time: a loaded machine gets fewer frames into any fixed time)
        await until(lambda: rec.capture is not None and rec.capture.frames_in > 100, 20,
                    "100 frames in")
        entered.clear()
        assert await asyncio.to_thread(entered.wait, 10)    # a periodic publish is running
        rec.stop()
        await asyncio.wait_for(task, 20)
    finally:
        await sim.stop()
    [run_dir] = [p for p in (tmp_path / "journal" / "noren").iterdir() if p.is_dir()]
    journaled, damage = read_journal(run_dir)
    assert not damage
    raw = read_table(tmp_path, "raw")
    assert len(raw) == len(journaled) > 100
    assert not list(tmp_path.rglob(".*.tmp"))
