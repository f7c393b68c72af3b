"""The sealed layout (``storage.sealio``): pages, codecs, and rows kept exactly."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import sealio
from storage.writer import to_arrow
from tests.parquet_pages import DATA_PAGE, DICTIONARY_PAGE, pages

PRICES = st.one_of(st.none(), st.sampled_from([100.0, 100.01, 99.99, 0.0, -0.0]),
                   st.floats(allow_nan=True, allow_infinity=True))


def trades(n_by_symbol: list[tuple[str, list[tuple[float | None, float | None]]]]) -> Any:
    """Trades in seal order: symbol after symbol, rising receive times."""
    rows = []
    for symbol, fills in sorted(n_by_symbol):
        for price, size in fills:
            i = len(rows)
            turnover = None if price is None or size is None else price * size
            rows.append((symbol, 1_700_000_000_000_000_000 + i, None, i, "s1", i, 0,
                         price, size, turnover, "buy", None, None))
    return to_arrow("trades", rows)


def key(table: Any) -> list[str]:
    return [repr(r) for r in table.to_pylist()]           # repr: NaN equals NaN


def check_layout(path: Path) -> None:
    """Every column chunk holds one data page (after its dictionary page, if any)
    with all of its row group's rows (none in the empty file's group); price and size are uncompressed, the rest zstd."""
    md = pq.ParquetFile(path).metadata
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for c in range(md.num_columns):
            chunk = rg.column(c)
            found = pages(path, g, c)
            data = [DATA_PAGE] if rg.num_rows else []
            assert [p.kind for p in found] in (data, [DICTIONARY_PAGE] + data), found
            assert sum(p.values for p in found if p.kind == DATA_PAGE) == rg.num_rows
            plain = chunk.path_in_schema in sealio.UNCOMPRESSED["trades"]
            assert chunk.compression == ("UNCOMPRESSED" if plain else "ZSTD"), chunk


def test_a_sealed_trades_file_has_a_page_per_row_group_and_plain_price_size(tmp_path: Path
                                                                           ) -> None:
    fills = [(round(100 + (i % 37) * 0.01, 2), float(100 * (1 + i % 9))) for i in range(5000)]
    table = trades([("A.US", fills[:3000]), ("B.US", fills[3000:])])
    written = sealio.write_sorted(table.to_batches(max_chunksize=700), "trades",
                                  lambda k: tmp_path / f"s{k}.parquet", row_group_rows=1024,
                                  file_rows=4096)
    assert [w.rows for w in written] == [4096, 904]
    for w in written:
        os.replace(w.path, w.final)
        check_layout(w.final)
        chunks = pq.ParquetFile(w.final).metadata.row_group(0)
        price = next(chunks.column(i) for i in range(chunks.num_columns)
                     if chunks.column(i).path_in_schema == "price")
        assert "RLE_DICTIONARY" in price.encodings
    files = sorted(str(w.final) for w in written)
    assert key(pq.read_table(files[0]).slice(0, 5)) == key(table.slice(0, 5))
    # DuckDB reads them: VWAP per symbol equals the one computed here
    got = dict(duckdb.connect().execute(
        f"SELECT symbol, sum(price * size) / sum(size) FROM read_parquet({files}) "
        "GROUP BY symbol").fetchall())
    for symbol, part in (("A.US", fills[:3000]), ("B.US", fills[3000:])):
        want = sum(p * s for p, s in part) / sum(s for _, s in part)
        assert math.isclose(got[symbol], want, rel_tol=1e-12)


@settings(max_examples=40)
@given(st.lists(st.tuples(st.sampled_from(["A.US", "B.HK", "C"]),
                          st.lists(st.tuples(PRICES, PRICES), max_size=300)),
                max_size=3, unique_by=lambda t: t[0]),
       st.integers(1, 300), st.integers(1, 3))
def test_sealed_files_keep_every_row_and_the_page_layout(
        symbols: list[tuple[str, list[tuple[float | None, float | None]]]], group: int,
        per_file: int) -> None:
    table = trades(symbols)
    with tempfile.TemporaryDirectory() as tmp:
        written = sealio.write_sorted(table.to_batches(max_chunksize=97), "trades",
                                      lambda k: Path(tmp) / f"s{k}.parquet",
                                      row_group_rows=group, file_rows=group * per_file)
        back = []
        for w in written:
            check_layout(w.path)
            back += key(pq.read_table(w.path))
        assert back == key(table)
        assert sum(w.rows for w in written) == table.num_rows
