"""Putting one day's rows in replay order with Arrow kernels, without moving them.

- ``is_sorted``: a vectorized check that rows are already in key order (rolled
  recorder files of one run are: they are written in arrival order and named in
  that order). When they are, no sort and no copy happens.
- ``merge``: one stable ``sort_indices`` over the parts' concatenated keys (one
  Arrow table per event table, as read). Stability decides ties: rows with equal
  keys keep the concatenation order, i.e. ``EVENT_TABLES`` order across tables
  and the order read inside a table (the same order as sorting each part first
  and merging them stably). Nothing is taken: ``Merged`` holds the order, and
  for each part the rows it gives in that order (``perms``).
- ``Piece``: a run of consecutive merged positions: per part, the rows to build
  (a slice, or indices into the part), cheap to cut; ``build()`` makes the
  records through ``replay.rows.Columns`` (a numpy gather per column, no Arrow
  ``take`` of the whole part). The Arrow output (``Scan.iter_batches``) takes
  ``order`` from the concatenated parts once.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import call
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replay.rows import Columns


def sortable(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A key column as values that sort like it: text read as a dictionary becomes
    each value's rank among the dictionary's values (Arrow sorts no dictionaries,
    and decoding the text would cost more than the ranks)."""
    if not pa.types.is_dictionary(col.type):
        return col
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col   # one dictionary
    if arr.indices.null_count:
        return arr.cast(arr.type.value_type)
    ranks = np.empty(len(arr.dictionary), np.int32)
    ranks[pc.sort_indices(arr.dictionary).to_numpy()] = np.arange(len(ranks), dtype=np.int32)
    return pa.array(ranks[arr.indices.to_numpy()])


def is_sorted(table: pa.Table, keys: Sequence[str]) -> bool:
    """True when the rows are in non-decreasing lexicographic order of ``keys``."""
    n = table.num_rows
    if n < 2:
        return True
    tied: pa.Array | None = None        # pairs (i, i+1) equal on every key so far
    for key in keys:
        col = sortable(table.column(key))
        prev, nxt = col.slice(0, n - 1), col.slice(1)
        if tied is not None:
            prev, nxt = prev.take(tied), nxt.take(tied)
        if pc.any(pc.less(nxt, prev)).as_py():
            return False
        eq = pc.equal(nxt, prev)
        if not pc.any(eq).as_py():
            return True
        tied = pc.indices_nonzero(eq) if tied is None else pc.filter(tied, eq)
    return True


