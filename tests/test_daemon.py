"""The daemon in process: two venues across a simulated UTC midnight, seal, health."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import recorder.daemon as daemon_mod
from recorder.capture import RecvClock
from recorder.config import FeedSchedule, load, parse
from recorder.daemon import Daemon
from recorder.health import status_file
from replay.sim.server import Simulator, make_adapter
from schemas.errors import ConfigError
from schemas.schedule import TradingHours
from storage.compact import SealOptions, day_state, manifest_path
from storage.journal import iter_journal
from storage.layout import date_of
from tests.helpers import MidnightClock, read_table
from tickrec.verify import verify

D1, D2 = "2024-03-10", "2024-03-11"
MIDNIGHT = int(datetime(2024, 3, 11, tzinfo=UTC).timestamp()) * 1_000_000_000
KEY = "FZKEY-daemon-5b1e9a"
SMALL = SealOptions(row_group_rows=256, file_rows=2048)


def journal_keys(root: Path, date: str) -> set[tuple[str, int]]:
    """(session, frame) of every journal record of ``date``, across every run on disk."""
    out: set[tuple[str, int]] = set()
    for run in (root / "journal").glob("*/*"):
        if not run.is_dir():
            continue
        session = None
        for rec in iter_journal(run):
            if rec.kind == "open":
                session = json.loads(rec.note or "{}")["session"]
            if session is not None and date_of(rec.ts_recv) == date:
                out.add((session, rec.frame))
    return out


def raw_keys(root: Path, date: str | None = None) -> list[tuple[str, int]]:
    return [(r["session"], r["frame"]) for r in read_table(root, "raw")
            if date is None or date_of(r["ts_recv"]) == date]


async def _http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.decode()


def status_now(root: Path) -> Any:
    """The daemon's status file as it is now (None before the first one)."""
    try:
        return json.loads(status_file(root).read_text())
    except (OSError, ValueError):
        return None


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def config(root: Path, feeds: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"root": str(root), "status_interval": 0.3, "metrics_port": 0,
            "seal": {"at": "00:00:01", "row_group_rows": 256, "file_rows": 2048}, "feeds": feeds,
            **extra}


