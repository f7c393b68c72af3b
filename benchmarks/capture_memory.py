"""Recorder memory under a long high-rate capture, beside a bare client's.

A recorder runs in its own process against ``benchmarks.blast --forever`` (as fast
as the socket takes, with the default flush settings) for ``seconds``; the parent
samples its resident set every second. The baseline is the bare client
(``websockets`` recv + ``json.loads``) in its own process for the same time.
"Flat" compares the highest sample of the second half with the first half's.
Beside them, the **import floor**: the peak RSS of a process that makes the same
start as the recorder child (``lean_process`` and the recorder's imports) and
stops there. It moves with whatever the machine does to every process that loads
pyarrow (session 11's run: all of them 21-32 MB higher), so the recorder's peak
minus the floor is what its capture holds.

Child modes: ``python -m benchmarks.capture_memory recorder URL ROOT SECONDS`` and
``... bare URL SECONDS SUBSCRIBE``; each prints the frames it read. The bare child
imports only ``websockets`` and ``json``. ``... floor`` prints its own peak RSS
in MB after the recorder child's imports.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import connect

if TYPE_CHECKING:
    from recorder.live import Recorder

ROUND = 100_000                 # frames the sender repeats (seq and times move on)
LIMIT_MB = 150.0


def _status_mb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _sample(argv: list[str], seconds: float) -> dict[str, Any]:
    """Run a child process, sampling its RSS every second until it exits."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.capture_memory", *argv],
                            stdout=subprocess.PIPE, text=True)
    samples: list[float] = []
    peak = 0.0
    deadline = time.monotonic() + seconds + 120
    while proc.poll() is None and time.monotonic() < deadline:
        rss = _status_mb(proc.pid, "VmRSS")
        peak = max(peak, _status_mb(proc.pid, "VmHWM") or 0.0)
        if rss is not None:
            samples.append(rss)
        time.sleep(1.0)
    out, _ = proc.communicate(timeout=120)
    frames = int(out.strip().splitlines()[-1]) if out.strip() else 0
    half = max(1, len(samples) // 2)
    first, last = max(samples[:half], default=0.0), max(samples[half:], default=0.0)
    return {"peak_mb": max(peak, *samples) if samples else peak, "first_half_mb": first,
            "last_half_mb": last, "flat": last <= first * 1.05, "frames": frames,
            "samples": samples}


def import_floor_mb() -> float:
    """Peak RSS (MB) of a process that only starts as the recorder child does."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.capture_memory", "floor"],
                          capture_output=True, text=True, check=True, timeout=120)
    return float(proc.stdout.strip().splitlines()[-1])


def _start() -> type[Recorder]:
    """The recorder child's start, which the import floor stops after."""
    from recorder.lean import lean_process
    lean_process()                      # as `tickrec record` does
    from recorder.live import Recorder
    return Recorder


def _floor() -> float:
    _start()
    return _status_mb(os.getpid(), "VmHWM") or 0.0


def run(seconds: float = 600.0) -> dict[str, Any]:
    """Peak RSS of a recorder and of the bare client, each over ``seconds``, and the
    recorder's import floor."""
    from benchmarks.blast import SUB
    floor = import_floor_mb()           # first: a failing child fails now, not after the floods
    blast = subprocess.Popen([sys.executable, "-m", "benchmarks.blast", str(ROUND), "--forever"],
                             stdout=subprocess.PIPE, text=True)
    assert blast.stdout is not None
    url = blast.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours = _sample(["recorder", url, tmp, str(seconds)], seconds)
        bare = _sample(["bare", url, str(seconds), SUB], seconds)
    finally:
        blast.terminate()
        blast.wait()
    return {"ours": ours, "bare": bare, "floor_mb": floor, "seconds": seconds,
            "limit_mb": LIMIT_MB}


async def _recorder(url: str, root: str, seconds: float) -> int:
    rec = _start()("alltick", url, ["AAPL.US"], root, options={"streams": ("trades",)})
    await rec.run(duration=seconds)
    assert rec.capture is not None
    return rec.capture.frames_in


async def _bare(url: str, seconds: float, sub: str) -> int:
    n = 0
    end = time.monotonic() + seconds
    # No keepalive pings: the baseline is recv + json.loads only (a 10-minute flood
    # once timed its ping out and ended the baseline early).
    async with connect(url, compression=None, max_size=1 << 20, ping_interval=None) as ws:
        await ws.send(sub)
        while time.monotonic() < end:
            json.loads(await ws.recv())
            n += 1
    return n


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "recorder":
        print(asyncio.run(_recorder(args[0], args[1], float(args[2]))))
    elif mode == "floor":
        print(f"{_floor():.3f}")
    else:
        print(asyncio.run(_bare(args[0], float(args[1]), args[2])))
