"""Replay throughput: events as objects and rows as Arrow batches, beside plain
``pyarrow.parquet`` batch iteration of the same files."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import replay
from benchmarks.blast import frames
from recorder.capture import Capture


def make_store(root: Path, n: int) -> None:
    cap = Capture(root, "alltick", flush_rows=100_000, flush_seconds=10**9)
    cap.open_session("ws://bench", ["AAPL.US"])
    for i, p in enumerate(frames(n, ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"])):
        cap.frame_in(p.encode())
        if cap.writer.buffered >= 100_000:
            cap.publish(cap.take())
    cap.close()


def run(n: int = 500_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_store(root, n)
        files = sorted(root.glob("trades/*/*/*.parquet")) + sorted(root.glob("book/*/*/*.parquet"))
        t0 = time.perf_counter()
        rows = sum(b.num_rows for f in files for b in pq.ParquetFile(f).iter_batches(65_536))
        baseline = rows / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        events = sum(1 for _ in replay.replay_sync(root, "alltick", tables=["trades", "book"]))
        objects = events / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        batched = sum(b.num_rows for b in replay.iter_batches(root, "alltick",
                                                               tables=["trades", "book"]))
        batches = batched / (time.perf_counter() - t0)
    return {"rows": rows, "baseline": baseline, "objects": objects, "batches": batches,
            "events": events}
