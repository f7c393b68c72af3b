"""Cutting a big segment of a day into ``ts_recv`` windows, so a replay's memory
does not follow the day.

A window is a half-open ``ts_recv`` range; a segment's windows tile it. Every
row belongs to exactly one window, and all rows that share a ``ts_recv`` fall
into the same one, so sorting each window by the replay key and handing the
windows out in order gives exactly the segment's order (ties included: inside a
window rows keep the order read, file name then row).

The cuts come from the Parquet footers: each row group's row count and its
``ts_recv`` min/max, its rows assumed spread evenly over that range. A window
holds about ``rows`` rows (more where the data is bunched inside a row group).

A sealed day is sorted by symbol, so each row group spans the day and would be
decoded again for every window it overlaps. Instead the segment is read once,
in order (``replay.stream``), each batch's rows are written to an Arrow IPC file
per table in a temporary directory as batches of one window each (``Spill``),
and the windows are then read back one at a time. Memory stays at one batch
plus one window; the day costs one extra write and read of its decoded rows on
local disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WINDOW_ROWS = 32_768
MAX_WINDOWS = 4096                # per day (bigger windows beyond that): the cut grid
GRID = 4096                       # resolution of the cut search inside a day
_IPC = pa.ipc.IpcWriteOptions(allow_64bit=True)


@dataclass(frozen=True)
class Group:
    """One row group: its rows and its ``ts_recv`` range (inclusive, ns)."""
    rows: int
    lo: int
    hi: int


def ts_span(rg: pq.RowGroupMetaData, names: Sequence[str]) -> tuple[int, int] | None:
    """The row group's smallest and largest ``ts_recv`` from its statistics (``names``:
    the file's column names); None when it has none."""
    if "ts_recv" not in names:
        return None
    st = rg.column(list(names).index("ts_recv")).statistics
    if st is None or not st.has_min_max:
        return None
    return int(st.min_raw), int(st.max_raw)


def cuts(groups: Sequence[Group], lo: int, hi: int, rows: int = WINDOW_ROWS) -> list[int]:
    """Window bounds ``[lo, c1, ..., hi]`` so each window holds about ``rows`` rows."""
    total = sum(g.rows for g in groups)
    rows = max(rows, -(-total // MAX_WINDOWS))
    if total <= rows or hi - lo < 2:
        return [lo, hi]
    first, last = min(g.lo for g in groups), max(g.hi for g in groups) + 1
    ends = [x for g in groups for x in (g.lo, g.hi + 1)]
    grid = np.linspace(first, last, GRID + 1).round().astype(np.int64)
    grid = np.unique(np.clip(np.concatenate([grid, np.asarray(ends, np.int64), [lo, hi]]), lo, hi))
    filled = np.zeros(len(grid), np.float64)        # estimated rows < grid[i]
    for g in groups:
        width = g.hi - g.lo + 1
        filled += g.rows * np.clip((grid - g.lo) / width, 0.0, 1.0)
    marks = np.arange(rows, total, rows)
    idx = np.unique(np.searchsorted(filled, marks))
    inner = [int(grid[i]) for i in idx if lo < grid[i] < hi]
    return [lo, *inner, hi]


@dataclass
class Spill:
    """Rows routed to windows through one Arrow IPC file per table in a temporary
    directory: each written batch holds rows of one window, and the batches of
    each window are listed, so a window is read back batch by batch (any number
    of windows, one open file per table)."""
    bounds: Sequence[int]
    dir: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="tickrec-replay-"))
    _writers: dict[str, pa.ipc.RecordBatchFileWriter] = field(default_factory=dict)
    _batches: dict[str, list[list[int]]] = field(default_factory=dict)   # table -> window -> batches
    _writers_done: bool = False

    def __post_init__(self) -> None:
        self._edges = np.asarray(self.bounds[1:-1], np.int64)

    def _path(self, table: str) -> str:
        return os.path.join(self.dir.name, f"{table}.arrow")

    def add(self, table: str, batch: pa.RecordBatch) -> None:
        """Route ``batch``'s rows to their windows, keeping their order inside each."""
        if not batch.num_rows:
            return
        ts = batch.column("ts_recv").cast(pa.int64()).to_numpy()
        window = np.searchsorted(self._edges, ts, "right")
        starts = np.flatnonzero(window[1:] != window[:-1]) + 1
        if len(starts) * 64 > len(window):
            # Many short runs (an unsorted file): regroup by window with one take.
            order = np.argsort(window, kind="stable")
            batch, window = batch.take(pa.array(order)), window[order]
            starts = np.flatnonzero(window[1:] != window[:-1]) + 1
        # Runs of one window, written as zero-copy slices (sealed files: a symbol's
        # rows are in time order, so each symbol gives one run per window).
        writer = self._writers.get(table)
        if writer is None:
            writer = self._writers[table] = pa.ipc.new_file(self._path(table), batch.schema,
                                                            options=_IPC)
            self._batches[table] = [[] for _ in range(len(self.bounds) - 1)]
        listed = self._batches[table]
        bounds = [0, *starts.tolist(), len(window)]
        for a, b in pairwise(bounds):
            listed[int(window[a])].append(writer.stats.num_record_batches)
            writer.write_batch(batch.slice(a, b - a))

    def _finish(self) -> None:
        writers, self._writers_done = self._writers, True
        for w in writers.values():
            w.close()

    def close(self) -> None:
        """Remove the files (also after a failure half way)."""
        try:
            if not self._writers_done:
                self._finish()
        finally:
            self.dir.cleanup()

    def windows(self, tables: Sequence[str]) -> Iterator[list[tuple[str, pa.Table]]]:
        """Each window's parts, in window order; the files are deleted at the end."""
        self._finish()
        files = {t: pa.OSFile(self._path(t)) for t in tables if t in self._writers}
        try:
            readers = {t: pa.ipc.open_file(fh) for t, fh in files.items()}
            for window in range(len(self.bounds) - 1):
                parts = []
                for table, reader in readers.items():
                    listed = self._batches[table][window]
                    if listed:
                        parts.append((table, pa.Table.from_batches(
                            [reader.get_batch(i) for i in listed], reader.schema)))
                if parts:
                    yield parts
        finally:
            for fh in files.values():
                fh.close()
            self.dir.cleanup()
