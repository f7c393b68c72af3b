"""Shared test helpers: run a simulator and a recorder together, read the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from recorder.live import Recorder
from replay.sim.server import Simulator, make_adapter


def read_table(root: Path, table: str) -> list[dict[str, Any]]:
    """All rows of a table as dicts, timestamps as int ns, sorted in replay order."""
    base = root / table
    if not base.exists():
        return []
    t = ds.dataset(base, format="parquet", partitioning="hive",
                   exclude_invalid_files=True).to_table()
    for i, f in enumerate(t.schema):
        if pa.types.is_timestamp(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.int64()))
    keys = [k for k in ("ts_recv", "session", "frame", "pos") if k in t.column_names]
    return t.sort_by([(k, "ascending") for k in keys]).to_pylist()


async def record_sim(root: Path, symbols: list[str], *, venue: str = "alltick", rate: float = 400,
                     steps: int = 2000, seed: int = 7, faults: str | None = None,
                     token: str | None = None, credentials: dict[str, str] | None = None,
                     idle_timeout: float | None = None, linger: float = 0.5,
                     max_seconds: float = 30.0, adapter_options: dict[str, Any] | None = None,
                     **rec_kw: Any) -> tuple[Simulator, Recorder]:
    """Run the simulator until its last step, recording it; return both for inspection.

    ``adapter_options`` go to the venue's simulator adapter (``make_adapter``).
    """
    sim = Simulator(make_adapter(venue, **(adapter_options or {})), symbols, rate=rate,
                    steps=steps, seed=seed, faults=faults, token=token)
    await sim.start()
    rec = Recorder(venue, sim.url, symbols, root, credentials=credentials, flush_seconds=1.0,
                   reconnect_min=0.2, idle_timeout=idle_timeout, **rec_kw)
    task = asyncio.create_task(rec.run())
    try:
        done = asyncio.create_task(sim.done.wait())
        await asyncio.wait({task, done}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.sleep(linger)
            rec.stop()
        await asyncio.wait_for(asyncio.shield(task), 15)
    finally:
        await sim.stop()
    return sim, rec
