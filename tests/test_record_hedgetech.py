"""HedgeTech end to end: simulator → recorder → store, IME and TSE/IFB, Persian names."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay.sim.hedgetech import TSE_PATH
from schemas.errors import PermanentFeedError
from storage.catalog import run_query
from tests.helpers import LoopLag, read_table, record_sim, redecode, stored_keys
from tickrec.cli import main

CONTRACTS = ["سکه-طلا-۱۴۰۴", "زعفران-۱۴۰۴"]
NS = 1_000_000_000
TOKEN = "eyJhbGciOiJIUzI1NiJ9.HEDGETECH-JWT-4b5c6d"
ALWAYS_OPEN = {"schedule": None}          # tests run at any hour: no trading-hours schedule


async def test_ime_snapshots_become_book_and_tickers_rows(tmp_path: Path) -> None:
    sim, rec = await record_sim(tmp_path, CONTRACTS, venue="hedgetech", rate=200, steps=400,
                                faults="dup@100,malformed@150,skip@200", token=TOKEN,
                                credentials={"token": TOKEN}, options=ALWAYS_OPEN)
    book, tickers = read_table(tmp_path, "book"), read_table(tmp_path, "tickers")
    assert rec.connections == 1
    for sym in CONTRACTS:       # one snapshot = one book row + one tickers row, nothing lost
        assert sum(r["symbol"] == sym for r in book) == sim.stats[sym].delivered > 100
        assert sum(r["symbol"] == sym for r in tickers) == sim.stats[sym].delivered
    assert all(r["depth"] in (2, 3) and len(r["bid_px"]) == r["depth"] for r in book)
    assert any(r["depth"] == 2 for r in book)              # the zero third level is no level
    assert all(abs(r["ts_event"] - r["ts_recv"]) < 2 * NS for r in book)  # naive = Tehran time
    assert all(r["lower_limit"] < r["upper_limit"] for r in tickers)
    assert all(r["open_interest"] is not None for r in tickers)
    assert all("trade_count" in json.loads(r["extras"]) for r in tickers)
    assert [g["kind"] for g in read_table(tmp_path, "gaps")] == ["rejected"]

    # Persian names round-trip unchanged through Parquet, DuckDB and `tickrec query`
    names = run_query(tmp_path, "SELECT DISTINCT symbol FROM book ORDER BY symbol")
    assert names.column(0).to_pylist() == sorted(CONTRACTS)
    sql = f"SELECT count(*) AS n FROM tickers WHERE symbol = '{CONTRACTS[0]}'"
    result = CliRunner().invoke(main, ["query", sql, "--root", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"n": sim.stats[CONTRACTS[0]].delivered}
    result = CliRunner().invoke(main, ["query", "SELECT DISTINCT symbol FROM book ORDER BY 1",
                                       "--root", str(tmp_path), "--format", "csv"])
    assert result.output.split() == ["symbol"] + sorted(CONTRACTS)

    # the token is never stored: not in any file written, not in the sessions' urls
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    [session] = read_table(tmp_path, "sessions")
    assert "contract_names=" in session["url"] and session["subscriptions"] == CONTRACTS


async def test_tse_channels_map_to_book_bars_and_tickers(tmp_path: Path) -> None:
    symbols = ["فملی", "خودرو"]
    channels = "best-limit,order-book,ohlcv-last-1m,aggregate,contract-info"
    sim, _rec = await record_sim(tmp_path, symbols, venue="hedgetech", rate=150, steps=240,
                                adapter_options={"path": TSE_PATH},
                                options={**ALWAYS_OPEN, "channels": channels})
    rows = {t: read_table(tmp_path, t) for t in ("book", "bars", "tickers")}
    for sym in symbols:         # one message = one row, five channels per snapshot
        n = sim.stats[sym].delivered
        assert n > 100 and n % 5 == 0
        assert sum(r["symbol"] == sym for t in rows.values() for r in t) == n
        assert sum(r["symbol"] == sym for r in rows["book"]) == 2 * n // 5
        assert sum(r["symbol"] == sym for r in rows["bars"]) == n // 5
    assert all(r["bid_n"] is not None and len(r["bid_n"]) == r["depth"] == 5 for r in rows["book"])
    assert all(r["interval"] == "1m" and r["ts_event"] % (60 * NS) == 0 for r in rows["bars"])
    with_oi = [r for r in rows["tickers"] if r["open_interest"] is not None]
    assert len(with_oi) == len(rows["tickers"]) // 2           # contract-info rows
    assert not read_table(tmp_path, "gaps")


async def test_other_drops_reconnect_and_are_disconnect_gaps(tmp_path: Path) -> None:
    _sim, rec = await record_sim(tmp_path, CONTRACTS, venue="hedgetech", rate=200, steps=300,
                                faults="disconnect@120", options=ALWAYS_OPEN)
    sessions = read_table(tmp_path, "sessions")
    assert rec.connections == 2 == len(sessions)
    gaps = read_table(tmp_path, "gaps")
    assert sorted(g["symbol"] for g in gaps) == sorted(CONTRACTS)
    assert {(g["kind"], g["session"]) for g in gaps} == {("disconnect", sessions[1]["session"])}
    assert all(g["ts_start"] < g["ts_end"] for g in gaps)


@pytest.mark.parametrize("case", ["bad token", "unknown contract"])
async def test_close_1008_stops_the_feed_with_one_session_and_no_retry(tmp_path: Path,
                                                                       case: str) -> None:
    started = time.monotonic()
    with pytest.raises(PermanentFeedError) as err:
        if case == "bad token":
            await record_sim(tmp_path, CONTRACTS, venue="hedgetech", rate=50, steps=200,
                             token=TOKEN, credentials={"token": "not-the-token-9z"})
        else:
            await record_sim(tmp_path, CONTRACTS, venue="hedgetech", rate=50, steps=200,
                             rec_symbols=["نفت-۱۴۰۵"])
    message = str(err.value)
    assert "\n" not in message and "1008" in message
    assert ("invalid or missing token" if case == "bad token" else "نفت-۱۴۰۵") in message
    assert time.monotonic() - started < 3.0           # stopped at once, no reconnect loop
    [session] = read_table(tmp_path, "sessions")
    assert session["close_code"] == 1008 and session["close_reason"]
    assert not read_table(tmp_path, "book")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"not-the-token-9z" not in path.read_bytes()


async def test_a_stall_shorter_than_the_watchdog_is_one_stale_gap(tmp_path: Path) -> None:
    # each contract updates every 10 ms; stale after 1.5 s; the stall lasts 2.5 s
    async with LoopLag() as lag:        # a starved loop reads the frames around it late
        _sim, rec = await record_sim(tmp_path, CONTRACTS, venue="hedgetech", rate=200, steps=900,
                                    faults="stall@200:2.5",
                                    options={**ALWAYS_OPEN, "stale_after": 1.5})
    assert rec.connections == 1
    book = read_table(tmp_path, "book")
    gaps = read_table(tmp_path, "gaps")
    assert Counter(g["symbol"] for g in gaps) == Counter(CONTRACTS)
    for g in gaps:
        assert g["kind"] == "stale" and g["stream"] == f"{g['symbol']}|IME Stream"
        mine = [r["ts_recv"] for r in book if r["symbol"] == g["symbol"]]
        i = mine.index(g["ts_end"])
        assert mine[i - 1] == g["ts_start"]
        assert (2.3 - lag.max) * NS < g["ts_end"] - g["ts_start"] < (4.5 + lag.max) * NS
    again = redecode(tmp_path, "hedgetech")          # stale_after and schedule were recorded
    assert again["gaps"] == stored_keys(tmp_path, "gaps")
    assert again["book"] == stored_keys(tmp_path, "book")
