"""Wire replay (``tickrec serve``): the store served in the venue's own protocol.

Round trip for every venue (simulator → recorder → store → serve → recorder →
second store: the same rows), pacing, clients with different subscriptions, a
slow client, tokens, and the command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from replay.serve import ReplayServer
from storage.layout import date_of
from storage.writer import to_arrow
from tests.helpers import HANG_S, LoopLag, read_table, until
from tests.serve_util import (
    CASES,
    FAST,
    comparable,
    data_frames,
    fast_alltick,
    record_served,
    store,
)

TABLES = ("trades", "book", "tickers", "bars", "gaps")


@pytest.mark.parametrize("venue", sorted(CASES))
async def test_round_trip_the_second_store_has_the_same_rows(
        venue: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = await store(venue, tmp_path_factory.getbasetemp())
    second = tmp_path / "second"
    async with ReplayServer(first, venue, speed=10, options=FAST) as server:
        with fast_alltick():
            await record_served(server, venue, second)
    assert server.stats.started == server.stats.finished == 1
    # the data frames, byte for byte and in order; the replies are the server's own
    sent = [r["payload"] for r in data_frames(first, venue)]
    assert [r["payload"] for r in data_frames(second, venue)] == sent
    assert server.stats.frames == len(sent)
    total = 0
    for table in TABLES:
        got, want = comparable(second, table), comparable(first, table)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, (table, i, {k: (g[k], w[k]) for k in g if g[k] != w[k]})
        assert len(got) == len(want), (table, len(got), len(want))
        total += len(want)
    assert total > 100
    if venue in ("alltick", "futu"):        # gap rows took part in the comparison
        assert comparable(first, "gaps")
    [session] = read_table(second, "sessions")
    assert session["close_code"] == (1006 if venue == "futu" else 1000)     # futu: TCP FIN


def synthetic_store(root: Path, gaps_ms: list[int], symbols: list[str], t0: int | None = None,
                    pad: int = 0) -> list[bytes]:
    """An AllTick ``raw`` partition: one session, depth pushes spaced by ``gaps_ms``,
    round-robin over ``symbols``; returns the payloads."""
    t = t0 or 1_714_564_800 * 10**9            # 2024-05-01T12:00:00Z
    rows: list[tuple[Any, ...]] = [(t, "s1", 0, "event", "open", b"ws://x/", None)]
    payloads = []
    for i, gap in enumerate(gaps_ms):
        t += gap * 1_000_000
        sym = symbols[i % len(symbols)]
        body = {"cmd_id": 22999, "data": {"code": sym, "seq": i + 1, "tick_time": t // 10**6,
                                          "bids": [{"price": "1.5", "volume": "2"}],
                                          "asks": [{"price": "1.6", "volume": "3"}],
                                          "pad": "x" * pad}}
        payload = json.dumps(body, separators=(",", ":")).encode()
        payloads.append(payload)
        rows.append((t, "s1", i + 1, "in", "text", payload, None))
    part = root / "raw" / "venue=alltick" / f"date={date_of(rows[0][0])}"
    part.mkdir(parents=True)
    import pyarrow.parquet as pq
    pq.write_table(to_arrow("raw", rows), part / "r-0.parquet")
    return payloads


def subscribe(codes: list[str], cmd: int = 22002, seq_id: int = 1) -> str:
    return json.dumps({"cmd_id": cmd, "seq_id": seq_id, "trace": f"t{seq_id}",
                       "data": {"symbol_list": [{"code": c, "depth_level": 5} for c in codes]}})


async def take_pushes(ws: Any, arrivals: list[float] | None = None,
                      replies: list[Any] | None = None, out: list[str] | None = None) -> list[str]:
    """Every push until the server closes the connection (replies go to ``replies``),
    appended to ``out`` (a new list by default) as it arrives."""
    out = [] if out is None else out
    async for msg in ws:
        if '"ret"' in msg:
            if replies is not None:
                replies.append(json.loads(msg))
            continue
        out.append(msg)
        if arrivals is not None:
            arrivals.append(time.monotonic())
    return out


async def test_speed_10_shrinks_the_recorded_spacing_tenfold(tmp_path: Path) -> None:
    gaps = [40, 120, 300, 80, 500, 60, 200, 700, 100, 400] * 2    # 5.4 s in all
    payloads = synthetic_store(tmp_path, gaps, ["A.US"])
    async with (LoopLag() as lag, ReplayServer(tmp_path, "alltick", speed=10) as server,
                connect(server.url) as ws):
        await ws.send(subscribe(["A.US"]))
        arrivals: list[float] = []
        got = await asyncio.wait_for(take_pushes(ws, arrivals), 10)
        assert ws.close_code == 1000 and ws.close_reason == "end of replay"
    assert [m.encode() for m in got] == payloads
    # loosely: each frame arrives when its recorded offset / 10 says (never early, a
    # little late at most), so the whole span is the recorded span / 10. Times are
    # taken from the first arrival, itself late by up to ``lag`` on a starved loop.
    got_at = [a - arrivals[0] for a in arrivals]
    due_at = [sum(gaps[1:i + 1]) / 10_000 for i in range(len(gaps))]
    for i, (g, d) in enumerate(zip(got_at, due_at)):
        assert d - 0.03 - lag.max <= g <= d + 0.2 + lag.max, (i, g, d, lag.max)
    assert 0.9 * due_at[-1] - lag.max <= got_at[-1] <= due_at[-1] + 0.2 + lag.max  # 0.54 s


async def test_subscribe_replaces_and_cancel_stops_when_the_frames_are_due(
        tmp_path: Path) -> None:
    """Each step waits for frames, not for time: a replay of 20 s (A and B) leaves any
    loaded machine room to send the replace and the cancel long before its end."""
    payloads = synthetic_store(tmp_path, [50] * 400, ["A.US", "B.US"])
    a_frames, b_frames = payloads[0::2], payloads[1::2]
    async with (ReplayServer(tmp_path, "alltick", speed=1, options=FAST) as server,
                connect(server.url) as ws):
        replies: list[Any] = []
        pushes: list[str] = []
        reader = asyncio.create_task(take_pushes(ws, replies=replies, out=pushes))
        await ws.send(subscribe(["A.US"], seq_id=1))
        await until(lambda: len(pushes) >= 6, 30, "six frames of A")
        await ws.send(subscribe(["B.US"], seq_id=2))        # AllTick: replaces the list
        await ws.send(json.dumps({"cmd_id": 22000, "seq_id": 9, "trace": "hb",
                                  "data": {}}))             # a heartbeat meanwhile
        await until(lambda: sum('"B.US"' in m for m in pushes) >= 6, 30, "six frames of B")
        await ws.send(json.dumps({"cmd_id": 22006, "seq_id": 3, "trace": "t3",
                                  "data": {"cancel_type": 0}}))
        await until(lambda: len(replies) == 4, 30, "the cancel's reply")
        after_cancel = len(pushes)    # the reply follows every frame queued before it
        await asyncio.sleep(0.5)      # (a window for a frame after the cancel to show)
        await ws.close()
        got = [m.encode() for m in await asyncio.wait_for(reader, 10)]
    assert len(got) == after_cancel               # nothing after the cancel's reply
    a_got = [m for m in got if b'"A.US"' in m]
    b_got = [m for m in got if b'"B.US"' in m]
    assert got == a_got + b_got                   # no A after the replace
    assert a_got == a_frames[:len(a_got)]         # A from the start, in order, none lost
    first_b = b_frames.index(b_got[0])
    assert b_got == b_frames[first_b:first_b + len(b_got)]
    assert len(a_got) >= 6 and len(b_got) >= 6, (len(a_got), len(b_got))
    assert first_b + len(b_got) < len(b_frames) - 5     # the replay was not over
    # the server's own replies: to both subscribes, the heartbeat and the cancel
    assert [(r["cmd_id"], r["seq_id"], r["ret"]) for r in replies] == [
        (22003, 1, 200), (22003, 2, 200), (22001, 9, 200), (22007, 3, 200)]


async def test_two_clients_get_exactly_their_own_frames(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = await store("alltick", tmp_path_factory.getbasetemp())
    frames = data_frames(root, "alltick")
    want = {"A": [r["payload"].decode() for r in frames
                  if r["symbol"] == "AAPL.US" and r["stream"] == "depth"],
            "B": [r["payload"].decode() for r in frames
                  if r["symbol"] in ("700.HK", "BTCUSDT") and r["stream"] == "trades"]}
    async with ReplayServer(root, "alltick", speed=10) as server:
        async def client(codes: list[str], cmd: int) -> list[str]:
            async with connect(server.url) as ws:
                await ws.send(subscribe(codes, cmd))
                return await asyncio.wait_for(take_pushes(ws), 15)

        got_a, got_b = await asyncio.gather(client(["AAPL.US"], 22002),
                                            client(["700.HK", "BTCUSDT"], 22004))
    assert want["A"] and want["B"]
    assert got_a == want["A"] and got_b == want["B"]
    assert server.stats.started == 2 and server.stats.finished == 2


@pytest.mark.timeout(300)        # two waits of up to HANG_S each (1.6 s in all when quiet)
async def test_a_slow_client_waits_without_delaying_another_or_growing_memory(
        tmp_path: Path) -> None:
    payloads = synthetic_store(tmp_path, [1] * 8000, ["A.US"], pad=1500)    # 8000 x 1.7 kB
    queue = 64
    # the clients send no heartbeat: AllTick's 30 s idle close would end a replay that a
    # starved machine has not finished by then, as if it had ended
    async with (ReplayServer(tmp_path, "alltick", speed="max", queue_frames=queue,
                             options={"idle_timeout": 2 * HANG_S}) as server,
                connect(server.url, max_queue=4) as slow):
        await slow.send(subscribe(["A.US"]))
        await slow.recv()                              # the ack; then it stops reading
        await until(lambda: server.stats.started >= 1, HANG_S, "the slow client's replay")
        async with connect(server.url) as fast:
            await fast.send(subscribe(["A.US"]))
            got_fast = await asyncio.wait_for(take_pushes(fast), HANG_S)
            assert fast.close_reason == "end of replay"
        assert len(got_fast) == len(payloads)
        # the slow client's replay is paused, not dropped, and its queue stays bounded
        [conn] = [c for c in server.server.clients]
        assert conn.queue.qsize() <= queue
        assert server.stats.per_client[0] < len(payloads)
        assert server.stats.finished == 1
        got_slow = await asyncio.wait_for(take_pushes(slow), HANG_S)
        assert slow.close_reason == "end of replay"
    assert [m.encode() for m in got_slow] == payloads
    assert server.stats.finished == 2


TOKEN = "SERVE-TOKEN-7f6e5d4c3b"


async def _refused(venue: str, url: str) -> tuple[list[Any], int | None]:
    """What a client with a wrong token sees: the frames, then the close code."""
    headers = {}
    if venue == "alltick":
        url += "?token=wrong"
    elif venue == "finazon":
        url += "?apikey=wrong"
    elif venue == "hedgetech":
        url += "?contract_names=X"
        headers = {"Authorization": "wrong"}
    got: list[Any] = []
    async with connect(url, additional_headers=headers) as ws:
        if venue == "noren":
            await ws.send(json.dumps({"t": "c", "uid": "U1", "actid": "U1",
                                      "susertoken": "wrong", "source": "API"}))
            got.append(json.loads(await ws.recv()))
            return got, None
        try:
            async for msg in ws:
                got.append(json.loads(msg))
        except ConnectionClosed:
            pass
        return got, ws.close_code


@pytest.mark.parametrize("venue", ["alltick", "finazon", "hedgetech", "noren"])
async def test_a_wrong_token_is_refused_as_the_venue_refuses_it(
        venue: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = await store(venue, tmp_path_factory.getbasetemp())
    async with ReplayServer(root, venue, speed="max", token=TOKEN) as server:
        got, code = await asyncio.wait_for(_refused(venue, server.url), 10)
    expected = {
        "alltick": ([{"ret": 401, "msg": "token invalid"}], 1008),
        "finazon": ([{"status": "error", "message": "Invalid API key"}], 1008),
        "hedgetech": ([], 1008),
        "noren": ([{"t": "ck", "s": "NOT_OK", "emsg": "Invalid Session Key"}], None),
    }
    assert (got, code) == expected[venue]
    assert server.stats.started == 0


async def test_the_right_token_is_served(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = await store("alltick", tmp_path_factory.getbasetemp())
    async with (ReplayServer(root, "alltick", speed="max", token=TOKEN) as server,
                connect(f"{server.url}?token={TOKEN}") as ws):
        await ws.send(subscribe(["BTCUSDT"]))
        got = await asyncio.wait_for(take_pushes(ws), 10)
    assert got and all('"BTCUSDT"' in m for m in got)


def test_cli_prints_the_url_first_serves_and_never_shows_the_token(tmp_path: Path) -> None:
    payloads = synthetic_store(tmp_path, [5] * 50, ["A.US", "B.US"])
    env = {**os.environ, "TICKREC_SERVE_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "tickrec", "-v", "serve", "alltick", "--root",
                             str(tmp_path), "--speed", "max", "--symbols", "B.US"],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/quote-stock-b-ws-api")

        async def clients() -> tuple[list[str], list[Any]]:
            async with connect(f"{url}?token={TOKEN}") as ws:
                await ws.send(subscribe(["A.US", "B.US"]))
                got = await asyncio.wait_for(take_pushes(ws), 10)
            refused, _ = await _refused("alltick", url)
            return got, refused

        got, refused = asyncio.run(clients())
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert [m.encode() for m in got] == payloads[1::2]        # --symbols B.US
    assert refused == [{"ret": 401, "msg": "token invalid"}]
    assert "served 1 replay(s) to 1 client(s), 25 frames" in err
    assert TOKEN not in out + err and "Traceback" not in err
    bad = subprocess.run([sys.executable, "-m", "tickrec", "serve", "alltick", "--root",
                          str(tmp_path), "--speed", "fast"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert bad.returncode == 2 and "bad speed" in bad.stderr and "Traceback" not in bad.stderr


async def test_an_unreadable_store_file_ends_the_replay_with_1011_not_a_hang(
        tmp_path: Path) -> None:
    synthetic_store(tmp_path, [5] * 20, ["A.US"])
    [part] = (tmp_path / "raw" / "venue=alltick").iterdir()
    (part / "r-1.parquet").write_bytes(b"PAR1 not parquet at all")
    async with ReplayServer(tmp_path, "alltick", speed="max") as server:
        for _ in range(2):                          # the server keeps serving
            async with connect(server.url) as ws:
                await ws.send(subscribe(["A.US"]))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(take_pushes(ws), 10)
                assert (ws.close_code, ws.close_reason) == (1011, "replay failed")
    assert server.stats.started == 2 and server.stats.finished == 0
