"""DuckDB over the store: one view per table, plus ``bars_final``.

Every view exists (with its columns and zero rows) even before anything was
recorded, and carries ``venue`` and ``date`` from the partition directories.
On an ``s3://`` root (``storage.fs``) each view is a pyarrow dataset over the
S3 filesystem (hive partitioning) registered with DuckDB, which scans it with
filter and projection pushdown; no DuckDB extension is needed. Its files are
the live ones of each sealed day's manifest (``storage.liveset``), and a query
that fails because a seal deleted a listed object meanwhile is run once more.

Queries are read-only: only SELECT / EXPLAIN statements are accepted, so a
``COPY … TO`` or ``DELETE`` against the store fails with a clear error. And the
connection itself can reach no file outside the store root: once the views are
defined, DuckDB's external access is switched off (only the root stays
readable) and the configuration locked, so a SELECT cannot ``read_csv`` another
file, ``ATTACH`` a database or load an extension either.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from schemas.errors import ConfigError, StoreError
from schemas.tables import TABLES
from storage.fs import StoreRoot, as_store, is_s3
from storage.liveset import Manifests

_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

BARS_FINAL = """
CREATE VIEW bars_final AS
SELECT * FROM bars
QUALIFY row_number() OVER (
    PARTITION BY venue, symbol, "interval", ts_event
    ORDER BY ts_recv DESC, session DESC, frame DESC, pos DESC) = 1
"""


def _glob(root: Path, table: str) -> str:
    return str(root / table / "venue=*" / "date=*" / "*.parquet")


_PARTS = pa.schema([pa.field("venue", pa.string()), pa.field("date", pa.date32())])


def connect(root: Path | str | StoreRoot) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's views defined."""
    if isinstance(root, StoreRoot) or is_s3(root):
        return _connect_datasets(as_store(root))
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"store root {str(root)!r} does not exist")
    if not root.is_dir():
        raise ConfigError(f"store root {str(root)!r} is not a directory")
    root = root.resolve()       # the views and the one allowed directory name the same path
    con = duckdb.connect()
    for table, schema in TABLES.items():
        if any(root.glob(f"{table}/venue=*/date=*/*.parquet")):
            pattern = _glob(root, table).replace("'", "''")
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', "
                f"hive_partitioning=true, "
                f"hive_types={{'venue': VARCHAR, 'date': DATE}})")
        else:
            empty = pa.schema(list(schema) + [pa.field("venue", pa.string()),
                                              pa.field("date", pa.date32())]).empty_table()
            con.register(f"_empty_{table}", empty)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _empty_{table}")
    con.execute(BARS_FINAL)
    # Parse each file's footer once per connection: a narrow query on a warm
    # connection then reads only its row groups. Entries are checked against the
    # file's mtime. The views bind their columns from one file, not with
    # union_by_name (which reads every footer of the table at each query's bind:
    # 2x the first-row time of a new connection on a 12-file store, and growing with
    # the store): every file carries the current schema version (``tickrec verify``
    # checks it); a future version will have to add its own view over older files.
    con.execute("SET parquet_metadata_cache = true")
    allowed = str(root).replace("'", "''").rstrip("/") + "/"
    con.execute(f"SET allowed_directories = ['{allowed}']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _connect_datasets(store: StoreRoot) -> duckdb.DuckDBPyConnection:
    """The same views over pyarrow datasets (object stores: no DuckDB httpfs needed)."""
    if not store.is_store():
        raise ConfigError(f"store root {store.uri!r} does not exist (no such bucket)")
    con = duckdb.connect()
    manifests = Manifests(store)
    for table, schema in TABLES.items():
        full = pa.schema(list(schema) + list(_PARTS))
        files = store.parquet_files(table, manifests=manifests)
        if files:
            data: Any = ds.dataset(files, schema=full, filesystem=store.fs, format="parquet",
                                   partitioning=ds.partitioning(_PARTS, flavor="hive"),
                                   partition_base_dir=store.join(table))
        else:
            data = full.empty_table()
        con.register(f"_ds_{table}", data)
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM _ds_{table}")
    con.execute(BARS_FINAL)
    return con


def run_query(root: Path | str | StoreRoot, sql: str) -> pa.Table:
    """Run one read-only statement (or several; the last one's result is returned)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL error: {_one_line(exc)}") from None
    if not statements:
        raise ConfigError("no SQL statement given")
    for st in statements:
        if st.type not in _READ_ONLY:
            raise ConfigError(f"the store is read-only here: {st.type.name} statements are refused")
    try:
        return _run(root, statements)
    except StoreError:
        if not (root.s3 if isinstance(root, StoreRoot) else is_s3(root)):
            raise
        return _run(root, statements)       # a seal deleted a listed object: list again


def _run(root: Path | str | StoreRoot, statements: list[Any]) -> pa.Table:
    con = connect(root)
    try:
        result: pa.Table | None = None
        for st in statements:
            rel = con.sql(st.query)
            result = _arrow(rel) if rel is not None else pa.table({})
        assert result is not None
        return result
    except (duckdb.IOException, OSError) as exc:
        raise StoreError(f"store read failed: {_one_line(exc)}") from None
    except duckdb.InvalidInputException as exc:
        if "IOError" not in str(exc):       # an Arrow dataset (object store) that failed a read
            raise ConfigError(f"SQL error: {_one_line(exc)}") from None
        raise StoreError(f"store read failed: {_one_line(exc)}") from None
    except duckdb.Error as exc:
        raise ConfigError(f"SQL error: {_one_line(exc)}") from None
    finally:
        con.close()


def _arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    # DuckDB 2 renamed fetch_arrow_table (kept, deprecated) to to_arrow_table.
    fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
    table: pa.Table = fetch()
    return table


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def _printable(table: pa.Table) -> pa.Table:
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            col = \
                pc.cast(col, pa.string())
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def format_table(table: pa.Table, fmt: str = "table", max_width: int = 60) -> str:
    rows = _printable(table).to_pylist()
    names = table.column_names
    if fmt == "json":
        return "\n".join(json.dumps({k: _jsonable(r[k]) for k in names}, ensure_ascii=False)
                         for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow([_cell(r[k]) for k in names])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(r[k])[:max_width] for k in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]

    def line(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()

    out = [line(names), line(["-" * w for w in widths])] + [line(c) for c in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
