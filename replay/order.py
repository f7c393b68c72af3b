"""Putting one day's rows in replay order with Arrow kernels.

- ``is_sorted``: a vectorized check that rows are already in key order (rolled
  recorder files of one run are: they are written in arrival order and named in
  that order). When they are, no sort and no copy happens.
- ``merge``: the parts (one Arrow table per event table) are each put in key
  order, then merged by a stable ``sort_indices`` over their concatenated keys.
  Stability decides ties: rows with equal keys keep the concatenation order, i.e.
  ``EVENT_TABLES`` order across tables and the sorted order inside a table.
  Inside one part the merged order visits rows in their sorted order, so the
  records of a chunk are contiguous slices of each part (``which`` says which
  part each merged position comes from).
- ``Piece``: a run of consecutive merged positions as zero-copy Arrow slices;
  cheap to cut (no Python objects), ``build()`` turns it into records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from replay.rows import build


def is_sorted(table: pa.Table, keys: Sequence[str]) -> bool:
    """True when the rows are in non-decreasing lexicographic order of ``keys``."""
    n = table.num_rows
    if n < 2:
        return True
    tied: pa.Array | None = None        # pairs (i, i+1) equal on every key so far
    for key in keys:
        col = table.column(key)
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


def sort_table(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """``table`` in key order (itself when it already is; stable otherwise)."""
    if is_sorted(table, keys):
        return table
    order = pc.sort_indices(table.select(list(keys)), sort_keys=[(k, "ascending") for k in keys])
    # take() over many chunks resolves every index through the chunk layout: slower
    # than one concatenation first (list columns most of all).
    return table.combine_chunks().take(order)


@dataclass
class Merged:
    """Rows of several tables in one order.

    ``parts[p]`` is sorted; merged position ``i`` is the next unread row of part
    ``which[i]``; ``order[i]`` is its index in the concatenation of the parts.
    ``which``/``order`` are ``None`` for a single part (the order is the part's).
    """
    parts: list[tuple[str, pa.Table]]
    which: pa.Array | None
    order: pa.Array | None

    @property
    def rows(self) -> int:
        return sum(t.num_rows for _, t in self.parts)

    def pieces(self, rows: int) -> Iterator[Piece]:
        """Consecutive pieces of at most ``rows`` merged positions, in order."""
        if self.which is None:
            name, table = self.parts[0]
            for off in range(0, table.num_rows, rows):
                yield Piece([(name, table.slice(off, rows))], None)
            return
        done = [0] * len(self.parts)            # rows of each part handed out so far
        for off in range(0, len(self.which), rows):
            which = self.which.slice(off, rows).to_pylist()
            slices = []
            for p, (name, table) in enumerate(self.parts):
                n = which.count(p)
                slices.append((name, table.slice(done[p], n)))
                done[p] += n
            yield Piece(slices, which)


@dataclass
class Piece:
    """Merged positions as Arrow slices: ``which[i]`` = the part of position ``i``
    (``None``: a single part)."""
    slices: list[tuple[str, pa.Table]]
    which: list[int] | None

    def __len__(self) -> int:
        return sum(t.num_rows for _, t in self.slices)

    def build(self, venue: str) -> list[Any]:
        """The records, in order (``replay.rows.build`` per part, then interleaved)."""
        if self.which is None:
            name, table = self.slices[0]
            return build(name, venue, table)
        nexts = [iter(build(name, venue, t) if t.num_rows else ()).__next__
                 for name, t in self.slices]
        return [nexts[p]() for p in self.which]


def merge(parts: list[tuple[str, pa.Table]], keys: Sequence[str]) -> Merged:
    """Sort each part, then merge them (see module doc). ``parts`` must not be empty."""
    parts = [(name, sort_table(t, keys)) for name, t in parts]
    if len(parts) == 1:
        return Merged(parts, None, None)
    key_table = pa.table({
        k: pa.chunked_array([c for _, t in parts for c in t.column(k).chunks],
                            type=parts[0][1].schema.field(k).type)
        for k in keys})
    order = pc.sort_indices(key_table, sort_keys=[(k, "ascending") for k in keys])
    part_of = pa.chunked_array(
        [pa.repeat(pa.scalar(p, pa.int8()), t.num_rows) for p, (_, t) in enumerate(parts)],
        type=pa.int8())
    which = part_of.take(order)
    if isinstance(which, pa.ChunkedArray):
        which = which.combine_chunks()
    return Merged(parts, which, order)
