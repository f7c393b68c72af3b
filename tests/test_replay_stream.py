"""``replay.stream``: pull-based file reading gives what the dataset scanner gives
(filter, pruning, older schemas), one batch at a time."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from replay import stream
from replay.stream import GroupRef
from schemas.tables import TABLES, TS

SCHEMA = TABLES["trades"]


def trades(n: int, symbols: list[str]) -> pa.Table:
    """``n`` trades per symbol, symbol-sorted like a sealed file, ts_recv 0..n-1."""
    rows = [(s, t) for s in symbols for t in range(n)]
    cols = {f.name: pa.nulls(len(rows), f.type) for f in SCHEMA}
    cols |= {"session": pa.array(["s1"] * len(rows)), "side": pa.array(["buy"] * len(rows)),
             "frame": pa.array(range(len(rows)), pa.int64()),
             "pos": pa.array([0] * len(rows), pa.int32()),
             "symbol": pa.array([s for s, _ in rows]), "ts_recv": pa.array([t for _, t in rows], TS),
             "price": pa.array([float(i) for i in range(len(rows))])}
    return pa.table(cols).cast(SCHEMA)


def where(lo: int, hi: int, symbols: list[str] | None = None) -> ds.Expression:
    ts = pc.field("ts_recv")
    expr = (ts >= pa.scalar(lo, TS)) & (ts < pa.scalar(hi, TS))
    return expr if symbols is None else expr & pc.field("symbol").isin(pa.array(symbols))


def read(path: Path, columns: list[str], lo: int, hi: int, symbols: list[str] | None = None,
         rows: int = 7) -> list[pa.RecordBatch]:
    """What ``stream.batches`` gives, text decoded (it reads text as dictionaries)."""
    groups = [g.index for g in stream.plan(str(path), None, symbols) if g.meets(lo, hi)]
    got = list(stream.batches(str(path), None, SCHEMA, columns, groups, where(lo, hi, symbols),
                              rows))
    for b in got:
        assert all(f.type == stream.read_type(SCHEMA.field(f.name).type) for f in b.schema)
    schema = pa.schema([SCHEMA.field(c) for c in columns])
    return [pa.RecordBatch.from_arrays([c.cast(schema.field(n).type) for c, n in
                                        zip(b.columns, b.schema.names)], schema=schema)
            for b in got]


def test_same_rows_as_the_dataset_scanner(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(trades(50, ["A", "B", "C"]), path, row_group_size=20)
    cols = ["symbol", "ts_recv", "price"]
    for lo, hi, symbols in ((0, 50, None), (10, 33, None), (5, 45, ["B"]), (0, 50, ["Z"])):
        got = read(path, cols, lo, hi, symbols)
        assert all(b.num_rows <= 7 for b in got)
        want = ds.dataset(path, schema=SCHEMA).to_table(columns=cols,
                                                        filter=where(lo, hi, symbols))
        assert pa.Table.from_batches(got, schema=want.schema).equals(want)


def test_filter_columns_need_not_be_read_out(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(trades(10, ["A", "B"]), path)
    got = pa.Table.from_batches(read(path, ["price"], 2, 4, ["B"]))
    assert got.column_names == ["price"]
    assert got.column("price").to_pylist() == [12.0, 13.0]


def test_row_groups_outside_the_range_or_symbols_are_not_read(tmp_path: Path,
                                                              monkeypatch) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(trades(40, ["A", "B", "C"]), path, row_group_size=20)   # 6 groups
    asked: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, row_groups=None, **kw):  # type: ignore[no-untyped-def]
        asked.append(list(row_groups))
        return real(self, *args, row_groups=row_groups, **kw)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert sum(b.num_rows for b in read(path, ["symbol", "ts_recv"], 25, 40, ["B"])) == 15
    assert asked == [[3]]           # B's second half only
    assert read(path, ["symbol"], 100, 200) == [] and asked == [[3]]


def test_an_older_file_reads_missing_columns_as_nulls(tmp_path: Path) -> None:
    path = tmp_path / "old.parquet"
    pq.write_table(trades(5, ["A"]).drop_columns(["extras", "price"]), path)
    got = pa.Table.from_batches(read(path, ["symbol", "price", "extras"], 0, 5))
    assert got.schema == pa.schema([SCHEMA.field(c) for c in ("symbol", "price", "extras")])
    assert got.column("price").null_count == 5 and got.column("symbol").to_pylist() == ["A"] * 5


def test_columns_of_nulls_only_are_found_from_the_statistics(tmp_path: Path) -> None:
    """A column is left unread only when every group's statistics count nothing but
    nulls in it (or its file lacks it); one value anywhere, or no footer, reads it."""
    path = tmp_path / "a.parquet"
    t = trades(10, ["A", "B"])          # price has values; turnover, extras are all null
    pq.write_table(t, path, row_group_size=7)
    groups = stream.plan(str(path), None, None)
    assert len(groups) == 3
    assert stream.null_columns(groups, ["price", "turnover", "extras", "ts_recv"]) == [
        "turnover", "extras"]
    older = tmp_path / "old.parquet"
    pq.write_table(t.drop_columns(["price"]), older)
    assert stream.null_columns(stream.plan(str(older), None, None), ["price"]) == ["price"]
    assert stream.null_columns([*groups, *stream.plan(str(older), None, None)], ["price"]) == []
    no_stats = tmp_path / "no_stats.parquet"
    pq.write_table(t, no_stats, write_statistics=False)
    assert stream.null_columns(stream.plan(str(no_stats), None, None), ["turnover"]) == []
    bare = [GroupRef(g.path, g.index, g.rows, g.span) for g in groups]     # no footer
    assert stream.null_columns(bare, ["turnover"]) == []
    lists = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"levels": pa.array([[], []], pa.list_(pa.float64()))}), lists)
    assert stream.null_columns(stream.plan(str(lists), None, None), ["levels"]) == []
