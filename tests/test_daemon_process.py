"""The daemon as a process: SIGTERM publishes everything, SIGHUP adds a feed without
touching the others, SIGKILL in the middle of a seal loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.events import Trade
from storage.compact import day_state, manifest_path
from storage.journal import iter_journal
from storage.writer import StoreWriter
from tests.helpers import child_env, read_table, record_across_midnight

pytestmark = pytest.mark.slow
TOKEN = "ATOK-secret-1f2e9d"
MIDNIGHT = int(datetime(2024, 3, 11, tzinfo=UTC).timestamp()) * 1_000_000_000
DAY = 86_400 * 1_000_000_000


def tickrec(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    out = subprocess.DEVNULL if args[0] == "daemon" else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "tickrec", *args], text=True,
                            stdout=out, stderr=subprocess.PIPE,
                            env=child_env(**(env or {})))


class Lines:
    """Collects a process's stderr lines in a thread (so the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line)
        proc.stderr.close()

    def wait_for(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not any(cond(line) for line in list(self.lines)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.lines[-5:]}")
            time.sleep(0.01)

    def join(self) -> None:
        self._t.join(10)


def wait_status(root: Path, cond: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            snap = json.loads((root / "status" / "daemon.json").read_text())
            if cond(snap):
                return snap
        except (FileNotFoundError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_config(path: Path, root: Path, feeds: dict[str, dict[str, Any]]) -> None:
    lines = [f'root = "{root}"', "status_interval = 0.2", "metrics_port = 0", ""]
    for name, feed in feeds.items():
        lines.append(f"[feeds.{name}]")
        for k, v in feed.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    path.write_text("\n".join(lines))


def test_sigterm_publishes_everything_and_sighup_adds_a_feed_without_reconnects(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    sims = [tickrec("sim", "alltick", "--rate", "300", "--symbols", "AAPL.US,700.HK"),
            tickrec("sim", "finazon", "--rate", "20", "--symbols", "AAPL,MSFT")]
    try:
        urls = []
        for s in sims:
            assert s.stdout is not None
            urls.append(s.stdout.readline().strip())
        at = {"venue": "alltick", "url": urls[0], "symbols": ["AAPL.US", "700.HK"],
              "token_env": "TEST_AT_TOKEN", "reconnect_min": 0.2, "flush_seconds": 0.5}
        fz = {"venue": "finazon", "url": urls[1], "symbols": ["AAPL", "MSFT"],
              "reconnect_min": 0.2, "flush_seconds": 0.5}
        cfg = tmp_path / "capture.toml"
        write_config(cfg, root, {"at": at})
        d = tickrec("daemon", "--config", str(cfg), env={"TEST_AT_TOKEN": TOKEN})
        err = Lines(d)
        try:
            wait_status(root, lambda s: s["feeds"]["at"]["state"] == "connected"
                        and s["feeds"]["at"]["frames"] > 100, 20, "alltick frames")
            write_config(cfg, root, {"at": at, "fz": fz})
            d.send_signal(signal.SIGHUP)
            snap = wait_status(root, lambda s: "fz" in s["feeds"]
                               and s["feeds"]["fz"]["frames"] > 10, 20, "finazon frames")
            assert snap["feeds"]["at"]["connections"] == 1
            status = subprocess.run([sys.executable, "-m", "tickrec", "status", "--root",
                                     str(root)], capture_output=True, text=True, timeout=30,
                                    check=False, env=child_env())
            assert status.returncode == 0 and "connected" in status.stdout, status.stderr
            d.send_signal(signal.SIGTERM)
            d.wait(30)
        finally:
            if d.poll() is None:
                d.kill()
                d.wait()
        err.join()
        assert d.returncode == 0, err.lines[-5:]
    finally:
        for s in sims:
            s.send_signal(signal.SIGTERM)
            s.communicate(timeout=10)

    # every record that reached the journal is a raw row, once (all runs are done)
    journaled: set[tuple[str, int]] = set()
    n_records = 0
    for run in (root / "journal").glob("*/*"):
        if run.is_dir():
            assert (run / "done").exists(), run
            session = None
            for rec in iter_journal(run):
                n_records += 1
                if rec.kind == "open":
                    session = json.loads(rec.note or "{}")["session"]
                journaled.add((session, rec.frame))
    raw = [(r["session"], r["frame"]) for r in read_table(root, "raw")]
    assert len(raw) == n_records == len(set(raw)) and set(raw) == journaled
    sessions = Counter(s["feed"] for s in read_table(root, "sessions"))
    assert sessions["at"] == 1 and sessions["fz"] == 1       # SIGHUP did not touch "at"
    # logs: JSON lines, one per state change (not per frame), no secret
    events = [json.loads(line) for line in err.lines]
    kinds = Counter(e.get("event") for e in events)
    assert kinds["config_reloaded"] == 1 and kinds["daemon_stopped"] == 1
    assert len(events) < 40, kinds
    reloaded = next(e for e in events if e.get("event") == "config_reloaded")
    assert reloaded["added"] == ["fz"] and reloaded["restarted"] == []
    assert TOKEN not in "".join(err.lines)
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def _store_with_past_days(root: Path) -> None:
    """A real capture across a past midnight (journal runs done) and bulk trades on both days."""
    asyncio.run(record_across_midnight(root, ["AAPL.US", "700.HK"], MIDNIGHT, rows=100,
                                       flush_rows=300))
    w = StoreWriter(root, "alltick", "bulk", root / "bulk-state")
    frame = 0
    for day0 in (MIDNIGHT - DAY, MIDNIGHT):
        for i in range(60_000):
            w.add_event(Trade(venue="alltick", symbol=f"S{i % 50:02d}",
                              ts_recv=day0 + i * 500_000_000 + i % 997, ts_event=None,
                              seq=i, session="bulk", frame=frame, pos=0, price=float(i % 13),
                              size=1.0))
            frame += 1
            if i % 12_000 == 11_999:
                w.publish(w.take())


def _rows(root: Path) -> dict[str, Counter[tuple[Any, ...]]]:
    return {t: Counter((r["session"], r.get("frame"), r.get("pos"), r["ts_recv"], r.get("symbol"),
                        r.get("price"), r.get("payload")) for r in read_table(root, t))
            for t in ("raw", "trades", "book", "gaps", "sessions")}


def test_sigkill_in_the_middle_of_a_seal_then_restart_seals_each_day_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _store_with_past_days(root)
    want = _rows(root)
    cfg = tmp_path / "capture.toml"
    cfg.write_text(f'root = "{root}"\nstatus_interval = 0.2\n[seal]\nrow_group_rows = 8192\n')
    kills = []
    for marker in ('"event": "seal_switching"', '"event": "seal_started"'):
        d = tickrec("daemon", "--config", str(cfg))
        err = Lines(d)
        try:
            err.wait_for(lambda line, m=marker: m in line, 60, marker)
            d.send_signal(signal.SIGKILL)
            d.wait(10)
        finally:
            if d.poll() is None:
                d.kill()
                d.wait()
        kills.append(d.returncode)
        err.join()
    assert kills == [-signal.SIGKILL, -signal.SIGKILL]
    days = ("2024-03-10", "2024-03-11")
    assert not all(day_state(root, day).sealed for day in days)    # it really was cut short

    done = subprocess.run([sys.executable, "-m", "tickrec", "compact", "--root", str(root)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    for day in days:
        st = day_state(root, day)
        assert st.sealed, (day, st)
        m = json.loads(manifest_path(root, day).read_text())
        for (table, venue), files in st.partitions.items():
            assert all(f.name.startswith("sealed-") for f in files)
            assert {str(f.relative_to(root)) for f in files} == \
                {f["path"] for f in m["tables"][table][venue]["files"]}
    assert _rows(root) == want                         # every row, once
    assert not list(root.rglob("*.tmp"))
    assert [p.name for p in (root / "journal" / "alltick").iterdir()] == ["carry.json"]


def test_after_kill_9_the_daemon_recovers_every_feed_before_it_connects(tmp_path: Path) -> None:
    root = tmp_path / "store"
    sim = tickrec("sim", "alltick", "--rate", "1000", "--symbols", "AAPL.US,700.HK")
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        cfg = tmp_path / "capture.toml"
        write_config(cfg, root, {"at": {"venue": "alltick", "url": url, "reconnect_min": 0.2,
                                        "symbols": ["AAPL.US", "700.HK"], "flush_seconds": 0.5}})
        first = tickrec("daemon", "--config", str(cfg))
        err1 = Lines(first)
        wait_status(root, lambda s: s["feeds"]["at"]["frames"] > 1500, 20, "a busy capture")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        err1.join()
        [killed] = [p for p in (root / "journal" / "at").iterdir() if p.is_dir()]
        assert not (killed / "done").exists()
        second = tickrec("daemon", "--config", str(cfg))
        err2 = Lines(second)
        try:
            wait_status(root, lambda s: s["pid"] == second.pid
                        and s["feeds"]["at"]["state"] == "connected", 20, "connected")
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        err2.join()
        assert second.returncode == 0
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.communicate(timeout=10)
    events = [json.loads(line) for line in err2.lines]
    order = [e["event"] + ":" + e.get("state", "") for e in events
             if e.get("feed") == "at" and e["event"] in ("recovered", "feed_state")]
    assert order[0] == "recovered:" and order.index("feed_state:connecting") > 0, order
    assert (killed / "done").exists()
    n = 0
    for run in (root / "journal" / "at").iterdir():
        if run.is_dir():
            n += sum(1 for _ in iter_journal(run))
    raw = [(r["session"], r["frame"]) for r in read_table(root, "raw")]
    assert len(raw) == len(set(raw)) == n
