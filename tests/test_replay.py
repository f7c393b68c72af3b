"""The in-process replay: order, filters, raw rows, Arrow batches, digests, errors."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replay
from recorder.live import LiveFeed
from replay.digest import replay_sync
from replay.feed import ReplayFeed
from replay.order import is_sorted
from replay.params import parse_time
from replay.rows import Columns, RawRow, _compile, build
from replay.scan import Scan, wide_schema
from schemas.errors import ConfigError, StoreError
from schemas.events import EVENT_CLASSES, EVENT_COLUMNS, Bar, Book, Gap, RawRecord, Ticker, Trade
from schemas.feed import Feed
from schemas.tables import EVENT_TABLES, TABLES
from storage.atomic import write_parquet
from storage.layout import date_of, partition_dir
from storage.writer import StoreWriter, to_arrow

VENUE = "alltick"
MIDNIGHT = 1_714_608_000_000_000_000          # 2024-05-02T00:00:00Z
MS = 1_000_000


# -- building stores ----------------------------------------------------------------------
def row_of(ev: Any) -> tuple[Any, ...]:
    return tuple(getattr(ev, c) for c in EVENT_COLUMNS[ev.TABLE])


def write_store(root: Path, events: Iterable[Any], rnd: random.Random, files: int = 3,
                raw: Sequence[tuple[str, RawRecord]] = ()) -> None:
    """Each (table, date) group shuffled and split into up to ``files`` files whose
    names do not follow time order."""
    groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for ev in events:
        groups.setdefault((ev.TABLE, date_of(ev.ts_recv)), []).append(row_of(ev))
    for session, rec in raw:
        groups.setdefault(("raw", date_of(rec.ts_recv)), []).append(
            (rec.ts_recv, session, rec.frame, rec.direction, rec.kind, rec.payload, rec.note))
    for (table, date), rows in groups.items():
        rows = rows[:]
        rnd.shuffle(rows)
        cuts = sorted(rnd.sample(range(1, len(rows)), min(files, len(rows)) - 1)) \
            if len(rows) > 1 else []
        names = [f"{rnd.getrandbits(32):08x}-{i:06d}.parquet" for i in range(len(cuts) + 1)]
        for name, lo, hi in zip(names, [0] + cuts, cuts + [len(rows)]):
            write_parquet(to_arrow(table, rows[lo:hi]), partition_dir(root, table, VENUE, date) / name)


def order_key(ev: Any) -> tuple[Any, ...]:
    return (*ev.sort_key(), EVENT_TABLES.index(ev.TABLE))


def make_events() -> list[Any]:
    """Two sessions interleaved over midnight, with ties on ts_recv (and on
    ts_recv+session+frame), every table, a connection-level gap (symbol "")."""
    out: list[Any] = []
    common: dict[str, Any] = dict(venue=VENUE, seq=None)
    for i in range(40):
        ts = MIDNIGHT - 100 * MS + (i // 2) * 10 * MS         # pairs share ts_recv
        for session in ("s-b", "s-a"):
            sym = "BTC" if i % 3 else "ETH"
            out.append(Trade(**common, symbol=sym, ts_recv=ts, ts_event=ts - 7, session=session,
                             frame=i, pos=0, price=100.0 + i, size=0.5, side="buy"))
            if i % 4 == 0:     # same frame, next position: a book
                out.append(Book(**common, symbol=sym, ts_recv=ts, ts_event=None, session=session,
                                frame=i, pos=1, depth=2, bid_px=[99.0, 98.5], bid_sz=[1.0, 2.0],
                                ask_px=[101.0, 101.5], ask_sz=[1.5, float("nan")]))
        if i % 10 == 5:
            out.append(Ticker(**common, symbol="ETH", ts_recv=ts + 1, ts_event=None, session="s-a",
                              frame=1000 + i, pos=0, last=3000.0, volume=12.5, extras='{"x":"é"}'))
            out.append(Bar(**common, symbol="BTC", ts_recv=ts + 1, ts_event=ts, session="s-a",
                           frame=1000 + i, pos=1, interval="1m", open=1.0, high=2.0, low=0.5,
                           close=1.5, volume=None))
    out.append(Gap(**common, symbol="", ts_recv=MIDNIGHT - 55 * MS, ts_event=None, session="s-b",
                   frame=500, pos=0, stream="", kind="rejected", ts_start=None, ts_end=None,
                   detail="not json"))
    out.append(Gap(**common, symbol="ETH", ts_recv=MIDNIGHT + 5 * MS, ts_event=None, session="s-a",
                   frame=501, pos=0, stream="ETH", kind="sequence", ts_start=MIDNIGHT - MS,
                   ts_end=MIDNIGHT + 5 * MS, seq_from=10, seq_to=12, missing=3))
    return out


def make_raw() -> list[tuple[str, RawRecord]]:
    out = []
    for i in range(12):
        ts = MIDNIGHT - 90 * MS + (i // 3) * 20 * MS
        out.append(("s-b" if i % 2 else "s-a", RawRecord(ts, i, "in", "text", b'{"n":%d}' % i)))
    out.append(("s-a", RawRecord(MIDNIGHT, 99, "in", "binary", b"\x00\xff\x10", None)))
    out.append(("s-a", RawRecord(MIDNIGHT + 1, 100, "event", "close", b"", '{"code":1000}')))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    root = tmp_path_factory.mktemp("store")
    events = make_events()
    write_store(root, events, random.Random(7), files=3, raw=make_raw())
    # Half-written temp files next to the real ones must never be read.
    hidden = partition_dir(root, "trades", VENUE, "2024-05-02")
    extra = Trade(venue=VENUE, symbol="BTC", ts_recv=MIDNIGHT + 1, ts_event=None, seq=None,
                  session="zz", frame=0, pos=0, price=1.0, size=1.0)
    write_parquet(to_arrow("trades", [row_of(extra)]), hidden / "tmp-source.parquet")
    (hidden / "tmp-source.parquet").rename(hidden / ".run-000009.parquet.tmp")
    return root, sorted(events, key=order_key)


def jsons(events: Iterable[Any]) -> list[str]:
    return [e.to_json() for e in events]


# -- order --------------------------------------------------------------------------------
def test_replay_is_the_sorted_stream(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    got = list(replay_sync(root, VENUE))
    assert jsons(got) == jsons(expected)       # books hold a NaN: NaN != NaN for ==
    assert [e for e in got if e.TABLE != "book"] == [e for e in expected if e.TABLE != "book"]
    assert {type(e) for e in got} == {Trade, Book, Ticker, Bar, Gap}
    assert len({date_of(e.ts_recv) for e in got}) == 2           # both days, one stream
    keys = [order_key(e) for e in got]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_ties_follow_session_frame_pos(store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    got = list(replay_sync(root, VENUE, tables=["trades", "book"]))
    first_ts = [e for e in got if e.ts_recv == MIDNIGHT - 100 * MS]
    assert [(e.session, e.frame, e.pos, e.TABLE) for e in first_ts] == [
        ("s-a", 0, 0, "trades"), ("s-a", 0, 1, "book"), ("s-a", 1, 0, "trades"),
        ("s-b", 0, 0, "trades"), ("s-b", 0, 1, "book"), ("s-b", 1, 0, "trades")]


def test_records_are_exact(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    got = list(replay_sync(root, VENUE, tables=["book", "gaps"]))
    book = next(e for e in got if e.TABLE == "book")
    assert isinstance(book.ts_recv, int) and book.ts_event is None
    assert book.bid_px == [99.0, 98.5] and math.isnan(book.ask_sz[1])
    gap = next(e for e in got if e.TABLE == "gaps" and e.kind == "sequence")
    want = next(e for e in expected if e.TABLE == "gaps" and e.kind == "sequence")
    assert gap == want and isinstance(gap.ts_start, int)


def test_builders_make_the_objects_init_makes() -> None:
    events = make_events()
    for name, cls in EVENT_CLASSES.items():
        mine = [e for e in events if e.TABLE == name]
        table = to_arrow(name, [row_of(e) for e in mine])
        built = build(name, VENUE, table)
        assert all(type(b) is cls for b in built) and jsons(built) == jsons(mine)
        records = list(Columns(name, table).records(VENUE))
        assert all(type(r) is cls for r in records) and jsons(records) == jsons(mine)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Checked:
        venue: str
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")
    make, each = _compile(Checked, ["a"])           # __post_init__: the keyword path
    assert make("v", [1, 2]) == [Checked(venue="v", a=1), Checked(venue="v", a=2)]
    assert list(each("v", iter([1, 2]))) == make("v", [1, 2])
    with pytest.raises(ValueError):
        make("v", [-1])
    with pytest.raises(ValueError):
        list(each("v", [-1]))


def test_hidden_temp_files_are_never_read(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    assert all(e.session != "zz" for e in replay_sync(root, VENUE))
    assert len(list(replay_sync(root, VENUE))) == len(expected)


def write_sealed(root: Path, events: list[Any]) -> None:
    """``events`` as one sealed-style file per (table, date), sorted by (symbol, ts_recv)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in sorted(events, key=lambda e: (e.symbol, e.ts_recv)):
        groups.setdefault((e.TABLE, date_of(e.ts_recv)), []).append(row_of(e))
    for (table, date), rows in groups.items():
        write_parquet(to_arrow(table, rows), partition_dir(root, table, VENUE, date) / "sealed.parquet")


