"""Capture throughput: the whole pipeline beside a bare websockets + JSON client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from benchmarks.blast import SUB
from recorder.live import Recorder



def start_blast(n: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.blast", str(n)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def bare_client(url: str, n: int) -> float:
    """Frames/s of websockets recv + json.loads alone: the ceiling."""
    async with connect(url, compression=None, max_size=1 << 20) as ws:
        await ws.send(SUB)
        await ws.recv()                             # the subscribe reply
        t0 = time.perf_counter()
        for _ in range(n):
            json.loads(await ws.recv())
        return n / (time.perf_counter() - t0)


async def recorder_client(url: str, n: int, root: Path) -> tuple[float, int]:
    """Frames/s through websockets → journal → decode → gap tracking → Parquet."""
    rec = Recorder("alltick", url, ["AAPL.US"], root, flush_seconds=1.0,
                   options={"streams": ("trades",)})
    task = asyncio.create_task(rec.run())
    while rec.capture is None or rec.capture.frames_in < 1:
        await asyncio.sleep(0.001)
    t0 = time.perf_counter()
    while rec.capture.frames_in < n + 1:
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - t0
    rec.stop()
    await task
    rows = rec.capture.norm.rows
    return n / elapsed, rows


def run(n: int = 200_000) -> dict[str, Any]:
    proc, url = start_blast(n)
    try:
        ceiling = asyncio.run(bare_client(url, n))
        with tempfile.TemporaryDirectory() as tmp:
            ours, rows = asyncio.run(recorder_client(url, n, Path(tmp)))
            lost = n - rows
    finally:
        proc.terminate()
        proc.wait()
    return {"ceiling": ceiling, "ours": ours, "lost": lost, "frames": n}
