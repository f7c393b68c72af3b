"""Query speed over sealed-style day files: a VWAP-per-symbol scan and a narrow query.

Generates ``rows`` trades (vectorised, no Python per row) as day files sorted by
(symbol, ts_recv) with 122,880-row groups, the layout of a sealed day, written
with the store's own Parquet options. Measures, in the same run:
- VWAP per symbol through ``tickrec query``'s views, beside DuckDB's own
  ``read_parquet`` over the same files (the machine's limit);
- the first row of a one-symbol, one-hour query.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TRADES
from storage.atomic import PARQUET_OPTIONS, encoding_options
from storage.catalog import connect

DAY0 = 1_767_225_600 * 10**9          # 2026-01-01T00:00Z
SYMBOLS = 100


def make_day(root: Path, rows: int, day: int) -> None:
    rng = np.random.default_rng(day)
    per = rows // SYMBOLS
    out = root / "trades" / "venue=alltick" / f"date=2026-01-{day + 1:02d}"
    out.mkdir(parents=True, exist_ok=True)
    chunks = []
    for s in range(SYMBOLS):
        ts = DAY0 + day * 86_400 * 10**9 + np.sort(rng.integers(0, 86_400 * 10**9, per))
        price = 100 + s + np.cumsum(rng.normal(0, 0.01, per))
        chunks.append(pa.table({
            "symbol": pa.array([f"S{s:03d}"] * per), "ts_recv": pa.array(ts, pa.timestamp("ns", "UTC")),
            "ts_event": pa.array(ts - 1_000_000, pa.timestamp("ns", "UTC")),
            "seq": pa.array(np.arange(per), pa.int64()), "session": pa.array(["bench"] * per),
            "frame": pa.array(np.arange(per), pa.int64()), "pos": pa.array(np.zeros(per, np.int32)),
            "price": price, "size": rng.integers(1, 100, per).astype(float) * 100,
            "turnover": pa.nulls(per, pa.float64()), "side": pa.array(["buy"] * per),
            "trade_type": pa.nulls(per, pa.string()), "extras": pa.nulls(per, pa.string())}))
    table = pa.concat_tables(chunks).cast(TRADES)
    opts = dict(PARQUET_OPTIONS, row_group_size=122_880)
    pq.write_table(table, out / "sealed-bench-000.parquet", **opts, **encoding_options(TRADES))


def run(rows: int = 20_000_000, days: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in range(days):
            make_day(root, rows // days, d)
        total = (rows // days // SYMBOLS) * SYMBOLS * days
        con = connect(root)
        vwap = "SELECT symbol, sum(price * size) / sum(size) FROM {} GROUP BY symbol"
        con.execute(vwap.format("trades")).fetchall()           # warm the file cache
        t0 = time.perf_counter()
        con.execute(vwap.format("trades")).fetchall()
        ours = total / (time.perf_counter() - t0)
        direct = f"read_parquet('{root}/trades/*/*/*.parquet')"
        t0 = time.perf_counter()
        con.execute(vwap.format(direct)).fetchall()
        limit = total / (time.perf_counter() - t0)
        narrow = ("SELECT symbol, epoch_ns(ts_recv), price, size FROM trades WHERE symbol = 'S042' AND ts_recv >= "
                  "'2026-01-01 10:00:00+00' AND ts_recv < '2026-01-01 11:00:00+00' "
                  "AND date = DATE '2026-01-01'")
        t0 = time.perf_counter()
        first = con.execute(narrow).fetchmany(1)
        first_ms = (time.perf_counter() - t0) * 1e3
        con.close()
    return {"rows": total, "scan_per_s": ours, "limit_per_s": limit, "first_row_ms": first_ms,
            "found": bool(first)}