def test_sealed_files_sorted_by_symbol_give_the_same_stream(tmp_path: Path) -> None:
    events = make_events()
    write_sealed(tmp_path, events)
    assert jsons(replay_sync(tmp_path, VENUE)) == jsons(sorted(events, key=order_key))


def test_store_writer_output_replays(tmp_path: Path) -> None:
    """Files written by the recorder's own writer, two runs, several publishes each."""
    events = make_events()
    runs = {"20240501T235900-h-1-aaaaaa": StoreWriter(tmp_path, VENUE, "20240501T235900-h-1-aaaaaa",
                                                      tmp_path / "j1"),
            "20240501T235800-h-2-bbbbbb": StoreWriter(tmp_path, VENUE, "20240501T235800-h-2-bbbbbb",
                                                      tmp_path / "j2")}
    writers = list(runs.values())
    for n, ev in enumerate(sorted(events, key=order_key)):
        w = writers[0] if ev.session == "s-a" else writers[1]
        w.add_event(ev)
        if n % 17 == 0:
            w.mark(n)
            w.publish(w.take())
    for w in writers:
        w.mark(len(events))
        w.publish(w.take())
    assert sum(w.files_published for w in writers) > 6
    assert jsons(replay_sync(tmp_path, VENUE)) == jsons(sorted(events, key=order_key))


