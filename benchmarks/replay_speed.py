"""Replay throughput: events as objects and rows as Arrow batches, beside plain
``pyarrow.parquet`` batch iteration of the same files and columns.

The store (``benchmarks.replay_store``) holds one sealed day (sorted by symbol,
122,880-row groups) and one rolled day (recorder files in arrival order) of
trades and 5-level books over 100 symbols. Trades and books are measured
separately (a book row carries four list columns and costs several times a
trade row everywhere, in pyarrow too); each figure covers both days.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import replay
from benchmarks.replay_store import make_day


def _rate(fn: Any) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def run(rows_per_day: int = 2_000_000) -> dict[str, Any]:
    out: dict[str, Any] = {"rows_per_day": rows_per_day}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_day(root, 0, rows_per_day, "sealed")
        make_day(root, 1, rows_per_day, "rolled")
        for table in ("trades", "book"):
            files = sorted(root.glob(f"{table}/*/*/*.parquet"))
            out[f"{table}_baseline"] = _rate(lambda files=files: sum(
                b.num_rows for f in files for b in pq.ParquetFile(f).iter_batches(65_536)))
            out[f"{table}_objects"] = _rate(lambda t=table: sum(
                1 for _ in replay.replay_sync(root, "alltick", tables=[t])))
            out[f"{table}_batches"] = _rate(lambda t=table: sum(
                b.num_rows for b in replay.iter_batches(root, "alltick", tables=[t])))
    return out
