"""kill -9 during a high-rate capture: every frame that reached the journal ends in the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from storage.journal import read_journal
from tests.helpers import child_env, poll_until, read_table, reap, wait_journaled

pytestmark = pytest.mark.slow


def tickrec(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tickrec", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def test_sigkill_mid_capture_loses_nothing_that_reached_the_journal(tmp_path: Path) -> None:
    sim = tickrec("sim", "alltick", "--rate", "4000", "--symbols", "AAPL.US,700.HK", "--seed", "5")
    recorders: list[subprocess.Popen[str]] = []
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:")
        root = str(tmp_path)
        first = tickrec("record", "alltick", "--url", url, "--symbols", "AAPL.US,700.HK",
                        "--root", root, "--flush-seconds", "0.7")
        recorders.append(first)
        # a busy capture, not an idle one: killed once its journal holds 2,000 records, both
        # streams flow (trade pushes follow the depth ones by AllTick's 1 s request
        # interval) and it has published raw rows; starting takes seconds under load
        run_dir = wait_journaled(
            tmp_path / "journal" / "alltick", lambda records: (
                len(records) > 2000 and any(b'"cmd_id":22998' in r.payload for r in records)
                and any((tmp_path / "raw").rglob("*.parquet"))), proc=first)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        assert [p for p in (tmp_path / "journal" / "alltick").iterdir() if p.is_dir()] == [run_dir]
        journaled, _ = read_journal(run_dir)
        assert len(journaled) > 2000
        assert not (run_dir / "done").exists()

        # the next run recovers the killed one and records until the outage is stored as
        # a gap of each symbol (its first frames of each stream after the reconnect)
        second = tickrec("record", "alltick", "--url", url, "--symbols", "AAPL.US,700.HK",
                         "--root", root, "--flush-seconds", "0.7")
        recorders.append(second)
        poll_until(lambda: any((tmp_path / "gaps").rglob("*.parquet")) and {
            g["symbol"] for g in read_table(tmp_path, "gaps") if g["kind"] == "disconnect"
        } == {"AAPL.US", "700.HK"}, 60, "disconnect gaps of both symbols", second)
        second.send_signal(signal.SIGTERM)
        _out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert "recovered run" in err
    finally:
        reap(recorders)
        sim.send_signal(signal.SIGTERM)
        sim.communicate(timeout=60)         # seconds when it is starved of CPU

    raw = read_table(tmp_path, "raw")
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw), "a frame stored twice"
    stored = Counter((r["ts_recv"], r["frame"]) for r in raw)
    # every record the killed run had journaled is in raw exactly once
    assert all(stored[(r.ts_recv, r.frame)] == 1 for r in journaled)
    # recovery closed the dead session in its own journal, and the outage is a gap
    sessions = read_table(tmp_path, "sessions")
    assert any("recorder died" in (s["close_reason"] or "") for s in sessions)
    disc = [g for g in read_table(tmp_path, "gaps") if g["kind"] == "disconnect"]
    assert {g["symbol"] for g in disc} == {"AAPL.US", "700.HK"}
    last_before = max(r.ts_recv for r in journaled)
    assert all(g["ts_start"] <= last_before < g["ts_end"] for g in disc)
    assert os.path.exists(run_dir / "done")