# -- filters ------------------------------------------------------------------------------
def test_symbol_filter(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    got = list(replay_sync(root, VENUE, symbols=["ETH"]))
    assert got and jsons(got) == jsons(e for e in expected if e.symbol == "ETH")
    assert not any(e.TABLE == "gaps" and e.symbol == "" for e in got)
    assert any(e.TABLE == "gaps" and e.symbol == "" for e in replay_sync(root, VENUE))
    assert jsons(replay_sync(root, VENUE, symbols="ETH,BTC")) == \
        jsons(e for e in expected if e.symbol in ("ETH", "BTC"))
    assert list(replay_sync(root, VENUE, symbols=["NOPE"])) == []


def test_start_end_half_open_in_every_form(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    start, end = MIDNIGHT - 50 * MS, MIDNIGHT + 50 * MS
    want = jsons(e for e in expected if start <= e.ts_recv < end)
    assert any(e.ts_recv == start for e in expected) and any(e.ts_recv == end for e in expected)
    assert jsons(replay_sync(root, VENUE, start=start, end=end)) == want
    iso = ("2024-05-01T23:59:59.950Z", "2024-05-02T00:00:00.050000000Z")
    assert jsons(replay_sync(root, VENUE, start=iso[0], end=iso[1])) == want
    as_dt = (datetime(2024, 5, 1, 23, 59, 59, 950000, tzinfo=UTC),
             datetime(2024, 5, 2, 0, 0, 0, 50000))                   # naive = UTC
    assert jsons(replay_sync(root, VENUE, start=as_dt[0], end=as_dt[1])) == want
    plus2 = "2024-05-02T02:00:00.05+02:00"
    assert jsons(replay_sync(root, VENUE, start=start, end=plus2)) == want
    assert jsons(replay_sync(root, VENUE, start="2024-05-02")) == \
        jsons(e for e in expected if e.ts_recv >= MIDNIGHT)


def test_a_day_range_reads_one_partition(store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    assert Scan(root, VENUE).dates() == ["2024-05-01", "2024-05-02"]
    assert Scan(root, VENUE, start="2024-05-02").dates() == ["2024-05-02"]
    assert Scan(root, VENUE, end=MIDNIGHT).dates() == ["2024-05-01"]
    assert Scan(root, VENUE, end=MIDNIGHT + 1).dates() == ["2024-05-01", "2024-05-02"]


def test_tables_filter(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    got = list(replay_sync(root, VENUE, tables=["tickers", "bars"]))
    assert jsons(got) == jsons(e for e in expected if e.TABLE in ("tickers", "bars"))
    assert [e.TABLE for e in got][:2] == ["tickers", "bars"]


def test_empty_ranges_yield_nothing(store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    assert list(replay_sync(root, VENUE, start=MIDNIGHT, end=MIDNIGHT)) == []
    assert list(replay_sync(root, VENUE, start=MIDNIGHT, end=MIDNIGHT - 1)) == []
    assert list(replay_sync(root, VENUE, start="2030-01-01")) == []
    assert list(replay_sync(root, "finazon")) == []             # no partition of that venue


def test_rows_outside_their_date_partition_are_skipped_loudly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = make_events()[:4]
    write_store(tmp_path, good, random.Random(1), files=1)
    stray = Trade(venue=VENUE, symbol="BTC", ts_recv=MIDNIGHT + 86_400 * 10**9 * 3, ts_event=None,
                  seq=None, session="s", frame=1, pos=0, price=1.0, size=1.0)
    write_parquet(to_arrow("trades", [row_of(stray)]),
                  partition_dir(tmp_path, "trades", VENUE, "2024-05-01") / "stray.parquet")
    scan = Scan(tmp_path, VENUE)
    with caplog.at_level(logging.WARNING, "tickrec.replay"):
        got = list(scan)
    assert jsons(got) == jsons(sorted(good, key=order_key))
    assert scan.dropped_rows == 1 and "outside that day" in caplog.text


def test_an_unreadable_file_is_a_store_error(tmp_path: Path) -> None:
    write_store(tmp_path, make_events()[:3], random.Random(2), files=1)
    bad = partition_dir(tmp_path, "trades", VENUE, "2024-05-01") / "zz-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError) as info:
        list(replay_sync(tmp_path, VENUE))
    assert "trades" in str(info.value) and "\n" not in str(info.value)


def test_is_sorted_looks_at_every_key() -> None:
    keys = ("ts_recv", "session", "frame", "pos")

    def table(rows: list[tuple[int, str, int, int]]) -> pa.Table:
        return pa.table({k: [r[i] for r in rows] for i, k in enumerate(keys)})
    assert is_sorted(table([]), keys) and is_sorted(table([(1, "a", 0, 0)]), keys)
    assert is_sorted(table([(1, "a", 0, 0), (1, "a", 0, 1), (1, "b", 0, 0), (2, "a", 0, 0)]), keys)
    assert is_sorted(table([(1, "a", 0, 0), (1, "a", 0, 0)]), keys)           # full tie
    assert not is_sorted(table([(1, "a", 0, 1), (1, "a", 0, 0)]), keys)       # pos only
    assert not is_sorted(table([(1, "b", 0, 0), (1, "a", 9, 9)]), keys)
    assert not is_sorted(table([(1, "a", 0, 0), (1, "a", 1, 0), (1, "a", 0, 5)]), keys)
    assert not is_sorted(table([(2, "a", 0, 0), (1, "b", 0, 0)]), keys)


# -- raw rows -----------------------------------------------------------------------------
def test_raw_kind(store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    got = list(replay_sync(root, VENUE, kind="raw"))
    want = sorted(make_raw(), key=lambda sr: (sr[1].ts_recv, sr[0], sr[1].frame))
    assert [(r.session, r.record()) for r in got] == want
    assert all(isinstance(r, RawRow) and r.venue == VENUE for r in got)
    text = got[0].to_dict()
    assert text["encoding"] == "utf-8" and text["payload"].startswith('{"n":')
    binary = next(r for r in got if r.kind == "binary").to_dict()
    assert binary["encoding"] == "base64" and binary["payload"] == "AP8Q"
    assert '"note":"{\\"code\\":1000}"' in got[-1].to_json()
    later = list(replay_sync(root, VENUE, kind="raw", start=MIDNIGHT))
    assert [r.frame for r in later] == [99, 100]


async def test_raw_feed_and_batches(store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    async with replay.open(root, VENUE, kind="raw", speed="max") as feed:
        rows = [r async for r in feed]
    assert rows == list(replay_sync(root, VENUE, kind="raw"))
    batches = list(replay.iter_batches(root, VENUE, kind="raw"))
    table = pa.Table.from_batches(batches)
    assert table.schema == TABLES["raw"]
    assert table.column("frame").to_pylist() == [r.frame for r in rows]


# -- Arrow batches ------------------------------------------------------------------------
def test_batches_match_the_objects(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    batches = list(replay.iter_batches(root, VENUE, batch_rows=7))
    assert max(b.num_rows for b in batches) <= 7
    table = pa.Table.from_batches(batches)
    assert table.schema == wide_schema(EVENT_TABLES)
    assert table.column("table").to_pylist() == [e.TABLE for e in expected]
    assert table.column("ts_recv").cast(pa.int64()).to_pylist() == [e.ts_recv for e in expected]
    assert table.column("price").to_pylist() == [getattr(e, "price", None) for e in expected]
    # Each row of the wide table rebuilds the event it came from.
    rebuilt = []
    for name in EVENT_TABLES:
        mask = pa.compute.equal(table.column("table").cast(pa.string()), name)
        rebuilt += build(name, VENUE, table.filter(mask))
    assert sorted(jsons(rebuilt)) == sorted(jsons(expected))


def test_batches_projection_and_one_table(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    scan = Scan(root, VENUE, tables=["trades"], symbols=["BTC"])
    table = pa.Table.from_batches(list(scan.iter_batches(["ts_recv", "price"])))
    assert table.column_names == ["table", "ts_recv", "price"]
    want = [e for e in expected if e.TABLE == "trades" and e.symbol == "BTC"]
    assert table.column("price").to_pylist() == [e.price for e in want]
    assert set(table.column("table").to_pylist()) == {"trades"}
    with pytest.raises(ConfigError, match="unknown column"):
        scan.iter_batches(["nope"])


def test_wide_schema_has_no_conflicting_columns() -> None:
    schema = wide_schema(EVENT_TABLES)
    assert schema.names[0] == "table" and len(set(schema.names)) == len(schema.names)
    for name in EVENT_TABLES:
        for f in TABLES[name]:
            assert schema.field(f.name).type == f.type


# -- the feed, digests and the protocol -----------------------------------------------------
async def test_virtual_clock_feed(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    seen = []
    async with replay.open(root, VENUE, clock="virtual", start=MIDNIGHT - 10**9) as feed:
        assert feed.now() == MIDNIGHT - 10**9
        async for ev in feed:
            assert feed.now() == ev.ts_recv
            seen.append(ev)
    assert jsons(seen) == jsons(expected)


async def test_digest_is_the_same_at_any_speed_and_twice(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    digests = set()
    for kw in ({"speed": "max"}, {"speed": 10}, {"clock": "virtual"}, {"speed": "max"}):
        async with replay.open(root, VENUE, **kw) as feed:
            digests.add(await replay.adigest(feed))
    digests.add(replay.digest(replay_sync(root, VENUE)))
    assert digests == {replay.digest(expected)}
    assert replay.digest(replay_sync(root, VENUE, symbols=["ETH"])) not in digests
    assert replay.digest([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def test_feed_continues_across_loops_and_stops_after_exit(
        store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    async with replay.open(root, VENUE, speed="max") as feed:
        first = []
        async for ev in feed:
            first.append(ev)
            if len(first) == 5:
                break
        rest = [ev async for ev in feed]
        assert feed.count == len(expected)
    assert jsons(first + rest) == jsons(expected)
    assert [ev async for ev in feed] == []


async def test_feed_in_small_chunks_and_early_exit(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    feed = ReplayFeed(root, VENUE, speed="max", chunk_rows=3)
    async with feed:
        got = [ev async for ev in feed]
    assert jsons(got) == jsons(expected)
    async with ReplayFeed(root, VENUE, speed="max", chunk_rows=2) as feed:
        async for _ in feed:
            break          # leaving with a read-ahead in flight must be clean


async def test_consumer_cancelled_mid_stream(store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    feed = replay.open(root, VENUE, speed=0.001)      # the second event is hours away

    async def consume() -> None:
        async with feed:
            async for _ in feed:
                pass
    task = asyncio.create_task(consume())
    for _ in range(500):
        if feed.count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    assert feed.count == 6          # the first ts_recv holds 6 events; the 7th is far away
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert feed._pending is None and feed._source is None      # __aexit__ ran to the end


def test_both_feeds_satisfy_the_protocol(tmp_path: Path, store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    assert isinstance(replay.open(root, VENUE), Feed)
    assert issubclass(ReplayFeed, Feed) and issubclass(LiveFeed, Feed)
    live = LiveFeed(VENUE, "ws://127.0.0.1:9/", ["BTCUSDT"], tmp_path)
    assert isinstance(live, Feed)
    assert abs(live.now() - datetime.now(UTC).timestamp() * 1e9) < 5e9


# -- errors -------------------------------------------------------------------------------
def test_config_errors_are_one_line(tmp_path: Path, store: tuple[Path, list[Any]]) -> None:
    root, _ = store
    (tmp_path / "notes.txt").write_text("x")
    cases = [
        lambda: replay.open(tmp_path / "missing", VENUE),
        lambda: replay.open(tmp_path / "notes.txt", VENUE),
        lambda: replay.open(tmp_path, VENUE),                           # not a store
        lambda: replay.open(root, "nasdaq"),
        lambda: replay.open(root, VENUE, start="yesterday"),
        lambda: replay.open(root, VENUE, end="2024-13-01"),
        lambda: replay.open(root, VENUE, start=1.5),
        lambda: replay.open(root, VENUE, speed=0),
        lambda: replay.open(root, VENUE, speed="fast"),
        lambda: replay.open(root, VENUE, clock="sundial"),
        lambda: replay.open(root, VENUE, kind="frames"),
        lambda: replay.open(root, VENUE, tables=["orders"]),
        lambda: replay.open(root, VENUE, symbols=[]),
        lambda: replay.open(root, VENUE, kind="raw", symbols=["BTC"]),
        lambda: replay_sync(root, VENUE, tables=["sessions"]),
    ]
    for case in cases:
        with pytest.raises(ConfigError) as info:
            case()
        assert "\n" not in str(info.value) and str(info.value)


def test_parse_time_forms() -> None:
    assert parse_time(None) is None
    assert parse_time(123) == 123 and parse_time("123") == 123
    assert parse_time("2024-05-02") == MIDNIGHT
    assert parse_time("2024-05-02T00:00:00.000000001Z") == MIDNIGHT + 1
    assert parse_time("2024-05-02 01:00+01:00") == MIDNIGHT
    assert parse_time("2024-05-01T19:30:00-04:30") == MIDNIGHT
    assert parse_time(datetime(2024, 5, 2, 2, tzinfo=timezone(timedelta(hours=2)))) == MIDNIGHT
    assert parse_time(datetime(2024, 5, 2).date()) == MIDNIGHT


# -- the store round trip, as a property ------------------------------------------------------
_F = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))
_S = st.one_of(st.none(), st.text(max_size=6))
_LIST = st.lists(st.floats(allow_nan=True, width=64), max_size=3)


@st.composite
def events(draw: st.DrawFn) -> Any:
    table = draw(st.sampled_from(EVENT_TABLES))
    base: dict[str, Any] = dict(
        venue=VENUE, symbol=draw(st.sampled_from(["A", "B", "Ω"] + ([""] if table == "gaps" else []))),
        ts_recv=MIDNIGHT + draw(st.integers(-2, 2)) * MS // 4,      # dense ties, two dates
        ts_event=draw(st.one_of(st.none(), st.integers(0, 2**62))),
        seq=draw(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1))),
        session=draw(st.sampled_from(["s1", "s2", "s10"])),
        frame=draw(st.integers(0, 2)), pos=draw(st.integers(0, 2)))
    if table == "trades":
        return Trade(**base, price=draw(_F), size=draw(_F), turnover=draw(_F),
                     side=draw(st.sampled_from(["buy", "sell", "unknown"])), trade_type=draw(_S),
                     extras=draw(_S))
    if table == "book":
        n = draw(st.integers(0, 3))
        return Book(**base, depth=n, bid_px=draw(_LIST), bid_sz=draw(_LIST), ask_px=draw(_LIST),
                    ask_sz=draw(_LIST), bid_n=draw(st.one_of(st.none(), st.lists(st.integers(0, 9), max_size=3))),
                    ask_n=None)
    if table == "tickers":
        return Ticker(**base, last=draw(_F), open=draw(_F), close=draw(_F), volume=draw(_F),
                      extras=draw(_S))
    if table == "bars":
        return Bar(**base, interval=draw(st.sampled_from(["1m", "1h"])), open=draw(_F),
                   high=draw(_F), low=draw(_F), close=draw(_F), volume=draw(_F))
    return Gap(**base, stream=draw(st.text(max_size=4)), kind=draw(st.sampled_from(["sequence", "rejected"])),
               ts_start=draw(st.one_of(st.none(), st.integers(0, 2**62))), ts_end=None,
               seq_from=draw(st.one_of(st.none(), st.integers(0, 99))), missing=None, detail=draw(_S))


UNIQUE = st.lists(events(), min_size=4, max_size=60, unique_by=lambda e: (e.TABLE, *e.sort_key()))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=UNIQUE, seed=st.integers(0, 2**16), files=st.integers(1, 4))
def test_store_round_trip_property(evs: list[Any], seed: int, files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "trades").mkdir()
        write_store(root, evs, random.Random(seed), files=files)
        got = list(replay_sync(root, VENUE, chunk_rows=7))
        assert jsons(got) == jsons(sorted(evs, key=order_key))
        batches = pa.Table.from_batches(list(Scan(root, VENUE).iter_batches(batch_rows=5)),
                                        schema=wide_schema(EVENT_TABLES))
        assert batches.column("table").to_pylist() == [e.TABLE for e in got]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=UNIQUE, seed=st.integers(0, 2**16),
       symbols=st.one_of(st.none(), st.lists(st.sampled_from(["A", "B", "Ω"]), min_size=1)),
       lo=st.one_of(st.none(), st.integers(-3, 3)), hi=st.one_of(st.none(), st.integers(-3, 3)),
       tables=st.one_of(st.none(), st.lists(st.sampled_from(EVENT_TABLES), min_size=1)))
def test_filters_property(evs: list[Any], seed: int, symbols: list[str] | None, lo: int | None,
                          hi: int | None, tables: list[str] | None) -> None:
    start = None if lo is None else MIDNIGHT + lo * MS // 4
    end = None if hi is None else MIDNIGHT + hi * MS // 4
    want = [e for e in sorted(evs, key=order_key)
            if (symbols is None or e.symbol in symbols)
            and (start is None or e.ts_recv >= start) and (end is None or e.ts_recv < end)
            and (tables is None or e.TABLE in tables)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "journal").mkdir()
        write_store(root, evs, random.Random(seed), files=2)
        got = list(replay_sync(root, VENUE, symbols=symbols, start=start, end=end, tables=tables))
        assert jsons(got) == jsons(want)


def test_use_system_pool_puts_arrow_on_the_c_allocator() -> None:
    code = ("import pyarrow as pa, replay; replay.use_system_pool(); "
            "print(pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "system"


async def test_a_feed_exited_by_another_task_while_it_sleeps(
        store: tuple[Path, list[Any]]) -> None:
    """``__aexit__`` from another task while the consumer sleeps in the feed: the exit
    completes (no error about the running generator) and the feed ends."""
    root, _ = store
    feed = replay.open(root, VENUE, speed=0.001)      # the 7th event is hours away
    await feed.__aenter__()

    async def consume() -> None:
        async for _ in feed:
            pass
    task = asyncio.create_task(consume())
    for _ in range(500):
        if feed.count == 6:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    await feed.__aexit__(None, None, None)
    assert feed._pending is None and feed._source is None and feed.count == 6
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [ev async for ev in feed] == []


@pytest.mark.parametrize("read_ahead", [True, False])
@pytest.mark.parametrize("kw", [{"speed": "max"}, {"clock": "virtual"}, {"speed": 1e6}])
async def test_reading_ahead_or_on_the_loop_gives_the_same_stream(
        store: tuple[Path, list[Any]], kw: dict[str, Any], read_ahead: bool) -> None:
    """Read ahead on the reader thread or on the loop (``read_ahead=False``): the same
    events, in order, in pieces of every size (``chunk_rows``), paced or not; ``now()``
    unpaced is the last event's ``ts_recv``, during and after the replay."""
    root, expected = store
    for rows in (2, 7, 4096):
        got = []
        async with ReplayFeed(root, VENUE, chunk_rows=rows, read_ahead=read_ahead, **kw) as feed:
            async for ev in feed:
                got.append(ev)
                assert feed.speed is not None or feed.now() == ev.ts_recv
        assert jsons(got) == jsons(expected) and feed.count == len(expected)
        assert feed.speed is not None or feed.now() == expected[-1].ts_recv
    async with replay.open(root, VENUE, read_ahead=read_ahead, **kw) as feed:
        assert replay.digest([ev async for ev in feed]) == replay.digest(expected)


async def test_now_of_an_unpaced_raw_feed_is_the_last_rows_time(
        store: tuple[Path, list[Any]]) -> None:
    """Raw rows (``kind="raw"``) carry ``ts_recv`` too: an unpaced feed's ``now()`` reads
    it from the piece, after every row and after the replay."""
    root, _ = store
    times = []
    async with ReplayFeed(root, VENUE, kind="raw", clock="virtual", chunk_rows=2) as feed:
        async for row in feed:
            times.append(row.ts_recv)
            assert feed.now() == row.ts_recv
    assert len(times) > 2 and times == sorted(times) and feed.now() == times[-1]


@pytest.mark.parametrize("kw", [{"speed": "max"}, {"clock": "virtual"}, {"speed": 1e6}])
async def test_other_tasks_run_while_the_feed_hands_out_events_without_waiting(
        store: tuple[Path, list[Any]], kw: dict[str, Any]) -> None:
    """Unpaced, or paced and behind schedule, the feed hands out events that are due
    without waiting: it still yields to the event loop after each piece (unpaced), or
    after a piece's worth of events handed out without sleeping (paced)."""
    root, expected = store
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)
    ticker = asyncio.create_task(tick())
    seen = []
    async with ReplayFeed(root, VENUE, chunk_rows=3, **kw) as feed:
        async for _ in feed:
            seen.append(ticks)
    ticker.cancel()
    most = 3 if feed.speed is None else 2 * 3        # events handed out back to back
    assert len(seen) == len(expected) > most
    assert all(seen[i + most] > seen[i] for i in range(len(seen) - most))


async def test_an_unreadable_file_read_on_the_loop_is_the_same_store_error(
        tmp_path: Path) -> None:
    write_store(tmp_path, make_events()[:3], random.Random(2), files=1)
    bad = partition_dir(tmp_path, "trades", VENUE, "2024-05-01") / "zz-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    for read_ahead in (True, False):
        with pytest.raises(StoreError) as info:
            async with replay.open(tmp_path, VENUE, speed="max", read_ahead=read_ahead) as feed:
                [ev async for ev in feed]
        assert "trades" in str(info.value) and "\n" not in str(info.value)
