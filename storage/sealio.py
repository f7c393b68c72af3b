"""The DuckDB side of sealing a day: order-independent digests and sorted rewrites.

``digest(files, table)`` and ``rewrite(files, table, dest)`` read a list of
Parquet files of one partition. DuckDB does the heavy lifting (an out-of-core
sort bounded by ``memory_limit``, spilling to ``spill_dir``); pyarrow writes the
result (``write_sorted``) with the store's schema, fixed-size row groups,
row-group statistics, a page index and the ``sorting_columns`` metadata, in the
sealed layout of ``sealed_options``.

Digest: ``count``, ``sum`` and ``bit_xor`` of DuckDB's 64-bit ``hash()`` of
every row (all columns), so it does not depend on row order or file split and
counts duplicates. It is a check made within one seal (both sides hashed by the
same engine); the durable per-file checksum in a manifest is sha256.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES
from storage.atomic import encoding_options, temp_path

ROW_GROUP_ROWS = 122_880            # DuckDB's own row-group size: 60 vectors of 2,048 rows
FILE_ROWS = 80 * ROW_GROUP_ROWS     # ~9.8 M rows per sealed file
EVENT_KEY = ("symbol", "ts_recv", "session", "frame", "pos")
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "raw": ("ts_recv", "session", "frame"),
    "sessions": ("ts_recv", "session"),
}
# Columns whose min/max would only bloat the footer (payloads, free text).
NO_STATS = frozenset({"payload", "note", "extras", "detail", "url", "close_reason",
                      "subscriptions"})
WRITE_OPTIONS: dict[str, Any] = dict(compression="zstd", compression_level=3,
                                     write_page_index=True)
# Data pages of a whole row group (ROW_GROUP_ROWS rows), cut earlier only at
# pyarrow's 1 MB page limit (which no trades column reaches; raw payloads do, and
# keep 1 MB pages): a page that starts and ends on DuckDB's 2,048-row vectors
# lets its scan hand whole dictionary vectors to GROUP BY (pyarrow's default
# pages of 20,000 rows straddle vectors and make DuckDB hash the values instead).
PAGE_OPTIONS: dict[str, Any] = {"max_rows_per_page": ROW_GROUP_ROWS}
# Columns a sealed file stores uncompressed: the ones scans read most (VWAP is
# price x size). Their pages are dictionary indices that zstd shrinks little
# (0.57 byte a generated trade for price, nothing for size) at 1.17x the CPU of
# DuckDB's VWAP scan (docs/benchmarks.md, "Query").
UNCOMPRESSED: dict[str, frozenset[str]] = {"trades": frozenset({"price", "size"})}


def _float_columns(schema: pa.Schema) -> list[str]:
    """Parquet paths of the float columns (of a list column: its ``name.list.element``)."""
    out = []
    for f in schema:
        t, path = f.type, f.name
        while pa.types.is_list(t):
            t, path = t.value_type, f"{path}.list.element"
        if pa.types.is_floating(t):
            out.append(path)
    return out


def _compression(table: str) -> dict[str, Any]:
    """zstd level 3 for every column but the table's ``UNCOMPRESSED`` ones."""
    plain = UNCOMPRESSED.get(table, frozenset())
    if not plain:
        return {}
    names = TABLES[table].names
    return {"compression": {n: "none" if n in plain else "zstd" for n in names},
            "compression_level": {n: 3 for n in names if n not in plain}}


def sealed_options(table: str) -> dict[str, Any]:
    """``ParquetWriter`` options of a sealed file of ``table``: the rolled files'
    encodings plus dictionaries for float columns, row-group statistics (not for
    payload columns), a page index, the seal order as ``sorting_columns``, data
    pages of a whole row group up to 1 MB (``PAGE_OPTIONS``) and zstd but for
    the ``UNCOMPRESSED`` columns.

    Prices and sizes (book levels too) repeat on their tick and lot grids, and a
    sealed row group holds one or a few symbols, so their dictionaries stay
    small: DuckDB scans them about twice as fast as zstd-compressed plain
    doubles, in smaller files (docs/benchmarks.md, "Query"). A column whose
    dictionary outgrows 1 MB in a row group falls back to plain pages by itself.
    """
    schema = TABLES[table]
    enc = encoding_options(schema)
    return dict(WRITE_OPTIONS, **PAGE_OPTIONS, **_compression(table),
                column_encoding=enc["column_encoding"],
                use_dictionary=enc["use_dictionary"] + _float_columns(schema),
                write_statistics=[n for n in schema.names if n not in NO_STATS],
                sorting_columns=pq.SortingColumn.from_ordering(
                    schema, [(k, "ascending") for k in sort_key(table)]))


def sort_key(table: str) -> tuple[str, ...]:
    return SORT_KEYS.get(table, EVENT_KEY)


