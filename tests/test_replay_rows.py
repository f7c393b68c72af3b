"""The object path's column pickers and the un-moved merge: rows picked in any order
are what ``to_pylist`` gives in that order, and a merge's pieces visit every row of
every part once, in the replay order (the records built from pieces: test_replay*)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import replay
from benchmarks.replay_store import make_day
from replay import scan
from replay.digest import replay_sync
from replay.order import merge
from replay.rows import EACH, LIST_BLOCK_ROWS, Columns, picker
from replay.scan import EVENT_KEYS, Scan
from schemas.tables import TABLES

TS = TABLES["trades"].field("ts_recv").type


@st.composite
def columns(draw: Any) -> tuple[pa.Array, list[Any]]:
    """A column of one of the kinds the pickers treat apart, and its ``to_pylist``."""
    kind = draw(st.sampled_from(["int64", "float64", "timestamp", "text", "one_text",
                                 "list", "ragged_list", "all_null"]))
    n = draw(st.integers(1, 30))
    maybe_none = draw(st.booleans())

    def cell(strategy: Any) -> Any:
        return st.one_of(st.none(), strategy) if maybe_none else strategy
    if kind in ("int64", "timestamp"):
        values = draw(st.lists(cell(st.integers(0, 2**62)), min_size=n, max_size=n))
        arr = pa.array(values, pa.int64())
        return (arr.cast(TS) if kind == "timestamp" else arr), values
    if kind == "float64":
        values = draw(st.lists(cell(st.floats(allow_nan=False)), min_size=n, max_size=n))
        return pa.array(values, pa.float64()), values
    if kind in ("text", "one_text"):
        alphabet = ["S001"] if kind == "one_text" else ["S001", "S002", "buy", ""]
        values = draw(st.lists(cell(st.sampled_from(alphabet)), min_size=n, max_size=n))
        return pa.array(values, pa.string()), values
    if kind == "all_null":
        return pa.nulls(n, pa.string()), [None] * n
    width = st.just(3) if kind == "list" else st.integers(0, 4)
    values = draw(st.lists(cell(width.flatmap(lambda w: st.lists(
        st.floats(allow_nan=False), min_size=w, max_size=w))), min_size=n, max_size=n))
    return pa.array(values, pa.list_(pa.float64())), values


@settings(max_examples=100, deadline=None)
@given(col=columns(), data=st.data())
def test_picker_gives_to_pylist_in_any_order(col: tuple[pa.Array, list[Any]], data: Any) -> None:
    arr, values = col
    pick = picker(arr)
    idx = data.draw(st.lists(st.integers(0, len(values) - 1), max_size=40))
    assert pick(np.array(idx, dtype=np.int64)) == [values[i] for i in idx]
    a, b = sorted(data.draw(st.lists(st.integers(0, len(values)), min_size=2, max_size=2)))
    assert pick(slice(a, b)) == values[a:b]
    assert pick(slice(None)) == values


def _part(rows: list[tuple[int, str, int, int]]) -> pa.Table:
    ts, session, frame, pos = zip(*rows) if rows else ((), (), (), ())
    return pa.table({"ts_recv": pa.array(ts, TS), "session": pa.array(session, pa.string()),
                     "frame": pa.array(frame, pa.int64()), "pos": pa.array(pos, pa.int32()),
                     "mark": pa.array([f"{i}" for i in range(len(rows))], pa.string())})


KEY = st.tuples(st.integers(0, 4), st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(0, 2))


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.lists(KEY, min_size=1, max_size=12), min_size=1, max_size=3),
       chunk=st.integers(1, 5))
def test_merge_is_a_stable_sort_of_the_concatenation(parts: list[list[Any]], chunk: int) -> None:
    tables = [(f"t{p}", pa.Table.from_batches(_part(keys).to_batches(chunk)))
              for p, keys in enumerate(parts)]
    flat = [(key, p, i) for p, keys in enumerate(parts) for i, key in enumerate(keys)]
    want = [(p, i) for _, p, i in sorted(flat, key=lambda x: x[0])]     # sorted() is stable
    m = merge(tables, EVENT_KEYS)
    concat = [(p, i) for p, keys in enumerate(parts) for i in range(len(keys))]
    order = range(len(concat)) if m.order is None else m.order.tolist()
    assert [concat[j] for j in order] == want
    seen = []
    for p, perm in enumerate(m.perms):
        got = list(range(len(parts[p]))) if perm is None else perm.tolist()
        seen += [(p, i) for i in got]
    assert sorted(seen) == sorted(want)
    assert [m.parts[p][1].column("mark").to_pylist() for p in range(len(parts))] == \
        [[f"{i}" for i in range(len(k))] for k in parts]
    if m.which is not None:
        assert [p for p, _ in want] == m.which.tolist()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 400), data=st.data())
def test_lazy_level_lists_are_the_lists(n: int, data: Any) -> None:
    """Book levels made a block at a time (``picker(lazy=True)``) are the same lists,
    in any order, across block edges."""
    width = data.draw(st.integers(1, 5))
    values = np.arange(n * width, dtype=np.float64).reshape(n, width) / 4
    arr = pa.array(values.tolist(), pa.list_(pa.float64()))
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=3 * LIST_BLOCK_ROWS)),
                   dtype=np.int64)
    assert list(picker(arr, lazy=True)(idx)) == [values[i].tolist() for i in idx]
    assert list(picker(arr, lazy=True)(slice(None))) == values.tolist()


@pytest.fixture(scope="module")
def bench_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """A sealed and a rolled bench day (20,640 trades and books), and their records as
    the list path (``iter_chunks``) builds them."""
    root = tmp_path_factory.mktemp("bench")
    make_day(root, 0, 10_000, "sealed", row_group_rows=4_096)
    make_day(root, 1, 10_000, "rolled")
    return root, [e for chunk in Scan(root, "alltick").iter_chunks() for e in chunk]


@contextmanager
def collections() -> Iterator[list[int]]:
    """The generations of the collections that run in the block (none pending before)."""
    out: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            out.append(info["generation"])
    gc.collect()
    gc.callbacks.append(count)
    try:
        yield out
    finally:
        gc.callbacks.remove(count)


def test_iteration_leaves_the_collector_alone(bench_days: tuple[Path, list[Any]]) -> None:
    """Replay as objects, records dropped as they come: the records are the ones the
    list path builds, in the same order, and the collector does not run once per
    chunk (20,640 events: 4,096-record chunks built at once set off 10 collections,
    each over a whole chunk; now at most one, for the scan's own set-up)."""
    root, want = bench_days
    with collections() as ran:
        n, first, last = 0, None, None
        for e in replay_sync(root, "alltick"):
            first = first or e
            last, n = e, n + 1
    assert len(ran) <= 1
    assert n == len(want) and first == want[0] and last == want[-1]
    assert list(replay_sync(root, "alltick")) == want       # the bench data has no NaN


def test_a_consumer_that_keeps_the_records_gets_them_built_in_lists(
        bench_days: tuple[Path, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept records: after the first young collections the pieces are built as lists
    with the collector paused (one collection per list), far fewer collections than
    records made one at a time (one per 700 new containers); the same records."""
    root, want = bench_days
    with collections() as watched:
        kept = list(replay_sync(root, "alltick"))
    monkeypatch.setattr(scan, "_young_collections", lambda: 0)     # never switch
    with collections() as one_at_a_time:
        kept_lazy = list(replay_sync(root, "alltick"))
    assert kept == want and kept_lazy == want
    assert len(watched) * 2 < len(one_at_a_time)


def test_an_unpaced_feed_makes_records_as_taken_and_keeps_them_when_kept(
        bench_days: tuple[Path, list[Any]]) -> None:
    """``ReplayFeed`` at speed "max": the records ``replay_sync`` gives, in order; a
    consumer that drops them sets off at most two collections (the lists of 4,096 it
    built before set off one per list, 10 here): one for the run's own set-up (a
    loop, the reader thread), and one more that the young collections the process's
    other threads set off can add (it was 2 once in a fresh clone's full run, under
    load, and 0-1 alone), and one that keeps them gets them all."""
    root, want = bench_days

    async def run(keep: bool) -> tuple[int, Any, Any, list[Any]]:
        n, first, last, kept = 0, None, None, []
        async with replay.open(root, "alltick", speed="max") as feed:
            async for e in feed:
                first = first or e
                last, n = e, n + 1
                if keep:
                    kept.append(e)
        return n, first, last, kept

    with collections() as ran:
        n, first, last, _ = asyncio.run(run(keep=False))
    assert len(ran) <= 2
    assert n == len(want) and first == want[0] and last == want[-1]
    assert asyncio.run(run(keep=True))[3] == want


def _rows(table: str, n: int) -> pa.Table:
    """``n`` distinct rows of a ``trades`` or ``raw`` table (every row differs)."""
    common = {"ts_recv": list(range(n)), "session": ["s"] * n, "frame": list(range(n))}
    if table == "raw":
        cols = {**common, "direction": ["in", "out"] * (n // 2) + ["in"] * (n % 2),
                "kind": ["text"] * n, "payload": [b"%d" % i for i in range(n)],
                "note": [None] * n}
    else:
        cols = {"symbol": [f"S{i % 3}" for i in range(n)], **common,
                "ts_event": [i if i % 2 else None for i in range(n)], "seq": list(range(n)),
                "pos": [0] * n, "price": [i / 4 for i in range(n)], "size": [1.0] * n,
                "turnover": [None] * n, "side": ["buy"] * n, "trade_type": [None] * n,
                "extras": [None] * n}
    return pa.Table.from_pydict(cols, schema=TABLES[table])


@settings(max_examples=60, deadline=None)
@given(table=st.sampled_from(["trades", "raw"]),
       held=st.lists(st.integers(0, 3), min_size=1, max_size=40))
def test_records_made_one_at_a_time_never_change_a_held_record(table: str,
                                                               held: list[int]) -> None:
    """``Columns.records`` reuses a record the consumer has let go of: each record it
    hands out holds its row, and one the consumer still holds (for 0 to 3 more
    records, or to the end: ``held[i] == 3``) keeps its row whatever comes after.
    ``raw`` rows are frozen (stored through slot descriptors), trades are not."""
    cols = Columns(table, _rows(table, len(held)))
    want = cols.build("alltick")
    recent: list[tuple[int, Any]] = []
    kept: list[tuple[int, Any]] = []
    for i, e in enumerate(cols.records("alltick")):
        assert e == want[i]
        (kept if held[i] == 3 else recent).append((i, e))
        recent = [(j, r) for j, r in recent if i - j < held[j]]
        assert all(r == want[j] for j, r in recent + kept)
    assert [e for _, e in kept] == [want[i] for i, h in enumerate(held) if h == 3]


def test_a_record_dropped_is_made_again_in_place(bench_days: tuple[Path, list[Any]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The reuse happens: a consumer that drops each record gets every row in the same
    few objects (counted at the generated code's allocation); one that keeps them gets
    a new object per row; a whole replay gives the same records either way."""
    made: list[int] = []

    def new(cls: type) -> Any:
        made.append(1)
        return object.__new__(cls)
    monkeypatch.setitem(EACH["trades"].__globals__, "new", new)
    cols = Columns("trades", _rows("trades", 50))
    n = sum(1 for _ in cols.records("alltick"))
    assert n == 50 and len(made) <= 3
    made.clear()
    assert len(list(cols.records("alltick"))) == 50 and len(made) >= 50
    monkeypatch.undo()
    root, want = bench_days
    assert [e.to_json() for e in replay_sync(root, "alltick")] == [e.to_json() for e in want]
