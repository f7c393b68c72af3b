"""Windowed day reading: any cut of a day into ts_recv windows, read directly or
through the spill, gives the whole-day order; the fast column conversion gives
what ``to_pylist`` gives."""

from __future__ import annotations

import os
import random
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replay.scan
from replay.rows import column_values
from replay.scan import Scan
from replay.segments import segments
from replay.stream import GroupRef
from replay.windows import Group, Spill, cuts
from schemas.tables import EVENT_TABLES, TABLES
from storage.atomic import write_parquet
from storage.layout import date_of, partition_dir
from storage.writer import to_arrow
from tests.test_replay import (
    UNIQUE,
    VENUE,
    jsons,
    make_events,
    order_key,
    row_of,
    write_sealed,
    write_store,
)


def whole_day(root: Path, **kw: Any) -> Scan:
    return Scan(root, VENUE, window_rows=10**9, **kw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=UNIQUE, seed=st.integers(0, 2**16), files=st.integers(1, 4),
       window=st.integers(1, 8), spill=st.booleans())
def test_windows_give_the_whole_day_order(evs: list[Any], seed: int, files: int, window: int,
                                          spill: bool) -> None:
    """Random stores with dense ts_recv ties across tables and files (and rows of one
    frame in several files); windows of a few rows, direct or spilled."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "trades").mkdir()
        write_store(root, evs, random.Random(seed), files=files)
        want = jsons(sorted(evs, key=order_key))
        assert jsons(whole_day(root)) == want
        mp = pytest.MonkeyPatch()
        mp.setattr(replay.scan, "DIRECT_WINDOWS", 0 if spill else 10**9)
        try:
            scan = Scan(root, VENUE, window_rows=window, chunk_rows=3)
            assert jsons(scan) == want
            batches = pa.Table.from_batches(list(scan.iter_batches(batch_rows=4)),
                                            schema=scan.schema())
            assert batches.column("table").to_pylist() == [e.TABLE for e in sorted(evs, key=order_key)]
        finally:
            mp.undo()


def test_a_big_day_is_handed_out_in_windows(tmp_path: Path) -> None:
    """More rows than a window: several windows, the sealed layout spills, and
    a duplicated row (a frame stored twice) keeps its place."""
    events = make_events()
    write_sealed(tmp_path, events)
    scan = Scan(tmp_path, VENUE, window_rows=4)
    days = scan.dates()
    windows = [w for d in days for w in scan.read_day(d, window_rows=4)]
    assert len(windows) > len(days)
    assert jsons(scan) == jsons(sorted(events, key=order_key))


def test_columns_of_nulls_only_are_not_spilled(tmp_path: Path, monkeypatch) -> None:
    """A sealed day whose trades carry no turnover (nulls only, by the statistics):
    the spill never holds that column, and records and batches still have it, null."""
    events = make_events()
    write_sealed(tmp_path, events)
    spilled: set[str] = set()
    real = Spill.add

    def spy(self: Spill, batch: pa.RecordBatch) -> None:
        spilled.update(batch.schema.names)
        real(self, batch)
    monkeypatch.setattr(Spill, "add", spy)
    scan = Scan(tmp_path, VENUE, window_rows=4, tables=["trades"])
    want = sorted((e for e in events if e.TABLE == "trades"), key=order_key)
    assert jsons(scan) == jsons(want)
    assert "turnover" not in spilled and {"ts_recv", "price"} <= spilled
    got = pa.Table.from_batches(list(scan.iter_batches()), schema=scan.schema())
    assert got.column("turnover").null_count == len(want)
    assert got.column("price").to_pylist() == [e.price for e in want]


@settings(max_examples=60, deadline=None)
@given(edges=st.lists(st.integers(0, 50), max_size=6, unique=True),
       ts=st.lists(st.integers(0, 50), min_size=1, max_size=30), in_order=st.booleans())
def test_spilled_rows_go_to_the_window_of_their_ts_recv(edges: list[int], ts: list[int],
                                                        in_order: bool) -> None:
    """Rows in time order (cut where windows start) and in any order (searched one
    by one) are routed alike: window ``i`` holds ``bounds[i] <= ts_recv < bounds[i + 1]``."""
    bounds = [-1, *sorted(edges), 100]
    rows = sorted(ts) if in_order else ts
    spill = Spill(bounds)
    try:
        spill.add(pa.record_batch({"ts_recv": pa.array(rows, pa.int64()),
                                   "i": pa.array(range(len(rows)))}))
        got = [w.column("i").to_pylist() for w in spill.windows()]
    finally:
        spill.close()
    want = [[i for i, t in enumerate(rows) if a <= t < b] for a, b in pairwise(bounds)]
    assert got == [w for w in want if w]


def test_a_spill_keeps_one_file_whatever_the_windows() -> None:
    """Thousands of windows, rows in symbol order: one IPC file, each window gives
    its rows in the order added (across flushes), text read as dictionaries comes back as the same
    text (codes into one dictionary), the file goes at the end."""
    bounds = list(range(0, 3001, 1))
    spill = Spill(bounds, flush_bytes=20_000)     # written in three flushes
    ts = [t for _ in range(3) for t in range(0, 3000, 2)]        # 3 "symbols", each in time order
    sym = [s for s in "ABC" for _ in range(0, 3000, 2)]
    batch = pa.record_batch({"ts_recv": pa.array(ts, pa.int64()), "i": pa.array(range(len(ts))),
                             "symbol": pa.array(sym).dictionary_encode()})
    spill.add(batch.slice(0, 2000))
    spill.add(batch.slice(2000))
    spill.add(pa.record_batch({"ts_recv": pa.array([4], pa.int64()), "i": pa.array([-1]),
                               "symbol": pa.array([None, "D"]).dictionary_encode().slice(1)}))
    assert os.listdir(spill.dir.name) == ["rows.arrow"]
    got = list(spill.windows())
    assert len(got) == 1500 and not os.path.exists(spill.dir.name)
    assert got[1].column("i").to_pylist() == [1, 1501, 3001]
    assert got[2].column("symbol").to_pylist() == ["A", "B", "C", "D"]
    assert got[2].column("i").to_pylist() == [2, 1502, 3002, -1]
    assert sum(t.num_rows for t in got) == len(ts) + 1


def test_iteration_builds_small_chunks_with_the_same_records(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    events = make_events()
    write_sealed(tmp_path, events)
    scan = Scan(tmp_path, VENUE, window_rows=4)
    chunks = [r for chunk in scan.iter_chunks() for r in chunk]
    sizes: list[int] = []
    real = replay.scan.Scan.iter_pieces

    def spy(self: Scan, rows: int | None = None):  # type: ignore[no-untyped-def]
        sizes.append(rows or 0)
        return real(self, rows)
    monkeypatch.setattr(replay.scan, "BUILD_ROWS", 2)
    monkeypatch.setattr(replay.scan.Scan, "iter_pieces", spy)
    assert jsons(scan) == jsons(chunks) == jsons(sorted(events, key=order_key))
    assert sizes == [2]


def test_cuts_follow_the_row_groups() -> None:
    day = 1000
    groups = [Group(100, 0, 99), Group(100, 100, 199), Group(100, 200, day - 1)]
    bounds = cuts(groups, 0, day, rows=100)
    assert bounds[0] == 0 and bounds[-1] == day and bounds == sorted(set(bounds))
    assert len(bounds) - 1 == 3
    assert cuts(groups, 0, day, rows=10**6) == [0, day]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(allow_nan=False), st.integers(-2**63, 2**63 - 1),
                                 st.text(max_size=3)), max_size=40),
       kind=st.sampled_from(["int64", "float64", "string", "list", "timestamp"]),
       cut=st.integers(0, 40))
def test_column_values_is_to_pylist(values: list[Any], kind: str, cut: int) -> None:
    typ = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(),
           "list": pa.list_(pa.float64()), "timestamp": TABLES["trades"].field("ts_recv").type}[kind]
    wanted = [v for v in values if v is None or isinstance(v, {
        "int64": int, "float64": float, "string": str, "list": float, "timestamp": int}[kind])
        and not isinstance(v, bool)]
    if kind == "list":
        wanted = [None if v is None else [v, v / 2] for v in wanted]
    if kind == "timestamp":
        wanted = [None if v is None else abs(v) // 2 for v in wanted]
    arr = pa.array(wanted, pa.int64() if kind == "timestamp" else typ)
    if kind == "timestamp":
        arr = arr.cast(typ)
    chunked = pa.chunked_array([arr.slice(0, cut), arr.slice(cut)], type=arr.type)
    expect = arr.cast(pa.int64()).to_pylist() if kind == "timestamp" else arr.to_pylist()
    assert column_values(chunked) == expect
    assert column_values(arr.slice(min(cut, len(arr)))) == expect[min(cut, len(arr)):]


def test_column_values_of_every_event_column() -> None:
    for name in EVENT_TABLES:
        rows = [row_of(e) for e in make_events() if e.TABLE == name]
        table = to_arrow(name, rows)
        for col in table.column_names:
            c = table.column(col)
            expect = (c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c).to_pylist()
            got = column_values(c)
            assert repr(got) == repr(expect), (name, col)


@settings(max_examples=80, deadline=None)
@given(spans=st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 50), st.integers(0, 20))),
                      min_size=0, max_size=12),
       lo=st.integers(0, 30), width=st.integers(1, 40))
def test_segments_tile_the_groups_in_time(spans: list[Any], lo: int, width: int) -> None:
    """Every group that can hold rows of [lo, hi) is in exactly one segment; segments
    are disjoint and ascending in time (touching spans chain); each segment covers
    its groups' clipped spans and lists them by file, then row group."""
    hi = lo + width
    groups = [GroupRef(f"f{i % 3}", i, 10, None if s is None else (s[0], s[0] + s[1]))
              for i, s in enumerate(spans)]
    segs = segments(groups, lo, hi)
    members = [g for seg in segs for g in seg.groups]
    assert sorted(members, key=id) == sorted([g for g in groups if g.meets(lo, hi)], key=id)
    for a, b in pairwise(segs):
        assert a.hi < b.lo
    for seg in segs:
        assert list(seg.groups) == sorted(seg.groups, key=lambda g: (g.path, g.index))
        for g in seg.groups:
            glo, ghi = (lo, hi - 1) if g.span is None else (max(g.span[0], lo), min(g.span[1], hi - 1))
            assert seg.lo <= glo and ghi <= seg.hi


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evs=UNIQUE, cuts_at=st.lists(st.integers(1, 59), max_size=4), window=st.integers(1, 8))
def test_rolled_files_in_arrival_order_give_the_whole_day_order(evs: list[Any],
                                                                cuts_at: list[int],
                                                                window: int) -> None:
    """Files written in arrival order (as a recorder rolls them), cut anywhere, so a
    frame's rows and equal ts_recv straddle files: segments of one or a few files,
    read directly, give the sorted stream and the same batches."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ordered = sorted(evs, key=order_key)
        by_table: dict[tuple[str, str], list[Any]] = {}
        for e in ordered:
            by_table.setdefault((e.TABLE, date_of(e.ts_recv)), []).append(row_of(e))
        for (table, date), rows in by_table.items():
            edges = sorted({0, len(rows), *[c for c in cuts_at if c < len(rows)]})
            for n, (a, b) in enumerate(pairwise(edges)):
                write_parquet(to_arrow(table, rows[a:b]),
                              partition_dir(root, table, VENUE, date) / f"s-{n:03d}.parquet")
        scan = Scan(root, VENUE, window_rows=window, chunk_rows=3)
        assert jsons(scan) == jsons(ordered)
        batches = pa.Table.from_batches(list(scan.iter_batches(batch_rows=4)), schema=scan.schema())
        assert batches.column("table").to_pylist() == [e.TABLE for e in ordered]
        assert batches.column("ts_recv").cast(pa.int64()).to_pylist() == [e.ts_recv for e in ordered]


def test_a_pieces_ts_recv_is_its_records_ts_recv(tmp_path: Path) -> None:
    """What a paced feed reads its deadlines from, without making the records: every
    table interleaved (pieces with ``which``), two days, pieces of 7 rows."""
    events = make_events()
    write_sealed(tmp_path, events)
    pieces = list(Scan(tmp_path, VENUE).iter_pieces(7))
    assert any(p.which is not None for p in pieces)
    for piece in pieces:
        assert piece.ts_recv().tolist() == [e.ts_recv for e in piece.build(VENUE)]
    assert sum(len(p) for p in pieces) == len(events)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(piece_rows=st.integers(1, 40), split_rows=st.integers(1, 12))
def test_a_piece_split_in_smaller_pieces_holds_the_same_records(
        tmp_path: Path, piece_rows: int, split_rows: int) -> None:
    """What a paced feed makes its records from (pieces of ``RECORD_ROWS`` cut from
    pieces of ``PIECE_ROWS``): every table interleaved, two days."""
    root = tmp_path / f"{piece_rows}-{split_rows}"
    if not root.exists():
        write_sealed(root, make_events())
    for piece in Scan(root, VENUE).iter_pieces(piece_rows):
        parts = list(piece.split(split_rows))
        assert all(0 < len(p) <= split_rows for p in parts)
        assert sum(len(p) for p in parts) == len(piece)
        whole = jsons(piece.build(VENUE))         # as JSON: books hold NaN levels
        assert jsons([e for p in parts for e in p.build(VENUE)]) == whole
        assert jsons([e for p in parts for e in p.records(VENUE)]) == whole
