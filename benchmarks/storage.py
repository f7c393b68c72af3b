"""Bytes per stored row, beside one zstd level-3 stream of the same raw frames."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import zstandard

from benchmarks.blast import frames
from recorder.capture import Capture


def _size(root: Path, table: str) -> int:
    return sum(p.stat().st_size for p in root.glob(f"{table}/venue=*/date=*/*.parquet"))


def run(n: int = 200_000) -> dict[str, Any]:
    payloads = [f.encode() for f in frames(n, ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"])]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cap = Capture(root, "alltick", flush_rows=10**9, flush_seconds=10**9)
        cap.open_session("ws://bench", ["AAPL.US"])
        t0 = time.perf_counter()
        for i, p in enumerate(payloads):
            cap.frame_in(p)
            if i % 2048 == 0:
                cap.flush_journal()
        ingest = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        cap.close()
        publish = n / (time.perf_counter() - t0)
        trades = cap.norm.rows_by_table.get("trades", 0)
        book = cap.norm.rows_by_table.get("book", 0)
        sizes = {t: _size(root, t) for t in ("raw", "trades", "book")}
    stream = len(zstandard.ZstdCompressor(level=3).compress(b"\n".join(payloads)))
    return {
        "frames": n, "ingest_per_s": ingest, "publish_per_s": publish,
        "trade_bytes": sizes["trades"] / trades, "book_bytes": sizes["book"] / book,
        "raw_bytes": sizes["raw"] / n, "zstd_stream_bytes": stream / n,
        "raw_frame_len": sum(map(len, payloads)) / n,
    }
