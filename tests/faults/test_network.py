"""Network faults: a half-open connection, a reconnect storm, permanent refusals."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from recorder.live import Recorder
from replay.sim.hedgetech import IME_PATH
from schemas.errors import PermanentFeedError
from schemas.venues import NAMES, get
from tests.faults.support import SOAK, running, scaled, wait_for
from tests.helpers import LoopLag, read_table

pytestmark = pytest.mark.timeout(scaled(90, 1800))
NS = 1_000_000_000
SYMBOLS = {"alltick": ["AAPL.US"], "finazon": ["AAPL"], "hedgetech": ["Gold-Coin-1404"],
           "noren": ["NSE|22"], "futu": ["HK.00700"]}
PATHS = {"hedgetech": IME_PATH}               # its client needs one of its endpoints
CREDENTIALS = {"alltick": {"token": "t"}, "finazon": {"token": "t"}, "hedgetech": {"token": "t"},
               "noren": {"uid": "U", "token": "t"}, "futu": {}}


def ws_url(port: int, name: str) -> str:
    return f"ws://127.0.0.1:{port}{PATHS.get(name, '/')}"


def test_every_venue_waits_longer_than_its_heartbeat_before_calling_a_link_dead() -> None:
    for name in NAMES:
        client = get(name).client
        assert client.idle_timeout > client.heartbeat_interval or name == "hedgetech", name
        assert client.reconnect_min >= 1.0, name


async def test_half_open_json_venue_is_noticed_within_its_window(tmp_path: Path) -> None:
    """Finazon with a 2.5 s window (AllTick's test uses 1.5 s): the server goes silent
    without closing; the watchdog cuts the link between 2.5 s and 2.5 s + one check after
    the last frame, and the recorder reconnects and records again."""
    window = 2.5
    async with LoopLag() as lag, running(
            tmp_path, ["AAPL", "MSFT"], venue="finazon", rate=40, steps=200,
            faults="stall@40:8", adapter_options={"bar_seconds": 60},
            idle_timeout=window) as run:
        assert await wait_for(lambda: run.rec.connections >= 2, 15)
        await wait_for(run.sim.done.is_set, 15)
    sessions = read_table(tmp_path, "sessions")
    assert len(sessions) >= 2
    first = sessions[0]
    assert first["close_reason"] == f"watchdog: no frame for {window:g}s"
    raw = read_table(tmp_path, "raw")
    last_in = max(r["ts_recv"] for r in raw
                  if r["session"] == first["session"] and r["direction"] == "in")
    silence = (first["closed"] - last_in) / NS
    assert window <= silence <= window + window / 4 + 0.75 + lag.max, (silence, lag.max)
    later = [r for r in read_table(tmp_path, "bars") if r["session"] != first["session"]]
    assert later                                   # recording again after the reconnect
    assert {g["kind"] for g in read_table(tmp_path, "gaps")} <= {"disconnect", "stale"}


# --- reconnect storm ---------------------------------------------------------------------

class Storm:
    """A TCP server that accepts and at once closes every connection; notes the times."""

    def __init__(self) -> None:
        self.accepts: list[float] = []
        self.server: Any = None

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepts.append(time.monotonic())
            writer.transport.abort()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.close()
        await asyncio.sleep(0)      # a handler scheduled by a last accept runs (and aborts)
        await self.server.wait_closed()


class WsStorm:
    """A WebSocket server that completes the handshake and closes at once (1001)."""

    def __init__(self) -> None:
        self.accepts: list[float] = []

    async def handler(self, ws: ServerConnection) -> None:
        self.accepts.append(time.monotonic())
        await ws.close(1001, "going away")


async def test_a_reconnect_storm_keeps_each_venues_floor_between_attempts(tmp_path: Path) -> None:
    """Every venue at once, with the vendor's floor (no test override): attempts are never
    closer than the floor, and they spread out (doubling) while the storm lasts.

    Attempts are timed where the recorder makes them (its dial), not where the server
    sees them: a handshake slowed by a loaded machine would shift an arrival, not the
    attempt. The storm lasts until every recorder has tried twice (and ``window`` s)."""
    window = 20.0 if SOAK else 4.0
    storms: dict[str, Any] = {}
    recorders: list[Recorder] = []
    attempts: list[list[float]] = []
    ws_storm = WsStorm()
    async with serve(ws_storm.handler, "127.0.0.1", 0) as ws_server:
        ws_port = ws_server.sockets[0].getsockname()[1]
        try:
            for name in NAMES:
                storm = storms[name] = Storm()
                port = await storm.start()
                url = f"tcp://127.0.0.1:{port}" if name == "futu" else ws_url(port, name)
                recorders.append(Recorder(name, url, SYMBOLS[name], tmp_path / name,
                                          credentials=CREDENTIALS[name]))
            storms["alltick (handshake, then 1001)"] = ws_storm
            recorders.append(Recorder("alltick", ws_url(ws_port, "alltick"), ["AAPL.US"],
                                      tmp_path / "ws", credentials={"token": "t"}))
            for rec in recorders:
                attempts.append(times := [])
                rec.client.dial = timed(rec.client.dial, times)      # type: ignore[method-assign]
            started = time.monotonic()
            tasks = [asyncio.create_task(r.run()) for r in recorders]
            assert await wait_for(lambda: all(len(t) >= 2 for t in attempts)
                                  and time.monotonic() - started >= window, window + 60)
            stopped = time.monotonic()
            for rec in recorders:
                rec.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            for storm in storms.values():
                if isinstance(storm, Storm):
                    await storm.stop()
    for (name, storm), rec, times in zip(storms.items(), recorders, attempts):
        floor = rec.client.reconnect_min
        assert rec.reconnect_min == floor >= 3.0
        assert 2 <= len(times) and len(storm.accepts) <= len(times), name
        gaps = [b - a for a, b in pairwise(times)]
        assert min(gaps) >= floor * 0.98, (name, gaps)
        assert all(b >= a * 1.5 for a, b in pairwise(gaps)), (name, gaps)   # backing off
        span = stopped - times[0]
        assert len(times) <= 1 + sum(1 for k in range(10) if floor * (2**(k + 1) - 1) <= span)


def timed(dial: Any, times: list[float]) -> Any:
    """``dial`` that notes the time of each call (each connection attempt) in ``times``."""
    def wrapper(url: str) -> Any:
        times.append(time.monotonic())
        return dial(url)
    return wrapper


# --- permanent errors -----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close 1008", "HTTP 401", "HTTP 403"])
async def test_a_permanent_refusal_stops_every_websocket_venue_at_once(tmp_path: Path,
                                                                       how: str) -> None:
    seen: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        seen.append(ws.request.path if ws.request else "")
        await ws.close(1008, "policy violation")

    def refuse(conn: ServerConnection, request: Any) -> Response | None:
        if how.startswith("HTTP"):
            seen.append(request.path)
            code = int(how.split()[1])
            return Response(code, "Unauthorized", Headers(), b"no")
        return None

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        names = [n for n in NAMES if n != "futu"]
        recs = [Recorder(n, ws_url(port, n), SYMBOLS[n], tmp_path / n,
                         credentials=CREDENTIALS[n], reconnect_min=0.2) for n in names]
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(r.run(duration=20) for r in recs), return_exceptions=True), 25)
    assert time.monotonic() - started < 8
    for name, rec, result in zip(names, recs, results):
        assert isinstance(result, PermanentFeedError), (name, result)
        assert ("1008" in str(result)) if how == "close 1008" else (how.split()[1] in str(result))
        assert len(read_table(tmp_path / name, "sessions")) <= 1       # no reconnect loop
    assert len(seen) == len(names)                  # one attempt each