def key_order(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """The stable key order of ``table``'s rows, as indices. The first key
    (``ts_recv``) is sorted with numpy; only rows that tie on it are sorted again
    by the full key (Arrow), in place, so the ties' order is the full key's."""
    first = table.column(keys[0])
    first = first.cast(pa.int64()) if pa.types.is_timestamp(first.type) else first
    ts = first.to_numpy()
    order = np.argsort(ts, kind="stable")
    ranked = ts[order]
    equal = ranked[1:] == ranked[:-1]
    if len(keys) > 1 and equal.any():
        tied = np.zeros(len(ranked), bool)
        tied[1:] |= equal
        tied[:-1] |= equal
        where = np.flatnonzero(tied)         # runs of one ts_recv, in ts_recv order
        rows = order[where]
        key_table = pa.table({k: sortable(table.column(k)) for k in keys}).take(rows)
        again = pc.sort_indices(key_table, sort_keys=[(k, "ascending") for k in keys])
        order[where] = rows[again.to_numpy()]
    return order


@dataclass
class Merged:
    """Rows of several tables in one order, nothing moved yet.

    ``parts[p]`` is a table as read; ``order[i]`` is the row, in the concatenation of
    the parts, that comes ``i``-th (``None``: the concatenation is in order);
    ``which[i]`` the part it comes from (``None`` for a single part); ``perms[p]``
    the rows of part ``p`` in the order they come (``None``: in read order).
    """
    parts: list[tuple[str, pa.Table]]
    order: np.ndarray | None
    which: np.ndarray | None
    perms: list[np.ndarray | None]

    @property
    def rows(self) -> int:
        return sum(t.num_rows for _, t in self.parts)

    def pieces(self, rows: int) -> Iterator[Piece]:
        """Consecutive pieces of at most ``rows`` merged positions, in order. The
        parts' columns are prepared for building here (``Columns``), once per part."""
        cols = [Columns(name, t) for name, t in self.parts]
        picks = [(c, slice(0, c.rows) if perm is None else perm, c.rows)
                 for c, perm in zip(cols, self.perms)]
        return Piece(picks, self.which).split(rows)


@dataclass
class Piece:
    """Merged positions to build: per part its ``Columns``, the rows to take (in
    order) and how many; ``which[i]`` = the part of position ``i`` (int8 array;
    ``None``: one part)."""
    picks: list[tuple[Columns, Any, int]]
    which: np.ndarray | None

    def __len__(self) -> int:
        return sum(n for _, _, n in self.picks)

    def split(self, rows: int) -> Iterator[Piece]:
        """Consecutive pieces of at most ``rows`` of these positions, in order."""
        total = len(self)
        done = [0] * len(self.picks)            # rows of each part handed out so far
        for off in range(0, total, rows):
            if self.which is None:
                counts, which = [min(rows, total - off)], None
            else:
                which = self.which[off:off + rows]
                counts = np.bincount(which, minlength=len(self.picks)).tolist()
            picks = []
            for (cols, idx, _), n, a in zip(self.picks, counts, done, strict=True):
                picks.append((cols, _positions(idx, a, n), n))
            done = [a + n for a, n in zip(done, counts, strict=True)]
            yield Piece(picks, which)

    def build(self, venue: str) -> list[Any]:
        """The records, in order (``Columns.build`` per part, then interleaved)."""
        if self.which is None:
            cols, idx, _ = self.picks[0]
            return cols.build(venue, idx)
        nexts = [iter(cols.build(venue, idx) if n else ()).__next__ for cols, idx, n in self.picks]
        return [nexts[p]() for p in self.which.tolist()]

    def ts_recv(self) -> np.ndarray:
        """Each position's ``ts_recv`` (int64 ns), in order, without making the records
        (numpy: a paced feed's deadlines are computed from it in one step)."""
        if self.which is None:
            cols, idx, _ = self.picks[0]
            return cols.ts_recv(idx)
        out = np.empty(len(self.which), np.int64)
        for p, (cols, idx, n) in enumerate(self.picks):
            if n:
                out[self.which == p] = cols.ts_recv(idx)
        return out

    def records(self, venue: str) -> Iterator[Any]:
        """The records of ``build``, made one at a time as they are taken
        (``Columns.records`` per part, interleaved by ``which``)."""
        if self.which is None:
            cols, idx, _ = self.picks[0]
            return cols.records(venue, idx)
        # A part with no rows in this piece gets None: ``which`` never names it.
        nexts: list[Any] = [cols.records(venue, idx).__next__ if n else None
                            for cols, idx, n in self.picks]
        return map(call, map(nexts.__getitem__, self.which.tolist()))


def _positions(idx: Any, start: int, n: int) -> Any:
    """Rows ``start`` to ``start + n`` of ``idx``: a slice of a slice, or of an index array."""
    if isinstance(idx, slice):
        first = idx.start or 0
        return slice(first + start, first + start + n)
    return idx[start:start + n]


def merge(parts: list[tuple[str, pa.Table]], keys: Sequence[str]) -> Merged:
    """The replay order of ``parts`` (see module doc). ``parts`` must not be empty.

    One part is kept as read, in chunks: ``gather.take`` takes from them directly and
    ``Columns`` makes each column contiguous once. Several parts not read in order
    are made contiguous here (``combine_chunks``)."""
    if len(parts) == 1:
        table = parts[0][1]
        if is_sorted(table, keys):
            return Merged(parts, None, None, [None])
        order = key_order(table, keys)
        return Merged(parts, order, None, [order])
    key_table = pa.table({
        k: pa.chunked_array([c for _, t in parts for c in t.column(k).chunks],
                            type=parts[0][1].schema.field(k).type)
        for k in keys})
    order = key_order(key_table, keys)
    sizes = [t.num_rows for _, t in parts]
    starts = np.cumsum([0, *sizes[:-1]])
    which = np.repeat(np.arange(len(parts), dtype=np.int8), sizes)[order]
    perms: list[np.ndarray | None] = []
    for p, (start, size) in enumerate(zip(starts.tolist(), sizes)):
        perm = order[which == p] - start
        perms.append(None if (perm == np.arange(size)).all() else perm)
    parts = [(name, t.combine_chunks()) for name, t in parts]
    return Merged(parts, order, which, perms)
