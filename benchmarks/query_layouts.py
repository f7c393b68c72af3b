"""Sealed-file layouts side by side: bytes per row against VWAP scan speed.

``python -m benchmarks.query_layouts [ROWS] [ROUNDS]`` writes the query
benchmark's generated trades (``benchmarks.query``) once per layout through
``sealio.write_sorted`` with that layout's writer options (two are written
otherwise: DuckDB's own ``COPY`` of the sealed files, and the sealed layout with
price and size declared REQUIRED), then runs the VWAP per symbol through the
store view in interleaved rounds (every layout once per round, so a busy moment
of the shared machine hits them all alike). Printed per layout: bytes per row,
the best wall-clock rows/s, rows per CPU-second of the process (DuckDB's threads
included: steadier than wall time on a shared machine) and the median first-row
time of the one-symbol, one-hour query.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.query import NARROW, VWAP, day_batches
from schemas.tables import TABLES
from storage import sealio
from storage.catalog import connect

FLOATS = ("price", "size", "turnover")
NOW = "sealed now (page a group, p+s plain)"


def _layouts() -> dict[str, dict[str, Any] | str]:
    """Writer options by layout name; "COPY" is DuckDB's own writer, "REQUIRED"
    the sealed layout with price and size declared non-null (not a store schema)."""
    now = sealio.sealed_options("trades")
    names = TABLES["trades"].names
    s4 = {k: v for k, v in now.items() if k not in sealio.PAGE_OPTIONS}
    s4.update(compression="zstd", compression_level=3)      # session 4's sealed layout
    plain = {k: v for k, v in now.items() if k.startswith("compression")}
    return {
        "rolled-file encodings (before s4)": dict(s4, use_dictionary=[
            n for n in s4["use_dictionary"] if n not in FLOATS]),
        "s4 sealed: + float dictionaries": s4,
        "s4 + one page a row group": dict(s4, **sealio.PAGE_OPTIONS),
        "s4 + price, size uncompressed": dict(s4, **plain),
        NOW: now,
        "now, price+size lz4": dict(now, compression={
            n: "lz4" if n in ("price", "size") else "zstd" for n in names}),
        "now, all floats uncompressed": dict(now, compression={
            n: "none" if n in FLOATS else "zstd" for n in names}, compression_level={
            n: 3 for n in names if n not in FLOATS}),
        "now, data page v2": dict(now, data_page_version="2.0"),
        "now, 1,048,576-row groups": now,
        "now, price+size required": "REQUIRED",
        "DuckDB COPY (its defaults: snappy)": "COPY",
    }


def _write_required(part: Path, rows: int, day: int) -> None:
    """The sealed layout, price and size REQUIRED columns (no definition levels)."""
    schema = TABLES["trades"]
    schema = pa.schema([f.with_nullable(f.nullable and f.name not in ("price", "size"))
                        for f in schema], metadata=schema.metadata)
    table = pa.Table.from_batches(list(day_batches(rows, day))).cast(schema)
    part.mkdir(parents=True)
    with pq.ParquetWriter(part / "sealed-required.parquet", schema,
                          **sealio.sealed_options("trades")) as writer:
        for start in range(0, table.num_rows, sealio.ROW_GROUP_ROWS):
            writer.write_table(table.slice(start, sealio.ROW_GROUP_ROWS))


def _write(root: Path, name: str, options: dict[str, Any] | str, rows: int, days: int,
           source: Path | None) -> None:
    for d in range(days):
        part = root / "trades" / "venue=alltick" / f"date=2026-01-{d + 1:02d}"
        if options == "REQUIRED":
            _write_required(part, rows // days, d)
            continue
        if options == "COPY":           # DuckDB's own writer, from the sealed files
            assert source is not None
            part.mkdir(parents=True)
            src = source / "trades" / "venue=alltick" / part.name / "*.parquet"
            duckdb.connect().execute(
                f"COPY (SELECT * FROM read_parquet('{src}')) TO '{part}/sealed-duckdb.parquet' "
                f"(FORMAT parquet, ROW_GROUP_SIZE {sealio.ROW_GROUP_ROWS})")
            continue
        assert isinstance(options, dict)
        group = 1 << 20 if "1,048,576" in name else sealio.ROW_GROUP_ROWS
        def dest(k: int, p: Path = part) -> Path:
            return p / f"sealed-bench-{k:03d}.parquet"
        for w in sealio.write_sorted(day_batches(rows // days, d), "trades", dest,
                                     row_group_rows=group, options=options):
            w.path.rename(w.final)


def run(rows: int = 10_000_000, rounds: int = 5, days: int = 2) -> list[dict[str, Any]]:
    layouts = _layouts()
    with tempfile.TemporaryDirectory() as tmp:
        roots = {name: Path(tmp) / f"l{i}" for i, name in enumerate(layouts)}
        source = roots[NOW]
        for name in sorted(layouts, key=lambda n: isinstance(layouts[n], str)):
            _write(roots[name], name, layouts[name], rows, days, source)
        cons = {name: connect(root) for name, root in roots.items()}
        total = sum(pq.ParquetFile(f).metadata.num_rows
                    for f in source.glob("trades/*/*/*.parquet"))
        wall: dict[str, list[float]] = {n: [] for n in layouts}
        cpu: dict[str, list[float]] = {n: [] for n in layouts}
        first: dict[str, list[float]] = {n: [] for n in layouts}
        for name, con in cons.items():
            con.execute(VWAP.format("trades")).fetchall()       # warm the file cache
        for _ in range(rounds):
            for name, con in cons.items():
                t0, c0 = time.perf_counter(), time.process_time()
                con.execute(VWAP.format("trades")).fetchall()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                t0 = time.perf_counter()
                con.execute(NARROW).fetchmany(1)
                first[name].append((time.perf_counter() - t0) * 1e3)
        out = []
        for name, root in roots.items():
            size = sum(f.stat().st_size for f in root.glob("trades/*/*/*.parquet"))
            out.append({"layout": name, "bytes_per_row": size / total,
                        "rows_per_s": total / min(wall[name]),
                        "rows_per_cpu_s": total / min(cpu[name]),
                        "first_row_ms": statistics.median(first[name])})
        for con in cons.values():
            con.close()
    return out


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"{rows:,} trades, best of {rounds} interleaved rounds")
    print(f"| {'layout':36s} | bytes/row | VWAP rows/s | rows per CPU-s | first row |")
    print(f"| {'-' * 36} | --------: | ----------: | -------------: | --------: |")
    for r in run(rows, rounds):
        print(f"| {r['layout']:36s} | {r['bytes_per_row']:9.2f} | {r['rows_per_s'] / 1e6:9.1f} M "
              f"| {r['rows_per_cpu_s'] / 1e6:12.1f} M | {r['first_row_ms']:6.1f} ms |")


if __name__ == "__main__":
    main()
