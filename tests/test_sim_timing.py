"""What a simulator's client receives depends on the seed and the fault plan, not on
the machine's speed: the market starts when it is subscribed (however late the
client connects), and a stall silences a connection for its whole length (however
far behind its writer was). The tests built on ``record_sim`` rely on both."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

import replay.sim.server as sim_server
from replay.sim.server import Simulator, make_adapter
from tests.helpers import until

SYMBOLS = ["AAPL.US", "700.HK"]


def subscribe(cmd: int, seq_id: int) -> str:
    codes = [{"code": s, "depth_level": 5} for s in SYMBOLS]
    return json.dumps({"cmd_id": cmd, "seq_id": seq_id, "trace": "t", "data": {"symbol_list": codes}})


async def test_a_late_subscriber_gets_every_step_from_the_first() -> None:
    sim = Simulator(make_adapter("alltick", request_interval=0.0), SYMBOLS, rate=500, steps=300)
    await sim.start()
    try:
        await asyncio.sleep(0.3)        # a slow client: nothing may be played meanwhile
        assert not sim.started.is_set() and sim.step == 0
        async with connect(sim.url) as ws:
            await ws.send(subscribe(22002, 1))          # depth only: not yet an audience
            assert json.loads(await ws.recv())["cmd_id"] == 22003
            assert not sim.started.is_set()
            await ws.send(subscribe(22004, 2))          # and trades
            assert json.loads(await ws.recv())["cmd_id"] == 22005
            pushes = []
            while len(pushes) < 300:
                pushes.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    finally:
        await sim.stop()
    assert sim.started.is_set() and sim.step == 300
    for sym in SYMBOLS:
        seqs = [p["data"]["seq"] for p in pushes if p["data"]["code"] == sym]
        assert [int(s) for s in seqs] == list(range(1, len(seqs) + 1)), sym
        assert sim.stats[sym].first_seq == 1 and sim.stats[sym].delivered == len(seqs)


async def test_a_partial_subscriber_starts_the_market_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_server, "START_GRACE_S", 0.3)
    sim = Simulator(make_adapter("alltick", request_interval=0.0), SYMBOLS, rate=500, steps=50)
    await sim.start()
    try:
        async with connect(sim.url, max_queue=None) as ws:     # (unread pushes: close at once)
            await ws.send(subscribe(22002, 1))          # depth only, never trades
            assert json.loads(await ws.recv())["cmd_id"] == 22003
            await until(sim.done.is_set, 30, "the last step")
            assert json.loads(await ws.recv())["cmd_id"] == 22999     # depth pushes arrive
    finally:
        await sim.stop()
    assert sim.step == 50


async def test_an_empty_audience_starts_the_market_at_once() -> None:
    sim = Simulator(make_adapter("alltick"), SYMBOLS, rate=500, steps=20, audience=())
    await sim.start()
    try:
        await until(sim.done.is_set, 30, "the last step")
    finally:
        await sim.stop()
    assert sim.step == 20 and all(st.delivered == 0 for st in sim.stats.values())


async def test_a_stall_holds_back_what_was_queued_before_it() -> None:
    """A half-open connection delivers nothing for the stall's length, not even the
    frames its writer had not sent yet when the stall began (a backlog under load)."""
    sim = Simulator(make_adapter("alltick", request_interval=0.0), SYMBOLS, rate=500)
    await sim.start()
    try:
        async with connect(sim.url, max_queue=None) as ws:
            await ws.send(subscribe(22002, 1))
            assert json.loads(await ws.recv())["cmd_id"] == 22003
            [conn] = sim.server.clients
            for i in range(200):               # a backlog, then the stall, in one turn
                conn.send(json.dumps({"cmd_id": 22999, "backlog": i}))
            sim.server.stall(0.8)
            stalled = time.monotonic()
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert time.monotonic() - stalled >= 0.8
            assert first["backlog"] == 0               # held back, then sent in order
    finally:
        await sim.stop()
