"""The store writer: rows come back as written, files appear whole, publishes recover."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import Book, RawRecord, Trade
from schemas.tables import METADATA_KEY, SCHEMA_VERSION
from storage.layout import DAY_NS, date_of
from storage.writer import StoreWriter, recover_publish

DAY0 = 20_000 * DAY_NS          # 2024-10-04T00:00Z


def trade(ts: int, frame: int, sym: str = "A", price: float = 1.0) -> Trade:
    return Trade(venue="alltick", symbol=sym, ts_recv=ts, ts_event=ts - 5, seq=frame, session="s1",
                 frame=frame, pos=0, price=price, size=2.0, turnover=None, side="buy")


def read_trades(root: Path) -> list[dict]:
    data = ds.dataset(root / "trades", format="parquet", partitioning="hive")
    table = data.to_table().sort_by([("ts_recv", "ascending"), ("frame", "ascending")])
    for name in ("ts_recv", "ts_event"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 table.column(name).cast("int64"))
    return table.to_pylist()


TRADES = st.lists(st.tuples(st.integers(0, 2 * DAY_NS), st.sampled_from(["A", "B", "../x", "BTC/USDT",
                                                                        "طلا"]),
                            st.floats(allow_nan=False, allow_infinity=False)), max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=TRADES, cuts=st.lists(st.integers(0, 60), max_size=4))
def test_rows_written_read_back_identical_in_order(tmp_path_factory: pytest.TempPathFactory,
                                                   rows: list, cuts: list[int]) -> None:
    root = tmp_path_factory.mktemp("store")
    w = StoreWriter(root, "alltick", "run1", root / "journal" / "run1")
    rows = sorted(rows, key=lambda r: r[0])
    events = [trade(DAY0 + ts + i, i, sym, px) for i, (ts, sym, px) in enumerate(rows)]
    for i, ev in enumerate(events):
        w.add_event(ev)
        w.mark(i + 1)
        if i in cuts:
            w.publish(w.take())
    w.publish(w.take())
    back = read_trades(root) if events else []
    assert len(back) == len(events)
    for got, ev in zip(back, events):
        assert got["symbol"] == ev.symbol and got["price"] == ev.price and got["frame"] == ev.frame
        assert got["ts_recv"] == ev.ts_recv and got["ts_event"] == ev.ts_event
        assert str(got["date"]) == date_of(ev.ts_recv)
    # symbols are data, never path components
    assert not any(p.name.startswith("..") for p in root.rglob("*"))
    assert all("=" in p.parent.name for p in root.glob("trades/*/*/*.parquet"))


def test_a_batch_spanning_midnight_is_split_at_the_date(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, "alltick", "run1", tmp_path / "j")
    w.add_event(trade(DAY0 - 1, 0))
    w.add_event(trade(DAY0, 1))
    files = w.publish(w.take())
    dates = sorted(f.parent.name for f in files)
    assert dates == ["date=2024-10-03", "date=2024-10-04"]
    meta = pq.read_schema(files[0]).metadata
    assert meta[METADATA_KEY] == SCHEMA_VERSION.encode()


def test_one_file_per_table_and_date_per_publish(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, "alltick", "run1", tmp_path / "j")
    for i in range(1000):
        w.add_event(trade(DAY0 + i, i, sym=f"S{i % 50}"))
        w.add_raw("sess", RawRecord(DAY0 + i, i, "in", "text", b"{}"))
    files = w.publish(w.take())
    assert len(files) == 2          # trades + raw, not one per symbol or frame


def test_interrupted_publish_rolls_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "journal" / "run1"
    w = StoreWriter(tmp_path, "alltick", "run1", state)
    w.add_event(trade(DAY0, 0))
    w.mark(1)
    w.publish(w.take())
    w.add_event(trade(DAY0 + 1, 1))
    w.mark(2)

    import storage.writer as mod
    calls = {"n": 0}
    real_replace = mod.os.replace

    def crash_after_intent(src: str, dst: str) -> None:
        # let the checkpoint's own atomic replace happen, die on the first data rename
        if str(dst).endswith(".parquet"):
            raise KeyboardInterrupt("simulated kill")
        calls["n"] += 1
        real_replace(src, dst)

    monkeypatch.setattr(mod.os, "replace", crash_after_intent)
    with pytest.raises(KeyboardInterrupt):
        w.publish(w.take())
    monkeypatch.setattr(mod.os, "replace", real_replace)
    assert len(read_trades(tmp_path)) == 1                       # the temp is invisible
    assert json.loads((state / "checkpoint.json").read_text())["records"] == 1
    assert recover_publish(tmp_path, "alltick", "run1", state) == 2
    assert [r["frame"] for r in read_trades(tmp_path)] == [0, 1]
    assert not list(tmp_path.rglob("*.tmp"))


def test_temps_without_intent_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "trades" / "venue=alltick" / "date=2024-10-04"
    d.mkdir(parents=True)
    (d / ".run1-000007.parquet.tmp").write_bytes(b"half")
    assert recover_publish(tmp_path, "alltick", "run1", tmp_path / "j") == 0
    assert not list(d.iterdir())


def test_raw_rows_are_encoded_in_smaller_row_groups_without_payload_statistics(
        tmp_path: Path) -> None:
    from storage.writer import RAW_ROW_GROUP_ROWS, ROW_GROUP_ROWS
    w = StoreWriter(tmp_path, "alltick", "run1", tmp_path / "j")
    n = ROW_GROUP_ROWS + 10
    for i in range(n):
        w.add_event(trade(DAY0 + i, i))
        w.add_raw("sess", RawRecord(DAY0 + i, i, "in", "text", b'{"p":%d}' % i))
    files = {f.parts[-4]: pq.ParquetFile(f).metadata for f in w.publish(w.take())}
    raw, trades = files["raw"], files["trades"]
    assert [raw.row_group(g).num_rows for g in range(raw.num_row_groups)][:-1] == \
        [RAW_ROW_GROUP_ROWS] * (ROW_GROUP_ROWS // RAW_ROW_GROUP_ROWS)
    assert trades.row_group(0).num_rows == ROW_GROUP_ROWS
    cols = {raw.row_group(0).column(c).path_in_schema: raw.row_group(0).column(c)
            for c in range(raw.num_columns)}
    assert not cols["payload"].is_stats_set
    assert cols["ts_recv"].is_stats_set and cols["frame"].is_stats_set
    back = pq.read_table(w.root / "raw").column("payload").to_pylist()
    assert back == [b'{"p":%d}' % i for i in range(n)]


def test_book_rows_are_encoded_in_row_groups_of_16384(tmp_path: Path) -> None:
    from storage.writer import BOOK_ROW_GROUP_ROWS
    w = StoreWriter(tmp_path, "alltick", "run1", tmp_path / "j")
    n = 2 * BOOK_ROW_GROUP_ROWS + 10
    for i in range(n):
        w.add_event(Book(venue="alltick", symbol="A", ts_recv=DAY0 + i, ts_event=DAY0 + i, seq=i,
                         session="s1", frame=i, pos=0, depth=1, bid_px=[1.0], bid_sz=[float(i)],
                         ask_px=[1.5], ask_sz=[1.0]))
    (book,) = w.publish(w.take())
    md = pq.ParquetFile(book).metadata
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == \
        [BOOK_ROW_GROUP_ROWS, BOOK_ROW_GROUP_ROWS, 10]
    assert pq.read_table(book).column("bid_sz").to_pylist() == [[float(i)] for i in range(n)]


def test_a_spooled_file_is_the_file_a_growing_buffer_would_hold(tmp_path: Path) -> None:
    # Rows writes each file as the writer's pieces (no doubling buffer): the same bytes,
    # and write_temp puts the pieces down in order.
    import pyarrow as pa

    from storage.atomic import write_temp
    from storage.writer import Rows, Spool, to_arrow, writer_options
    rows = [(DAY0 + i, "s1", i, "in", "text", b'{"x":%d}' % i * (1 + i % 7), None)
            for i in range(20_000)]
    table = to_arrow("raw", rows)
    spool, buf = Spool(), pa.BufferOutputStream()
    for sink in (spool, buf):
        w = pq.ParquetWriter(sink, table.schema, **writer_options(table.schema))
        w.write_table(table, row_group_size=8192)
        w.close()
    assert len(spool.pieces) > 3                        # pieces, not one growing buffer
    assert spool.getvalue() == buf.getvalue().to_pybytes()
    assert spool.size == len(spool.getvalue())
    tmp = write_temp(spool.pieces, tmp_path / "x.parquet")
    assert tmp.read_bytes() == spool.getvalue()
    held = Rows("raw")
    for i in range(0, len(rows), 4096):
        held.add_table(to_arrow("raw", rows[i:i + 4096]))
    files = held.files()
    assert [type(f) for f in files] == [Spool]
    assert pq.read_table(pa.BufferReader(files[0].getvalue())).equals(table)