async def test_two_venues_across_midnight_two_sealed_days_nothing_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_FINAZON_KEY", KEY)
    at = Simulator(make_adapter("alltick"), ["AAPL.US", "700.HK"], rate=150, seed=3)
    fz = Simulator(make_adapter("finazon", bar_seconds=2), ["AAPL", "MSFT"], rate=20, seed=4,
                   token=KEY)
    await at.start()
    await fz.start()
    cfg = parse(config(tmp_path, {
        "at": {"venue": "alltick", "url": at.url, "symbols": ["AAPL.US", "700.HK"],
               "reconnect_min": 0.2, "flush_seconds": 0.5},
        "fz": {"venue": "finazon", "url": fz.url, "symbols": ["AAPL", "MSFT"],
               "token_env": "TEST_FINAZON_KEY", "reconnect_min": 0.2, "flush_seconds": 0.5}}))
    before: dict[str, tuple[list[tuple[str, int]], set[tuple[str, int]]]] = {}
    real_seal = daemon_mod.seal_day

    def seal_and_snapshot(root: Path, day: str, **kw: Any) -> Any:
        before[day] = (raw_keys(root, day), journal_keys(root, day))
        return real_seal(root, day, **kw)

    monkeypatch.setattr(daemon_mod, "seal_day", seal_and_snapshot)
    clock = MidnightClock(MIDNIGHT)
    d = Daemon(cfg, clock=clock)
    task = asyncio.create_task(d.run())
    try:
        # midnight comes once both feeds have frames of the first day (however long
        # they take to connect), not 2.5 s after the start
        await _until(lambda: len(d.runners) == 2 and all(
            r.snapshot(d.now(), D1)["frames"] > 5 for r in d.runners.values()), 60,
            "frames of both feeds before midnight")
        clock.cross()
        await _until(lambda: d.seal["last_date"] == D1, 20, "the seal of D1")
        assert d.seal["last_ok"], d.seal
        frames_then = {n: r.snapshot(d.now(), D2)["frames"] for n, r in d.runners.items()}
        await _until(lambda: all(r.snapshot(d.now(), D2)["frames"] > frames_then[n] + 5
                                 for n, r in d.runners.items()), 10, "frames after the seal")
        assert d.metrics is not None
        metrics = await _http_get(d.metrics.port, "/metrics")
        assert (await _http_get(d.metrics.port, "/other")).startswith("HTTP/1.0 404")
        await _until(lambda: (st := status_now(tmp_path)) is not None and all(
            st["feeds"].get(n, {}).get("runs") == 2 for n in ("at", "fz")), 30,
            "a status file written after midnight")
        live = status_now(tmp_path)
    finally:
        d.stop()
        await asyncio.wait_for(task, 20)
        await at.stop()
        await fz.stop()

    # health while running: both feeds connected and counted, served as Prometheus text too
    assert metrics.startswith("HTTP/1.0 200 OK")
    for name, venue in (("at", "alltick"), ("fz", "finazon")):
        f = live["feeds"][name]
        assert f["state"] == "connected" and f["frames"] > 0 and f["runs"] == 2, f
        assert f["frames_per_min"] > 0 and f["last_frame_age_s"] < 5
        assert f'tickrec_frames_total{{feed="{name}",venue="{venue}"}}' in metrics
    assert "tickrec_feed_up" in metrics and "tickrec_journal_unpublished_records" in metrics

    # D1 was sealed by the daemon, D2 is sealed by hand now that every run is done
    assert list(before) == [D1]
    report = seal_and_snapshot(tmp_path, D2, options=SMALL)
    assert report.ok and report.sealed, report.lines()
    assert day_state(tmp_path, D1).sealed and day_state(tmp_path, D2).sealed

    # no frame lost or doubled across the boundary: raw before the seals == raw after ==
    # what the journal held; and the seal's manifests add up to the store
    after = raw_keys(tmp_path)
    assert len(after) == len(set(after))
    for day in (D1, D2):
        pre_raw, journaled = before[day]
        assert pre_raw and len(pre_raw) == len(set(pre_raw))
        assert set(pre_raw) == journaled == set(raw_keys(tmp_path, day))
    for day in (D1, D2):
        m = json.loads(manifest_path(tmp_path, day).read_text())
        for table in ("raw", "trades", "book", "bars", "sessions", "gaps"):
            stored = Counter(r["venue"] for r in read_table(tmp_path, table)
                             if date_of(r["ts_recv"]) == day)
            listed = {v: e["rows"] for v, e in m["tables"].get(table, {}).items()}
            assert listed == dict(stored), (day, table)
    for feed in ("at", "fz"):          # one run before midnight, one after (the roll)
        opened = [date_of(s["ts_recv"]) for s in read_table(tmp_path, "sessions")
                  if s["feed"] == feed]
        assert set(opened) == {D1, D2}, (feed, opened)

    # the journal is trimmed; the carry stays; verify re-derives every row from raw
    for feed in ("at", "fz"):
        left = [p.name for p in (tmp_path / "journal" / feed).iterdir()]
        assert left == ["carry.json"], left
    v = verify(tmp_path)
    assert v.ok, v.problems
    # the key never reached the store, the journal, the manifests or the status file
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_config_errors_are_one_line_and_name_no_secret(tmp_path: Path) -> None:
    good = {"venue": "alltick", "url": "ws://127.0.0.1:1/x", "symbols": ["A"]}
    with pytest.raises(ConfigError, match="unknown key"):
        parse(config(tmp_path, {"a": {**good, "tokne_env": "X"}}))
    with pytest.raises(ConfigError, match="must name an environment variable"):
        parse(config(tmp_path, {"a": {**good, "token_env": "sk-live 123"}}))
    with pytest.raises(ConfigError, match="below alltick's floor"):
        parse(config(tmp_path, {"a": {**good, "url": "wss://quote.example.com/x",
                                      "reconnect_min": 0.1}}))
    with pytest.raises(ConfigError, match="unknown venue"):
        parse(config(tmp_path, {"a": {**good, "venue": "nope"}}))
    with pytest.raises(ConfigError, match="feed name"):
        parse(config(tmp_path, {"../x": good}))
    (tmp_path / "bad.toml").write_text("feeds = [")
    with pytest.raises(ConfigError, match="bad.toml"):
        load(tmp_path / "bad.toml")
    example = Path(__file__).parent.parent / "docs" / "capture.example.toml"
    cfg = load(example)
    assert len(cfg.feeds) >= 3 and cfg.seal.options.row_group_rows == 122_880


def test_schedule_windows_weekdays_holidays_and_next_change() -> None:
    sched = FeedSchedule((TradingHours.parse("Sat-Wed 09:00-12:30 Asia/Tehran"),
                          TradingHours.parse("Sat-Wed 13:00-15:00 Asia/Tehran")),
                         frozenset({datetime(2025, 3, 22).date()}), "Asia/Tehran")

    def ns(text: str) -> int:      # Tehran is UTC+03:30
        return int(datetime.fromisoformat(text + "+03:30").timestamp()) * 1_000_000_000

    assert sched.is_open(ns("2025-03-23T10:00:00"))                  # Sunday
    assert not sched.is_open(ns("2025-03-23T12:45:00"))              # lunch break
    assert not sched.is_open(ns("2025-03-20T10:00:00"))              # Thursday
    assert not sched.is_open(ns("2025-03-22T10:00:00"))              # a holiday (Saturday)
    assert sched.next_change(ns("2025-03-23T10:00:00")) == ns("2025-03-23T12:30:00")
    assert sched.next_change(ns("2025-03-23T12:45:00")) == ns("2025-03-23T13:00:00")
    assert sched.next_change(ns("2025-03-20T16:00:00")) == ns("2025-03-23T09:00:00")