@dataclass(frozen=True)
class Digest:
    rows: int
    hash_sum: str           # sum of row hashes (decimal, exact)
    hash_xor: int
    first_ts: int | None    # min/max ts_recv, ns
    last_ts: int | None

    @property
    def text(self) -> str:
        return f"{self.rows}:{self.hash_sum}:{self.hash_xor:016x}"


@dataclass(frozen=True)
class Written:
    path: Path              # the temp path (renamed to ``final`` on commit)
    final: Path
    rows: int
    row_groups: int
    bytes: int
    sha256: str


def _files_sql(files: Sequence[Path | str]) -> str:
    quoted = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{quoted}], hive_partitioning=false)"


def connect(memory_limit: str = "1GB", spill_dir: Path | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    if spill_dir is not None:
        spill_dir.mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = '" + str(spill_dir).replace("'", "''") + "'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def digest(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str], table: str) -> Digest:
    """The order-independent digest of the rows of ``files`` (all of ``table``)."""
    if not files:
        return Digest(0, "0", 0, None, None)
    cols = ", ".join(f'"{n}"' for n in TABLES[table].names)
    row = con.execute(f"SELECT count(*), coalesce(sum(hash({cols})::HUGEINT), 0)::VARCHAR, "
                  f"coalesce(bit_xor(hash({cols})), 0), epoch_ns(min(ts_recv)), "
                  f"epoch_ns(max(ts_recv)) FROM {_files_sql(files)}").fetchall()[0]
    return Digest(int(row[0]), str(row[1]), int(row[2]), row[3], row[4])


def scalar_rows(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str], sql: str
                ) -> list[tuple[Any, ...]]:
    """``sql`` with ``{files}`` replaced by the scan of ``files``; all result rows."""
    if not files:
        return []
    return con.execute(sql.replace("{files}", _files_sql(files))).fetchall()


def _reader(con: duckdb.DuckDBPyConnection, sql: str, batch: int) -> pa.RecordBatchReader:
    rel = con.sql(sql)
    fetch = getattr(rel, "to_arrow_reader", None) or rel.fetch_record_batch
    reader: pa.RecordBatchReader = fetch(batch)
    return reader


def _chunks(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Re-cut a stream of batches into tables of exactly ``size`` rows (the last may be short)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            t = pa.Table.from_batches(pending)
            yield t.slice(0, size)
            rest = t.slice(size)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def rewrite(con: duckdb.DuckDBPyConnection, files: Sequence[Path | str], table: str,
            name: Callable[[int], Path], *, row_group_rows: int = ROW_GROUP_ROWS,
            file_rows: int = FILE_ROWS) -> list[Written]:
    """Rows of ``files`` sorted by the table's seal key, written by ``write_sorted``."""
    order = ", ".join(f'"{k}"' for k in sort_key(table))
    sql = f"SELECT * FROM {_files_sql(files)} ORDER BY {order}"
    batches: Iterable[pa.RecordBatch] = _reader(con, sql, 16_384) if files else ()
    return write_sorted(batches, table, name, row_group_rows=row_group_rows,
                        file_rows=file_rows)


def write_sorted(batches: Iterable[pa.RecordBatch], table: str, name: Callable[[int], Path], *,
                 row_group_rows: int = ROW_GROUP_ROWS, file_rows: int = FILE_ROWS,
                 options: dict[str, Any] | None = None) -> list[Written]:
    """``batches`` (already in seal order) as sealed temp files beside ``name(k)``.

    ``options`` (the ``ParquetWriter`` options) default to ``sealed_options(table)``;
    only benchmarks comparing layouts pass others.

    Every row group holds ``row_group_rows`` rows (the last of a file fewer);
    a file holds at most ``file_rows`` rows (rounded up to whole row groups).
    Temps are fsynced; nothing is renamed here. At least one file is written,
    even for zero rows, so a sealed partition is never empty of files.
    """
    schema = TABLES[table]
    options = options if options is not None else sealed_options(table)
    per_file = max(1, -(-file_rows // row_group_rows))
    out: list[Written] = []
    writer: pq.ParquetWriter | None = None
    groups = rows = 0
    final = tmp = Path()

    def close() -> None:
        nonlocal writer
        if writer is None:
            return
        writer.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        out.append(Written(tmp, final, rows, groups, tmp.stat().st_size, sha256_of(tmp)))
        writer = None

    def open_next() -> pq.ParquetWriter:
        nonlocal final, tmp, groups, rows
        final = name(len(out))
        tmp = temp_path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        groups = rows = 0
        return pq.ParquetWriter(tmp, schema, **options)

    for chunk in _chunks(batches, row_group_rows):
        if writer is None:
            writer = open_next()
        writer.write_table(chunk.cast(schema), row_group_size=row_group_rows)
        groups += 1
        rows += chunk.num_rows
        if groups >= per_file:
            close()
    if writer is None and not out:
        writer = open_next()
        writer.write_table(schema.empty_table())
    close()
    return out
