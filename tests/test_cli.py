"""The command line: one-line errors, read-only queries, parse and verify."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from schemas.venues.alltick import encode_depth, encode_trade
from tests.helpers import record_sim
from tickrec.cli import main


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    asyncio.run(record_sim(root, ["AAPL.US", "700.HK"], rate=400, steps=1200,
                           faults="skip@700,malformed@800"))
    return root


@pytest.mark.parametrize("args, needle", [
    (["record", "nasdaq", "--url", "ws://x", "--symbols", "A"], "nasdaq"),
    (["query", "select 1", "--root", "/does/not/exist"], "does not exist"),
    (["gaps", "--root", "/does/not/exist"], "does not exist"),
    (["verify", "--root", "/does/not/exist"], "does not exist"),
    (["sim", "alltick", "--faults", "explode@3"], "unknown fault"),
])
def test_bad_input_is_one_line_and_non_zero(args: list[str], needle: str) -> None:
    code, out, err = run(*args)
    assert code != 0
    text = out + err
    assert needle in text and "Traceback" not in text
    assert len(err.strip().splitlines()) <= 3


def test_query_views_exist_before_anything_was_recorded(tmp_path: Path) -> None:
    for table in ("raw", "trades", "book", "tickers", "bars", "bars_final", "gaps", "sessions"):
        code, out, err = run("query", f"select count(*) as n from {table}", "--root", str(tmp_path),
                             "--format", "json")
        assert code == 0, err
        assert json.loads(out) == {"n": 0}


def test_query_formats_and_vwap(store: Path) -> None:
    sql = ("select symbol, sum(price*size)/sum(size) as vwap, count(*) as n from trades "
           "group by symbol order by symbol")
    code, out, _ = run("query", sql, "--root", str(store), "--format", "csv")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "symbol,vwap,n" and len(lines) == 3
    code, out, _ = run("query", "select venue, date, ts_recv from trades limit 1", "--root",
                       str(store), "--format", "json")
    row = json.loads(out)
    assert row["venue"] == "alltick" and len(row["date"]) == 10 and "T" in row["ts_recv"] or " " in row["ts_recv"]


@pytest.mark.parametrize("sql", ["copy (select 1) to 'x.csv'", "delete from trades",
                                 "create table t as select 1", "attach 'x.db'"])
def test_query_cannot_modify_the_store(store: Path, sql: str) -> None:
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    code, _, err = run("query", sql, "--root", str(store))
    assert code != 0 and "read-only" in err
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_failing_sql_is_one_line(store: Path) -> None:
    code, _, err = run("query", "select nope from trades", "--root", str(store))
    assert code == 2 and err.startswith("tickrec: error: SQL error") and len(err.splitlines()) == 1


def test_parse_frames_to_events_keeping_state() -> None:
    frames = "\n".join([encode_trade("A", 1, 1700000000000, 10.0, 5, 1),
                        encode_trade("A", 1, 1700000000000, 10.0, 5, 1),
                        "not json",
                        encode_depth("A", 2, 1700000000000, [(9.9, 1)], [(10.1, 2)])])
    code, out, err = run("parse", "alltick", input=frames + "\n")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["trades", "gaps", "trades", "gaps", "book"]
    assert events[1]["kind"] == "duplicate" and events[3]["kind"] == "rejected"
    assert events[4]["bid_px"] == [9.9]


def test_gap_report_names_the_skip_and_what_is_detectable(store: Path) -> None:
    code, out, _ = run("gaps", "--root", str(store), "--venue", "alltick")
    assert code == 0
    assert "sequence" in out and "rejected" in out
    assert "both subscribed" in out


def test_verify_passes_then_catches_a_changed_row(store: Path, tmp_path: Path) -> None:
    code, out, _ = run("verify", "--root", str(store))
    assert code == 0 and out.strip().endswith("ok")
    copy = tmp_path / "copy"
    os.system(f"cp -r {store} {copy}")
    victim = min(copy.glob("trades/venue=alltick/date=*/*.parquet"))
    table = pq.read_table(victim)
    price = table.column("price").to_pylist()
    price[0] = (price[0] or 0) + 1.0
    table = table.set_column(table.schema.get_field_index("price"), "price",
                             __import__("pyarrow").array(price, type=table.schema.field("price").type))
    pq.write_table(table, victim)
    code, out, _ = run("verify", "--root", str(copy))
    assert code == 1 and "PROBLEM: alltick trades" in out


def test_replay_digest_agrees_across_speeds_and_lines_are_events(store: Path) -> None:
    digests = set()
    for speed in ("max", "10"):
        code, out, err = run("replay", "--venue", "alltick", "--root", str(store), "--speed", speed,
                             "--digest")
        assert code == 0, err
        digests.add(out.strip())
    assert len(digests) == 1
    code, out, _ = run("replay", "--venue", "alltick", "--root", str(store), "--speed", "max",
                       "--symbols", "AAPL.US")
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all(e["symbol"] in ("AAPL.US",) for e in events)
    keys = [(e["ts_recv"], e["session"], e["frame"], e["pos"]) for e in events]
    assert keys == sorted(keys)
    code, out, _ = run("replay", "--venue", "alltick", "--root", str(store), "--speed", "max",
                       "--kind", "raw")
    assert json.loads(out.splitlines()[0])["kind"] == "open"


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = run("demo", "--root", str(tmp_path))
    assert code == 2 and "not empty" in err
    assert (tmp_path / "precious.txt").exists()


def test_verify_notes_a_run_being_recorded_and_flags_a_dead_one(tmp_path: Path) -> None:
    import fcntl
    run_dir = tmp_path / "journal" / "alltick" / "r1"
    run_dir.mkdir(parents=True)
    with open(run_dir / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out, _ = run("verify", "--root", str(tmp_path))
        assert code == 0 and "being recorded now" in out
    code, out, _ = run("verify", "--root", str(tmp_path))
    assert code == 1 and "not sealed into Parquet" in out
