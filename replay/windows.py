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
in order (``replay.stream``), and its rows are written to one Arrow IPC file in
a temporary directory as batches of one window each (``Spill``: 8 MB of rows are
held, regrouped by window and written), and the windows are then read back one
at a time. Memory stays at the rows held plus one window; the day costs one
extra write and read of its decoded rows on local disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay import gather

WINDOW_ROWS = 32_768
# The spill writes when this much is pending: more means fewer pieces per window
# (trades: ~130k rows), less means less memory (its regrouping copies it twice).
FLUSH_BYTES = 8 << 20
MAX_WINDOWS = 4096                # per day (bigger windows beyond that): the cut grid
GRID = 4096                       # resolution of the cut search inside a day
_IPC = pa.ipc.IpcWriteOptions(allow_64bit=True)
WINDOW_IDS = np.int32             # a row's window number: half of int64's bytes to sort and move


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


class _Codes:
    """One text column's values across a spill, each with a fixed code: a batch's
    dictionary column becomes codes into this one dictionary, which only grows, so
    rows of any batches read back together share it."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.values: list[str] = []
        self._array: pa.Array | None = None         # ``values`` as Arrow, made on demand
        self._last: tuple[pa.Array, pa.Array] | None = None    # a dictionary, its codes here

    def encode(self, arr: pa.DictionaryArray) -> pa.Array:
        # Always a new array: passing the indices through where the numbers agree
        # was no faster and peaked 7 MB higher on a 10M-row day (202 against 195 MB)
        if self._last is not None and self._last[0].equals(arr.dictionary):
            return pc.take(self._last[1], arr.indices)     # batches of one row group
        mapping = np.empty(len(arr.dictionary), np.int32)
        for i, value in enumerate(arr.dictionary.to_pylist()):
            code = self.index.get(value)
            if code is None:
                code = self.index[value] = len(self.values)
                self.values.append(value)
                self._array = None
            mapping[i] = code
        self._last = (arr.dictionary, pa.array(mapping))
        return pc.take(self._last[1], arr.indices)

    def decode(self, codes: pa.ChunkedArray) -> pa.DictionaryArray:
        if self._array is None:
            self._array = pa.array(self.values, pa.string())
        # safe=False: every code was given by ``encode``, so none needs checking
        return pa.DictionaryArray.from_arrays(codes.combine_chunks(), self._array, safe=False)


class Spill:
    """Rows routed to windows through one Arrow IPC file in a temporary directory:
    each written batch holds rows of one window, and the batches of each window
    are listed, so a window is read back batch by batch (any number of windows,
    one open file). Text read as dictionaries is spilled as codes into one
    dictionary per column (``_Codes``: an IPC file cannot change a dictionary)."""

    def __init__(self, bounds: Sequence[int], flush_bytes: int = FLUSH_BYTES) -> None:
        self.bounds = bounds
        self.flush_bytes = flush_bytes
        self._pending: list[tuple[pa.RecordBatch, np.ndarray]] = []
        self._pending_bytes = 0
        self.dir = tempfile.TemporaryDirectory(prefix="tickrec-replay-")
        self.path = os.path.join(self.dir.name, "rows.arrow")
        self._edges = np.asarray(bounds[1:-1], np.int64)
        self._sink: pa.NativeFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._listed: list[list[int]] = [[] for _ in range(len(bounds) - 1)]  # window -> batches
        self._codes: dict[str, _Codes] = {}
        self._schema: pa.Schema | None = None      # of the rows added (text as dictionaries)

    def add(self, batch: pa.RecordBatch) -> None:
        """Route ``batch``'s rows to their windows, keeping their order inside each.
        Rows are held until ``flush_bytes`` are pending, then written window by window."""
        if not batch.num_rows:
            return
        ts = batch.column("ts_recv").cast(pa.int64()).to_numpy()
        batch = self._encoded(batch)
        self._pending.append((batch, self._window_of(ts)))
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self.flush_bytes:
            self._flush()

    def _window_of(self, ts: np.ndarray) -> np.ndarray:
        """Each row's window. Rows in time order (a sealed file's batch inside one
        symbol's run) are cut where each window starts, not searched one by one."""
        if len(ts) > 1 and (ts[1:] >= ts[:-1]).all():
            starts = np.searchsorted(ts, self._edges, "left")
            return np.repeat(np.arange(len(self._edges) + 1, dtype=WINDOW_IDS),
                             np.diff(starts, prepend=0, append=len(ts)))
        return np.searchsorted(self._edges, ts, "right").astype(WINDOW_IDS)

    def _flush(self) -> None:
        """The pending rows regrouped by window (one stable gather) and written as one
        batch per window: a window is read back in as many pieces as there were
        flushes, however many symbols' runs it holds."""
        if not self._pending:
            return
        rows = pa.Table.from_batches([b for b, _ in self._pending])
        window = np.concatenate([w for _, w in self._pending])
        self._pending, self._pending_bytes = [], 0
        if (window[1:] < window[:-1]).any():
            order = np.argsort(window, kind="stable")
            rows, window = gather.take(rows, order), window[order]
        rows = rows.combine_chunks()        # one batch per window (after a take: as it is)
        if self._writer is None:
            self._sink = pa.BufferedOutputStream(pa.OSFile(self.path, "wb"), 1 << 20)
            self._writer = pa.ipc.new_file(self._sink, rows.schema, options=_IPC)
        starts = np.flatnonzero(window[1:] != window[:-1]) + 1
        for a, b in pairwise([0, *starts.tolist(), len(window)]):
            self._listed[int(window[a])].append(self._writer.stats.num_record_batches)
            self._writer.write_table(rows.slice(a, b - a), max_chunksize=b - a)

    def _encoded(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._schema is None:
            self._schema = batch.schema
            for f in batch.schema:
                if pa.types.is_dictionary(f.type):
                    self._codes[f.name] = _Codes()
        if not self._codes:
            return batch
        cols = [self._codes[f.name].encode(batch.column(i)) if f.name in self._codes
                else batch.column(i) for i, f in enumerate(batch.schema)]
        return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)

    def _finish(self) -> None:
        self._flush()
        writer, sink, self._writer, self._sink = self._writer, self._sink, None, None
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()

    def close(self) -> None:
        """Remove the file (also after a failure half way)."""
        self._pending = []
        try:
            self._finish()
        finally:
            self.dir.cleanup()

    def _window(self, reader: pa.ipc.RecordBatchFileReader, listed: list[int]) -> pa.Table:
        t = pa.Table.from_batches([reader.get_batch(i) for i in listed], reader.schema)
        for name, codes in self._codes.items():
            t = t.set_column(t.schema.get_field_index(name), name, codes.decode(t.column(name)))
        return t

    def windows(self) -> Iterator[pa.Table]:
        """Each window's rows (windows without rows left out), in window order; the
        file is deleted at the end."""
        has_rows = self._schema is not None
        self._finish()
        if not has_rows:
            self.dir.cleanup()
            return
        fh = pa.OSFile(self.path)
        try:
            reader = pa.ipc.open_file(fh)
            for listed in self._listed:
                if listed:
                    # yielded straight from the call: this frame keeps no reference
                    # while the consumer makes its sorted copy
                    yield self._window(reader, listed)
        finally:
            fh.close()
            self.dir.cleanup()
