"""Simulator → recorder → store, over loopback, with the simulator's faults."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from schemas.errors import PermanentFeedError
from storage.journal import read_journal
from tests.helpers import read_table, record_sim

SYMBOLS = ["AAPL.US", "700.HK"]


async def test_accounting_nothing_disappears_without_a_gap_row(tmp_path: Path) -> None:
    # the market starts once both subscriptions are in force: every step reaches the
    # recorder, faults included; 2.75 s after the disconnect to resubscribe and record
    sim, rec = await record_sim(tmp_path, SYMBOLS, rate=400, steps=1800,
                                faults="skip@100,skip@101,dup@200,malformed@300,disconnect@700")
    raw = read_table(tmp_path, "raw")
    data = read_table(tmp_path, "trades") + read_table(tmp_path, "book")
    gaps = read_table(tmp_path, "gaps")
    sessions = read_table(tmp_path, "sessions")
    assert len(sessions) == 2 == rec.connections

    # every frame the simulator sent is a row; the malformed one is a rejected gap
    rows_by_symbol = Counter(r["symbol"] for r in data)
    for sym in SYMBOLS:
        assert rows_by_symbol[sym] == sim.stats[sym].delivered, sym
    assert sum(1 for g in gaps if g["kind"] == "rejected") == sim.malformed_sent == 1
    assert sum(1 for g in gaps if g["kind"] == "duplicate") == 1

    # the identity: between the first frame after both subscriptions were acknowledged and
    # the last frame, every sequence number is a row or counted missing in a gap row
    first_session = sessions[0]["session"]
    ack = next(r for r in raw if r["session"] == first_session and b'"cmd_id":22005' in r["payload"])
    for sym in SYMBOLS:
        seqs = [r["seq"] for r in data if r["symbol"] == sym]
        c0 = min(r["seq"] for r in data if r["symbol"] == sym and r["ts_recv"] > ack["ts_recv"])
        last = max(seqs)
        assert c0 == 1, sym                 # the market waited for the subscriptions
        distinct = len({s for s in seqs if c0 <= s <= last})
        missing = sum(g["missing"] or 0 for g in gaps if g["symbol"] == sym
                      and g["kind"] in ("sequence", "disconnect"))
        assert distinct + missing == last - c0 + 1, sym
    skipped = sum(len(sim.stats[s].skipped) for s in SYMBOLS)
    assert skipped == 2
    # the disconnect: one gap per symbol, bounded by the last frame before and first after
    disc = [g for g in gaps if g["kind"] == "disconnect"]
    assert sorted(g["symbol"] for g in disc) == sorted(SYMBOLS)
    for g in disc:
        assert g["ts_start"] < g["ts_end"]
        assert g["session"] == sessions[1]["session"]
    # every frame in both directions is in raw, and raw is keyed by (session, frame)
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw)
    assert sum(s["frames_in"] for s in sessions) == sum(1 for r in raw if r["direction"] == "in")


async def test_bad_token_stops_the_feed_without_a_reconnect_loop(tmp_path: Path) -> None:
    with pytest.raises(PermanentFeedError, match="401"):
        await record_sim(tmp_path, SYMBOLS, steps=400, token="right",
                         credentials={"token": "wrong-token-123"})
    sessions = read_table(tmp_path, "sessions")
    assert len(sessions) == 1
    assert "wrong-token-123" not in str(sessions)


async def test_half_open_connection_is_noticed_by_the_watchdog(tmp_path: Path) -> None:
    _sim, rec = await record_sim(tmp_path, SYMBOLS, rate=300, steps=1800, faults="stall@600:4",
                                idle_timeout=1.5)
    sessions = read_table(tmp_path, "sessions")
    assert rec.connections >= 2
    assert "watchdog" in (sessions[0]["close_reason"] or "")
    kinds = Counter(g["kind"] for g in read_table(tmp_path, "gaps"))
    assert kinds["disconnect"] == len(SYMBOLS)


async def test_the_token_never_reaches_the_store_or_the_journal(tmp_path: Path) -> None:
    token = "TOKEN-9f8e7d6c5b4a"
    await record_sim(tmp_path, SYMBOLS, steps=300, credentials={"token": token})
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    for table in ("raw", "sessions"):
        assert token not in str(read_table(tmp_path, table))
    for run in (tmp_path / "journal" / "alltick").iterdir():
        if run.is_dir():
            records, damage = read_journal(run)
            assert not damage
            assert all(token.encode() not in r.payload for r in records)
            assert any(b"token=***" in r.payload for r in records if r.kind == "open")


async def test_live_feed_yields_the_events_it_records(tmp_path: Path) -> None:
    from recorder import connect
    from replay.sim.server import Simulator, make_adapter
    sim = Simulator(make_adapter("alltick"), SYMBOLS, rate=300, steps=900, seed=3)
    await sim.start()
    got = []
    try:
        async with connect("alltick", url=sim.url, symbols=SYMBOLS, root=tmp_path,
                           flush_seconds=1.0) as feed:
            async for ev in feed:
                got.append(ev)
                if len(got) >= 50:
                    break
    finally:
        await sim.stop()
    assert len(got) == 50 and {e.symbol for e in got} <= set(SYMBOLS)
    stored = {(r["session"], r["frame"]) for r in read_table(tmp_path, "trades")
              + read_table(tmp_path, "book")}
    assert all((e.session, e.frame) in stored for e in got if e.TABLE in ("trades", "book"))
    _ = asyncio
