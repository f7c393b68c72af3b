"""Peak memory of a replay streaming a large store, each reader in its own process.

The store: ``days`` sealed days (``benchmarks.replay_store``, trades and books
over 100 symbols) of ``rows`` events in all. Three fresh processes read it, each
importing the same modules first, and report their peak RSS (``VmHWM``):

- ``pyarrow``: ``ParquetFile.iter_batches`` over every file, no pre-buffering (the
  floor: decode only; ``pyarrow-prebuffer``, pyarrow's default, holds each file's
  column chunks until the file is done, so its peak follows the file size);
- ``batches``: ``replay.iter_batches`` over the whole range, in replay order;
- ``objects``: ``replay.replay_sync`` over the first ``object_rows`` events
  (Python objects are built at well under a million a second here, so a prefix).

Every child starts as ``tickrec replay`` does, with pyarrow told pandas is not
installed (``recorder.lean.skip_pandas_probe``: pandas is no dependency of either;
it would add 31 MB to each). The replay children run on the system pool as
``tickrec replay`` does (``ARROW_DEFAULT_MEMORY_POOL=system`` before pyarrow's
import, then ``replay.use_system_pool``); the pyarrow floor runs on pyarrow's
default pool (on the system pool it peaked higher: 315 against ~290 MB at 2x10M
rows).

Run as a module to read one way: ``python -m benchmarks.replay_memory ROOT MODE [LIMIT]``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.replay_store import make_day


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(root: Path, mode: str, limit: int) -> dict[str, Any]:
    from recorder.lean import skip_pandas_probe
    skip_pandas_probe("pyarrow.dataset")    # every child, as `tickrec replay` starts
    import pyarrow.parquet as pq

    import replay
    if not mode.startswith("pyarrow"):
        replay.use_system_pool()    # as `tickrec replay` runs (pyarrow: its default pool)
    base = _hwm_mb()
    t0 = time.perf_counter()
    if mode.startswith("pyarrow"):
        # pre_buffer=False: pyarrow's default read cache keeps every column chunk of a
        # file read so far, so its peak would follow the file size (not a floor)
        n = sum(b.num_rows for f in sorted(root.glob("*/*/*/*.parquet"))
                for b in pq.ParquetFile(f, pre_buffer=mode == "pyarrow-prebuffer").iter_batches(65_536))
    elif mode == "batches":
        n = sum(b.num_rows for b in replay.iter_batches(root, "alltick", tables=["trades", "book"]))
    else:
        stream = replay.replay_sync(root, "alltick", tables=["trades", "book"])
        n = sum(1 for _ in itertools.islice(stream, limit))
    return {"mode": mode, "rows": n, "seconds": time.perf_counter() - t0,
            "peak_mb": _hwm_mb(), "import_mb": base}


def _measure(root: Path, mode: str, limit: int = 0) -> dict[str, Any]:
    env = dict(os.environ)
    if not mode.startswith("pyarrow"):      # as `tickrec replay` starts (tickrec.cli)
        env.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    out = subprocess.run([sys.executable, "-m", "benchmarks.replay_memory", str(root), mode,
                          str(limit)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(rows: int = 100_000_000, days: int = 4, object_rows: int = 5_000_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in range(days):
            make_day(root, d, rows // days, "sealed")
        return {"rows": rows, "days": days, "pyarrow": _measure(root, "pyarrow"),
                "batches": _measure(root, "batches"),
                "objects": _measure(root, "objects", object_rows)}


if __name__ == "__main__":
    print(json.dumps(_child(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
