"""Capture throughput: the whole pipeline beside a bare websockets + JSON client.

"ours" is end to end: from the first frame until the rows of all n frames are
published in Parquet; "ingest" is until the recorder has read them. "lost"
compares the trade and depth rows stored with the pushes sent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from benchmarks import capture_memory
from benchmarks.blast import SUB, frames
from recorder.live import Recorder
from recorder.wsframe import MessageReader


def start_blast(n: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.blast", str(n)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def bare_client(url: str, n: int) -> dict[str, float]:
    """Frames/s of websockets recv + json.loads alone (the ceiling), and CPU µs a frame."""
    async with connect(url, compression=None, max_size=1 << 20) as ws:
        await ws.send(SUB)
        await ws.recv()                             # the subscribe reply
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            json.loads(await ws.recv())
        return {"rate": n / (time.perf_counter() - t0),
                "cpu_us": (time.process_time() - cpu0) / n * 1e6}


async def recorder_client(url: str, n: int, root: Path) -> dict[str, float]:
    """Frames/s through websockets → journal → decode → gap tracking → Parquet.

    ``ingest``: until the recorder has read the n frames; ``end_to_end``: until their
    rows are published in Parquet (the run stopped and closed); ``lag_s``: between;
    ``cpu_us``: CPU of this process (all threads) a frame, end to end."""
    rec = Recorder("alltick", url, ["AAPL.US"], root, flush_seconds=1.0,
                   options={"streams": ("trades",)})
    task = asyncio.create_task(rec.run())
    while rec.capture is None or rec.capture.frames_in < 1:
        await asyncio.sleep(0.001)
    t0, cpu0 = time.perf_counter(), time.process_time()
    while rec.capture.frames_in < n + 1:
        await asyncio.sleep(0.002)
    read = time.perf_counter()
    rec.stop()
    await task
    stored, cpu = time.perf_counter(), time.process_time() - cpu0
    return {"ingest": n / (read - t0), "end_to_end": n / (stored - t0), "lag_s": stored - read,
            "cpu_us": cpu / n * 1e6, "rows": stored_rows(root, ("trades", "book"))}


def stored_rows(root: Path, tables: tuple[str, ...]) -> int:
    """Rows in the published Parquet files of ``tables``."""
    return sum(pq.ParquetFile(f).metadata.num_rows
               for t in tables for f in (root / t).rglob("*.parquet"))


def parse_speed(n: int = 50_000, rounds: int = 3) -> dict[str, float]:
    """µs per frame to parse n blast frames from 64 KB reads: the recorder's reader
    (``recorder.wsframe``) beside websockets' parser (sans-I/O ``ClientProtocol``,
    frames decoded to ``str`` as its ``recv`` does); best of ``rounds`` each."""
    payloads = [f.encode() for f in frames(n, ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"])]
    wire = b"".join(Frame(Opcode.TEXT, p).serialize(mask=False) for p in payloads)
    reads = [wire[i:i + 65536] for i in range(0, len(wire), 65536)]
    ours, theirs = [], []
    for _ in range(rounds):
        reader = MessageReader(1 << 20)
        t0 = time.perf_counter()
        got = sum(len(reader.feed(r)) for r in reads)
        ours.append((time.perf_counter() - t0) / got * 1e6)
        proto = ClientProtocol(parse_uri("ws://x/"), max_size=1 << 20)
        proto.state = State.OPEN
        proto.parser = proto.parse()
        next(proto.parser)
        t0 = time.perf_counter()
        got = 0
        for r in reads:
            proto.receive_data(r)
            for ev in proto.events_received():
                ev.data.decode()        # type: ignore[union-attr]
                got += 1
        theirs.append((time.perf_counter() - t0) / got * 1e6)
    return {"ours_us": min(ours), "websockets_us": min(theirs)}


def run(n: int = 200_000, rounds: int = 3) -> dict[str, Any]:
    """The bare client and the recorder read the same n frames, alternately, ``rounds``
    times each; each side's best round counts (the one the shared machine disturbed
    least)."""
    proc, url = start_blast(n)
    bare: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    try:
        for _ in range(rounds):
            bare.append(asyncio.run(bare_client(url, n)))
            with tempfile.TemporaryDirectory() as tmp:
                ours.append(asyncio.run(recorder_client(url, n, Path(tmp))))
    finally:
        proc.terminate()
        proc.wait()
    best = max(ours, key=lambda r: r["end_to_end"])
    return {"ceiling": max(b["rate"] for b in bare), "ours": best["end_to_end"],
            "ingest": best["ingest"], "lag_s": best["lag_s"],
            "lost": max(n - r["rows"] for r in ours), "frames": n,
            "cpu_us": min(r["cpu_us"] for r in ours), "bare_cpu_us": min(b["cpu_us"] for b in bare),
            "rounds": {"bare": [b["rate"] for b in bare], "ours": [r["end_to_end"] for r in ours]}}


def report(quick: bool, row: Callable[..., str]) -> Iterator[str]:
    """The capture lines of ``make bench`` (``row`` formats one)."""
    cap = run(50_000 if quick else 200_000)
    yield row("capture, whole pipeline vs bare client", cap["ours"], cap["ceiling"],
              "frames/s", ">= 0.8 of ceiling", cap["ours"] >= 0.8 * cap["ceiling"])
    yield row("capture, ingest (read+journal) vs bare", cap["ingest"], cap["ceiling"],
              "frames/s", "-", True) + f"   rows in Parquet {cap['lag_s']:.2f} s after the last read"
    yield row("capture, frames lost", cap["lost"], None, "frames", "0", cap["lost"] == 0)
    yield row("capture, CPU a frame vs bare client", cap["cpu_us"], cap["bare_cpu_us"],
              "µs/frame", "-", True) + "   all threads, end to end (less load-dependent)"
    parse = parse_speed()
    yield row("frame parsing, ours vs websockets", parse["ours_us"], parse["websockets_us"],
              "µs/frame", "-", True) + "   the same 64 KB reads, in process"
    minutes = 1 if quick else 10
    mem = capture_memory.run(60.0 * minutes)
    ours, bare = mem["ours"], mem["bare"]
    yield row(f"recorder peak RSS, {minutes} min flood vs bare", ours["peak_mb"], bare["peak_mb"],
              "MB", f"<= {mem['limit_mb']:.0f} MB, flat",
              ours["peak_mb"] <= mem["limit_mb"] and ours["flat"]) + (
        f"   halves {ours['first_half_mb']:.0f}/{ours['last_half_mb']:.0f} MB, "
        f"{ours['frames'] / mem['seconds']:,.0f} frames/s (bare {bare['frames'] / mem['seconds']:,.0f}), "
        f"import floor {mem['floor_mb']:.1f} MB")