async def test_a_feed_outside_its_schedule_does_not_connect_and_a_bad_feed_is_parked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = Simulator(make_adapter("alltick"), ["AAPL.US"], rate=100, seed=3, token="GOOD-tok-77c2")
    await at.start()
    monkeypatch.setenv("GOOD_TOKEN", "GOOD-tok-77c2")
    monkeypatch.setenv("WRONG_TOKEN", "WRONG-tok-93a1")
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    base = {"venue": "alltick", "url": at.url, "symbols": ["AAPL.US"], "reconnect_min": 0.2}
    # the clock says Sunday 2024-03-10 12:00 UTC: a Mon-Fri market is closed
    cfg = parse(config(tmp_path, {
        "good": {**base, "token_env": "GOOD_TOKEN"},
        "closed": {**base, "token_env": "GOOD_TOKEN",
                   "schedule": {"zone": "America/New_York", "windows": ["Mon-Fri 09:30-16:00"]}},
        "badkey": {**base, "token_env": "WRONG_TOKEN"},
        "nokey": {**base, "token_env": "MISSING_TOKEN"}}))
    d = Daemon(cfg, clock=RecvClock(MIDNIGHT - 12 * 3600 * 1_000_000_000))
    task = asyncio.create_task(d.run())
    try:
        await _until(lambda: len(d.runners) == 4 and d.runners["badkey"].health.state == "parked"
                     and d.runners["good"].health.state == "connected", 15, "states")
        snap = d.status()["feeds"]
    finally:
        d.stop()
        await asyncio.wait_for(task, 15)
        await at.stop()
    assert snap["closed"]["state"] == "closed"
    assert "opens 2024-03-11T13:30" in snap["closed"]["reason"]
    assert snap["closed"]["connections"] == 0 and not snap["closed"]["stale"]
    assert snap["nokey"]["state"] == "parked" and "MISSING_TOKEN" in snap["nokey"]["reason"]
    assert snap["badkey"]["state"] == "parked" and "bad token" in snap["badkey"]["reason"]
    assert snap["good"]["frames"] > 0
    assert not (tmp_path / "journal" / "closed").exists()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"WRONG-tok-93a1" not in data and b"GOOD-tok-77c2" not in data, path


async def test_a_crashing_feed_is_restarted_with_backoff_and_others_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = Simulator(make_adapter("alltick"), ["AAPL.US"], rate=100, seed=3)
    await at.start()
    base = {"venue": "alltick", "url": at.url, "symbols": ["AAPL.US"], "reconnect_min": 0.2}
    cfg = parse(config(tmp_path, {"ok": base, "boom": base}))
    real_run = daemon_mod.Recorder.run
    crashes = [0]

    async def run(self: Any, duration: float | None = None) -> None:
        if self.feed == "boom" and crashes[0] < 2:
            crashes[0] += 1
            raise RuntimeError("injected bug\nsecond line")
        await real_run(self, duration)

    monkeypatch.setattr(daemon_mod.Recorder, "run", run)
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    try:
        await _until(lambda: "boom" in d.runners
                     and d.runners["boom"].health.state == "backoff", 30, "a crash")
        assert "RuntimeError: injected bug" in d.runners["boom"].health.reason
        assert "second line" not in d.runners["boom"].health.reason
        await _until(lambda: d.runners["boom"].health.state == "connected", 15, "the restart")
        assert d.runners["ok"].health.state == "connected"
    finally:
        d.stop()
        await asyncio.wait_for(task, 15)
        await at.stop()
    assert d.runners["boom"].health.restarts == 2


async def test_a_status_file_half_written_by_a_killed_daemon_is_removed_at_start(
        tmp_path: Path) -> None:
    """kill -9 during the status file's write leaves its temp file; the next daemon, holding
    the root's lock, removes it (found by the SIGKILL-mid-seal test under load)."""
    status = status_file(tmp_path)
    status.parent.mkdir(parents=True)
    stale = status.with_name(".daemon.json.4242.0a1b2c3d.tmp")
    stale.write_text('{"feeds": {')
    closed = {"venue": "alltick", "url": "ws://127.0.0.1:9/", "symbols": ["AAPL.US"],
              "schedule": {"zone": "America/New_York", "windows": ["Mon-Fri 09:30-16:00"]}}
    d = Daemon(parse(config(tmp_path, {"closed": closed})),
               clock=RecvClock(MIDNIGHT - 12 * 3600 * 1_000_000_000))   # a Sunday: closed
    task = asyncio.create_task(d.run())
    try:
        await _until(lambda: status_now(tmp_path) is not None, 30, "the first status file")
    finally:
        d.stop()
        await asyncio.wait_for(task, 15)
    assert not stale.exists() and not list(status.parent.glob("*.tmp"))
    assert "closed" in status_now(tmp_path)["feeds"]
