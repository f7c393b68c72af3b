"""Disk full: the recorder says so once, stops reading (back-pressure), keeps everything it
has, resumes when space returns, and the pause is a ``stale`` gap in the store."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import storage.journal
import storage.writer
from schemas.events import Status
from storage.journal import read_journal
from storage.writer import StoreWriter
from tests.faults.support import running, scaled, wait_for
from tests.helpers import read_table
from tickrec.verify import verify

pytestmark = pytest.mark.timeout(scaled(60, 1800))
SYMBOLS = ["AAPL.US", "700.HK"]


class Disk:
    """A switchable ENOSPC for the journal's ``os.write`` and the Parquet temp write."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, journal: bool, parquet: bool) -> None:
        self.full = threading.Event()
        self.refused = 0
        real_write = os.write
        # the journal's segments, and the Parquet temps a publish writes
        suffixes = (".tjr",) * journal + (".tmp",) * parquet

        def write(fd: int, data: Any) -> int:
            if self.full.is_set() and os.readlink(f"/proc/self/fd/{fd}").endswith(suffixes):
                self.refused += 1
                if len(data) > 64 and self.refused % 2:     # a short write first, as a real
                    return real_write(fd, bytes(data[:64]))  # disk filling up mid-block does
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(storage.journal.os, "write", write)


def _check_store(root: Path, sim: Any, pause: tuple[int, int], cleared: tuple[int, int]) -> None:
    """Everything the simulator delivered is stored once; the pause is a stale gap per symbol
    from the moment the store failed (``pause``: the disk filled, the recorder noticed) to the
    moment it was writable again (``cleared``: the disk freed, the test saw the recorder
    resume); the journal holds no damaged range; the store verifies (rows re-derive from raw)."""
    rows = read_table(root, "trades") + read_table(root, "book")
    per_symbol = Counter(r["symbol"] for r in rows)
    for sym in SYMBOLS:
        assert per_symbol[sym] == sim.stats[sym].delivered > 0, sym
    raw = read_table(root, "raw")
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw)
    [run_dir] = [p for p in (root / "journal" / "alltick").iterdir() if p.is_dir()]
    journaled, damage = read_journal(run_dir)
    assert not damage, damage
    assert len(journaled) == len(raw)
    stale = [g for g in read_table(root, "gaps") if g["kind"] == "stale"]
    assert sorted(g["symbol"] for g in stale) == sorted(SYMBOLS)
    for g in stale:
        assert "disk full" in g["detail"] and "stopped reading" in g["detail"]
        # the recorder's own times, bracketed by the test's: no bound on how late a loaded
        # machine lets either side notice
        assert pause[0] <= g["ts_start"] == pause[1]
        assert cleared[0] <= g["ts_end"] <= cleared[1]
    assert not list(root.rglob("*.tmp"))
    report = verify(root)
    assert report.ok, report.problems


@pytest.mark.parametrize("where", ["journal", "parquet"])
async def test_disk_full_pauses_reading_loses_nothing_and_is_a_gap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        where: str) -> None:
    caplog.set_level(logging.INFO, logger="tickrec")
    disk = Disk(monkeypatch, journal=where == "journal", parquet=where == "parquet")
    async with running(tmp_path, SYMBOLS, rate=300, steps=1100, flush_seconds=0.3) as run:
        cap = await _capture(run)
        assert await wait_for(lambda: cap.frames_in > 200, 10)
        filled = cap.clock.now()
        disk.full.set()
        assert await wait_for(lambda: cap.blocked is not None, 20)
        since = cap.blocked_since
        await wait_for(lambda: False, 0.4)
        frames_paused = cap.frames_in
        await wait_for(lambda: False, 1.6)
        # not reading: the venue's frames wait in its socket, not in our memory
        assert cap.frames_in == frames_paused
        assert not run.rec._writable.is_set()
        freed = cap.clock.now()
        disk.full.clear()
        assert await wait_for(lambda: cap.blocked is None, 20)
        until = cap.clock.now()
        await wait_for(run.sim.done.is_set, 20)
    assert disk.refused >= 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "disk full" in errors[0].getMessage()
    assert "stopped reading" in errors[0].getMessage()
    said = [e for e in run.events if isinstance(e, Status) and "disk full" in e.detail]
    assert [s.kind for s in said] == ["error"]
    assert any(isinstance(e, Status) and e.kind == "resumed" for e in run.events)
    assert run.rec.connections == 1            # the pause cost no connection
    assert since is not None
    _check_store(tmp_path, run.sim, (filled, since), (freed, until))


async def _capture(run: Any) -> Any:
    assert await wait_for(lambda: run.rec.capture is not None, 5)
    return run.rec.capture


def test_a_publish_cut_after_its_intent_is_finished_not_repeated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on the checkpoint after the renames: the rows are published once, the next
    publish completes the checkpoint first; before the intent, the batch comes back."""
    from tests.test_writer import DAY0, read_trades, trade
    w = StoreWriter(tmp_path, "alltick", "run1", tmp_path / "journal" / "run1")
    real = storage.writer.write_json
    calls = {"n": 0, "fail_at": 2}

    def write_json(path: Path, obj: Any) -> None:
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(storage.writer, "write_json", write_json)
    w.add_event(trade(DAY0 + 1, 0))
    w.mark(1)
    batch = w.take()
    with pytest.raises(OSError):
        w.publish(batch)               # call 1: intent ok, renamed; call 2: final checkpoint
    assert batch.intent and len(read_trades(tmp_path)) == 1
    w.add_event(trade(DAY0 + 2, 1))
    w.mark(2)
    w.publish(w.take())
    assert [r["frame"] for r in read_trades(tmp_path)] == [0, 1]
    state = json.loads((tmp_path / "journal" / "run1" / "checkpoint.json").read_text())
    assert state["records"] == 2 and "intent" not in state

    calls.update(n=0, fail_at=1)       # now the intent itself cannot be written
    w.add_event(trade(DAY0 + 3, 2))
    w.mark(3)
    batch = w.take()
    with pytest.raises(OSError):
        w.publish(batch)
    assert not batch.intent and not list(tmp_path.rglob("*.tmp"))
    w.restore(batch)
    w.add_event(trade(DAY0 + 4, 3))
    w.mark(4)
    w.publish(w.take())
    assert [r["frame"] for r in read_trades(tmp_path)] == [0, 1, 2, 3]
