"""Recorder memory in process: blast frames fed to ``Capture`` as fast as it takes them.

Less noisy than ``benchmarks.capture_memory`` (no sockets, no sender competing for the
cores) and at the full rate whatever the machine's load, so two trees can be compared
side by side in a few minutes. As ``Recorder`` does: frames in reads of 240, the
journal flushed every 2,048 records, each batch published in a worker thread while
the next fills, the reader held at twice ``flush_rows``; ``lean_process`` first.

The frames (``benchmarks.blast.endless``, seq and times moving on) are written to a
file by a child process and read through ``mmap``, pages dropped behind the reader,
so neither making nor holding them is in the figure. ``above_mb`` is VmHWM minus
VmRSS just before the flood; ``mallinfo2`` is sampled every 50 ms and kept at the
highest RSS (``heap_mb``: the main arena, ``free_mb`` of it unused).

``python -m benchmarks.capture_flood [FRAMES]`` prints one JSON line.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

READ = 240                  # frames a read hands over (a 64 KB read of blast frames)
SYMBOLS = ["AAPL.US", "700.HK", "TSLA.US", "BTCUSDT"]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_frames(path: str, n: int) -> None:
    from benchmarks.blast import endless
    gen = endless(100_000, SYMBOLS)
    with open(path, "wb") as f:
        for _ in range(n):
            frame = next(gen).encode()
            f.write(struct.pack("<I", len(frame)) + frame)


def _reader(path: str) -> Callable[[int], list[tuple[bytes, bool]]]:
    with open(path, "rb") as fh:       # the mapping stays valid after the close
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    at = [0]

    def take(k: int) -> list[tuple[bytes, bool]]:
        out, p = [], at[0]
        for _ in range(k):
            n = int.from_bytes(mm[p:p + 4], "little")
            out.append((mm[p + 4:p + 4 + n], True))
            p += 4 + n
        if p >> 22 != at[0] >> 22:          # drop the pages behind (not the recorder's)
            mm.madvise(mmap.MADV_DONTNEED, 0, (p >> 22) << 22)
        at[0] = p
        return out
    return take


def flood(path: str, n: int) -> dict[str, Any]:
    from recorder.lean import lean_process
    lean_process()
    import recorder.live  # noqa: F401 - the recorder's import floor, as a live one has it
    from recorder.capture import Capture
    from schemas.venues import get
    take = _reader(path)
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    with tempfile.TemporaryDirectory() as root:
        cap = Capture(root, "alltick", events=False)
        client = get("alltick").client(["AAPL.US"], None, {"streams": ("trades",)})
        cap.open_session("ws://flood/", ["AAPL.US"], client.decoder_options())
        base = _status_mb("VmRSS")
        peak: dict[str, float] = {"rss": 0.0}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                rss = _status_mb("VmRSS")
                if rss > peak["rss"]:
                    mi = libc.mallinfo2()
                    peak.update(rss=rss, heap=mi.arena / 2**20, free=mi.fordblks / 2**20)

        threading.Thread(target=sample, daemon=True).start()
        cpu, wall = time.process_time(), time.monotonic()
        publishing: threading.Thread | None = None
        cap_rows, fed = 2 * cap.flush_rows, 0
        while fed < n:
            cap.batch_in(take(READ))
            fed += READ
            if cap.journal.buffered >= 2048:
                cap.flush_journal()
            if cap.decode_due():
                cap.decode_pending(deliver=False)
            if cap.buffered_rows >= cap_rows and publishing is not None:
                publishing.join()
            if (publishing is None or not publishing.is_alive()) and cap.publish_due():
                publishing = threading.Thread(target=cap.publish, args=(cap.take(),))
                publishing.start()
        if publishing is not None:
            publishing.join()
        cap.close()
        done.set()
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        return {"frames": fed, "base_mb": round(base, 1), "hwm_mb": round(_status_mb("VmHWM"), 1),
                "above_mb": round(_status_mb("VmHWM") - base, 1), "frames_per_s": round(fed / wall),
                "cpu_us_per_frame": round(cpu / fed * 1e6, 1), "heap_mb": round(peak.get("heap", 0), 1),
                "free_mb": round(peak.get("free", 0), 1)}


def run(n: int = 400_000) -> dict[str, Any]:
    """Write the frames (child), flood a fresh recorder process with them (child)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "frames.bin")
        me = [sys.executable, "-m", "benchmarks.capture_flood"]
        subprocess.run([*me, "--write", path, str(n)], check=True)
        out = subprocess.run([*me, "--flood", path, str(n)], check=True, capture_output=True,
                             text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--write":
        write_frames(args[1], int(args[2]))
    elif args and args[0] == "--flood":
        print(json.dumps(flood(args[1], int(args[2]))))
    else:
        print(json.dumps(run(int(args[0]) if args else 400_000)))
