"""Health of the daemon's feeds: counters, the status file, Prometheus text, JSON logs.

``FeedHealth`` keeps one feed's counters across its recorder runs (a roll at
midnight, a restart after a crash). ``status_file(root)`` is where the daemon
writes its snapshot (atomically, every ``status_interval`` seconds) and where
``tickrec status`` reads it. ``prometheus(snapshot)`` renders the same numbers
as Prometheus text; ``MetricsServer`` serves them on 127.0.0.1 (HTTP/1.0,
``GET /metrics`` only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.fs import StoreRoot

STATES = ("starting", "connecting", "connected", "disconnected", "closed", "backoff", "parked",
          "stopped", "disabled")
RATE_WINDOW_S = 60.0


def status_file(root: Path | StoreRoot) -> Path:
    """Where the daemon's status snapshot is: ``ROOT/status/daemon.json``; for an
    object-store root, under its local journal directory (``storage.fs``)."""
    local = root.journal if isinstance(root, StoreRoot) else Path(root)
    return local / "status" / "daemon.json"


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class FeedHealth:
    name: str
    venue: str
    state: str = "starting"
    reason: str = ""
    since_ns: int = 0
    connections: int = 0
    reconnects: int = 0
    runs: int = 0
    restarts: int = 0             # after a crash of the feed's task
    frames: int = 0               # frames in, finished runs (the live run is added on read)
    rows: int = 0
    last_frame_ns: int | None = None
    gaps_by_date: dict[str, int] = field(default_factory=dict)
    _samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def sample(self, frames: int, rows: int, mono: float | None = None) -> None:
        now = time.monotonic() if mono is None else mono
        self._samples.append((now, frames, rows))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()

    def per_minute(self) -> tuple[float, float]:
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, f0, r0), (t1, f1, r1) = self._samples[0], self._samples[-1]
        if t1 - t0 <= 0:
            return 0.0, 0.0
        k = 60.0 / (t1 - t0)
        return (f1 - f0) * k, (r1 - r0) * k


def prometheus(snapshot: dict[str, Any]) -> str:
    """The snapshot written to the status file, as Prometheus text exposition (0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        lines.append(f"# HELP tickrec_{name} {help_}")
        lines.append(f"# TYPE tickrec_{name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            text = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            lines.append(f"tickrec_{name}{{{text}}} {float(value):g}" if text
                         else f"tickrec_{name} {float(value):g}")

    feeds = snapshot.get("feeds", {})
    lab = {n: {"feed": n, "venue": f["venue"]} for n, f in feeds.items()}

    def each(key: str) -> list[tuple[dict[str, str], Any]]:
        return [(lab[n], f.get(key)) for n, f in feeds.items()]

    metric("feed_up", "gauge", "1 while the feed is connected.",
           [(lab[n], int(f["state"] == "connected")) for n, f in feeds.items()])
    metric("feed_state", "gauge", "1 for the feed's current state.",
           [({**lab[n], "state": f["state"]}, 1) for n, f in feeds.items()])
    metric("feed_stale", "gauge", "1 when an open, connected feed is silent too long.",
           [(lab[n], int(bool(f.get("stale")))) for n, f in feeds.items()])
    metric("frames_total", "counter", "Frames received since the daemon started.", each("frames"))
    metric("rows_total", "counter", "Normalized rows since the daemon started.", each("rows"))
    metric("frames_per_minute", "gauge", "Frames received over the last minute.",
           each("frames_per_min"))
    metric("rows_per_minute", "gauge", "Rows produced over the last minute.", each("rows_per_min"))
    metric("last_frame_age_seconds", "gauge", "Seconds since the last frame received.",
           each("last_frame_age_s"))
    metric("connections_total", "counter", "Connections opened.", each("connections"))
    metric("reconnects_total", "counter", "Connections opened after a drop.", each("reconnects"))
    metric("gaps_today", "gauge", "Gap rows with today's UTC date.", each("gaps_today"))
    metric("journal_unpublished_records", "gauge",
           "Journal records of the live run not yet in Parquet.", each("unpublished_records"))
    metric("journal_unfinished_runs", "gauge",
           "Journal runs neither live in this daemon nor done.", each("unfinished_runs"))
    metric("journal_runs", "gauge", "Journal runs kept on disk.", each("journal_runs"))
    seal = snapshot.get("seal", {})
    metric("seal_failures_total", "counter", "Seals whose checks failed or that crashed.",
           [({}, seal.get("failures", 0))])
    metric("seal_last_success_timestamp_seconds", "gauge", "When the last seal succeeded.",
           [({}, seal.get("last_ok_ns", 0) / 1e9 if seal.get("last_ok_ns") else None)])
    metric("unsealed_days", "gauge", "Days before today not sealed (or with late files).",
           [({}, len(seal.get("unsealed", [])))])
    metric("daemon_start_time_seconds", "gauge", "When the daemon started.",
           [({}, snapshot.get("started_ns", 0) / 1e9)])
    return "\n".join(lines) + "\n"


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1:``port`` (0: any free port), from ``render()``."""

    def __init__(self, render: Any, port: int) -> None:
        self.render = render
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass                                   # headers: not needed
            parts = line.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body = self.render().encode()
                head = ("HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n")
            else:
                body = b"not found\n"
                head = f"HTTP/1.0 404 Not Found\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, OSError, UnicodeError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return json.dumps(out, ensure_ascii=False, default=str)


def json_logging(level: int = logging.INFO) -> None:
    """Send every tickrec log record to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("tickrec").setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
