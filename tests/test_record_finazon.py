"""Finazon end to end: simulator → recorder → store, with the simulator's faults.

The simulator runs on virtual seconds (``rate`` of them per real second) and
``bar_seconds`` short bars, so a test sees many bars and reconnects in a few
seconds of wall time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from schemas.errors import PermanentFeedError
from storage.catalog import run_query
from tests.helpers import LoopLag, read_table, record_sim, redecode, stored_keys

SYMBOLS = ["AAPL", "MSFT"]
NS = 1_000_000_000


async def test_every_update_delivered_is_a_row(tmp_path: Path) -> None:
    sim, rec = await record_sim(tmp_path, SYMBOLS, venue="finazon", rate=100, steps=200,
                                adapter_options={"bar_seconds": 2},
                                faults="dup@40,malformed@60,skip@80")
    bars = read_table(tmp_path, "bars")
    gaps = read_table(tmp_path, "gaps")
    assert len(read_table(tmp_path, "sessions")) == 1 == rec.connections
    # every update the simulator delivered is a row (the duplicate too), nothing else is
    per_symbol = Counter(b["symbol"] for b in bars)
    for sym in SYMBOLS:
        assert per_symbol[sym] == sim.stats[sym].delivered > 100, sym
        assert sim.stats[sym].duplicates == 1
    assert {b["interval"] for b in bars} == {"1m"}
    assert all(b["ts_event"] % (60 * NS) == 0 for b in bars)
    # a skipped second is within 3 x the frequency: no gap; the broken frame is rejected
    assert [g["kind"] for g in gaps] == ["rejected"] and sim.malformed_sent == 1


async def test_a_disconnect_gap_counts_the_whole_bars_it_swallowed(tmp_path: Path) -> None:
    # The outage must swallow whole bars in market time. The simulator catches up on
    # steps its loop fell behind on, and sends them to whoever is connected then, so a
    # loop held up for the 0.2 s reconnect floor (a fresh clone's run, under load) once
    # left no bar missing: a 1 s floor is 100 steps of 2-step bars.
    sim, rec = await record_sim(tmp_path, SYMBOLS, venue="finazon", rate=100, steps=260,
                                adapter_options={"bar_seconds": 2}, faults="disconnect@60",
                                reconnect_min=1.0)
    bars = read_table(tmp_path, "bars")
    gaps = read_table(tmp_path, "gaps")
    sessions = read_table(tmp_path, "sessions")
    assert len(sessions) == 2 == rec.connections
    # frames in flight when the connection is cut are lost with it (and cannot be
    # counted: Finazon has no sequence numbers); nothing else is
    for sym in SYMBOLS:
        assert 0 < sum(b["symbol"] == sym for b in bars) <= sim.stats[sym].delivered
    # one gap per symbol, bounded by the updates around the outage; 'missing' is the
    # number of whole bars between the bar before and the bar after
    assert sorted(g["symbol"] for g in gaps) == SYMBOLS
    assert {g["kind"] for g in gaps} == {"disconnect"}
    for g in gaps:
        mine = [b for b in bars if b["symbol"] == g["symbol"]]
        before = max((b for b in mine if b["ts_recv"] <= g["ts_start"]), key=lambda b: b["ts_recv"])
        after = min((b for b in mine if b["ts_recv"] >= g["ts_end"]), key=lambda b: b["ts_recv"])
        assert before["ts_recv"] == g["ts_start"] and after["ts_recv"] == g["ts_end"]
        assert before["session"] == sessions[0]["session"] != after["session"] == g["session"]
        skipped = (after["ts_event"] - before["ts_event"]) // (60 * NS) - 1
        assert g["missing"] == skipped >= 1      # a reconnect takes longer than a 2 s bar
        assert f"{skipped} whole 1m bar(s) never seen" in g["detail"]
    # the second session decodes from its own raw frames (the open record carries the state)
    assert redecode(tmp_path, "finazon")["gaps"] == stored_keys(tmp_path, "gaps")


async def test_bars_final_keeps_the_last_update_of_each_bar(tmp_path: Path) -> None:
    await record_sim(tmp_path, SYMBOLS, venue="finazon", rate=100, steps=150,
                     adapter_options={"bar_seconds": 5})
    bars = read_table(tmp_path, "bars")
    last: dict[tuple[str, int], dict[str, object]] = {}
    for b in bars:                                   # replay order: the last one wins
        last[(b["symbol"], b["ts_event"])] = b
    final = run_query(tmp_path, """
        SELECT symbol, epoch_ns(ts_event) AS t, close, volume, epoch_ns(ts_recv) AS r
        FROM bars_final WHERE venue = 'finazon' ORDER BY symbol, t""").to_pylist()
    assert len(final) == len(last) < len(bars)
    for row in final:
        b = last[(row["symbol"], row["t"])]
        assert (row["close"], row["volume"], row["r"]) == (b["close"], b["volume"], b["ts_recv"])


async def test_a_stall_shorter_than_the_watchdog_is_one_stale_gap(tmp_path: Path) -> None:
    # 40 virtual seconds per real second; stale after 1.5 x the 1 s frequency (1.5 s of
    # wall time); the stall is 2.5 s, the watchdog (45 s) never fires
    async with LoopLag() as lag:        # a starved loop reads the frames around it late
        _sim, rec = await record_sim(tmp_path, SYMBOLS, venue="finazon", rate=40, steps=180,
                                    adapter_options={"bar_seconds": 60}, faults="stall@40:2.5",
                                    options={"stale_factor": 1.5})
    assert rec.connections == 1
    bars = read_table(tmp_path, "bars")
    gaps = read_table(tmp_path, "gaps")
    assert [g["kind"] for g in gaps] == ["stale", "stale"]
    for g in gaps:
        mine = [b["ts_recv"] for b in bars if b["symbol"] == g["symbol"]]
        i = mine.index(g["ts_end"])                # the first update after the silence …
        assert mine[i - 1] == g["ts_start"]        # … and the last one before it
        assert (2.3 - lag.max) * NS < g["ts_end"] - g["ts_start"] < (4.5 + lag.max) * NS
        assert g["missing"] == 0 or "bar(s) never seen" in g["detail"]
    # the raw frames alone give the same rows: stale_factor travels in the open record
    again = redecode(tmp_path, "finazon")
    assert again["gaps"] == stored_keys(tmp_path, "gaps")
    assert again["bars"] == stored_keys(tmp_path, "bars")


async def test_a_bad_key_stops_the_feed_and_the_key_is_never_stored(tmp_path: Path) -> None:
    with pytest.raises(PermanentFeedError, match="Invalid API key"):
        await record_sim(tmp_path / "bad", SYMBOLS, venue="finazon", rate=50, steps=100,
                         token="right", credentials={"token": "wrong-key-123"})
    sessions = read_table(tmp_path / "bad", "sessions")
    assert len(sessions) == 1

    key = "FINAZON-KEY-7c1d2e3f"
    await record_sim(tmp_path / "good", SYMBOLS, venue="finazon", rate=50, steps=60,
                     token=key, credentials={"token": key})
    assert read_table(tmp_path / "good", "bars")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
            assert b"wrong-key-123" not in path.read_bytes(), path
    assert all("apikey=***" in s["url"] for s in read_table(tmp_path / "good", "sessions"))
