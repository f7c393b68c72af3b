"""One table's rows of a day as segments: sets of row groups that can be put in
replay order on their own, one after the other.

A segment is a set of row groups whose ``ts_recv`` spans (from the statistics)
chain into one interval that no other segment's interval meets; spans that
touch chain too, so all rows sharing a ``ts_recv`` are in one segment. Putting
each segment in order and handing the segments out by time gives the table's
whole order. Inside a segment the groups are read by file name, then row
group: the order in which rows with the same full key stay (a store defect).

- Rolled recorder files (arrival order) give one segment per row group, or a
  few groups where a frame's rows straddle them: each is read whole, usually
  already in order (no sort, no copy).
- A sealed day is sorted by symbol, so every row group spans the day: one
  segment as big as the day. It is read once, in file order, and routed to
  ``ts_recv`` windows through a spill on local disk (``replay.windows``), then
  handed out window by window: memory follows a window, not the day.

``read`` yields the segment's rows as tables, each a ``ts_recv`` range after the
previous one; a table is not yet sorted (``replay.order`` does that).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from replay import stream
from replay.stream import GroupRef
from replay.windows import Group, Spill, cuts

SPILL_BATCH_ROWS = 16_384      # the spill pass's batches
WHOLE_BATCH_ROWS = 1 << 20     # a direct read: whole row groups


@dataclass(frozen=True)
class Segment:
    """Row groups (in read order: file name, then group) whose rows all have
    ``ts_recv`` in [lo, hi] (inclusive, clipped to the range asked for)."""
    groups: tuple[GroupRef, ...]
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.groups)


def _span(g: GroupRef, lo: int, hi: int) -> tuple[int, int]:
    """The group's span clipped to [lo, hi) (no statistics: all of it)."""
    if g.span is None:
        return lo, hi - 1
    return max(g.span[0], lo), min(g.span[1], hi - 1)


def segments(groups: Sequence[GroupRef], lo: int, hi: int) -> list[Segment]:
    """The groups that can hold rows in [lo, hi), as segments in time order."""
    spans = sorted((_span(g, lo, hi), g.path, g.index, g) for g in groups if g.meets(lo, hi))
    out: list[Segment] = []
    members: list[GroupRef] = []
    first = last = 0
    for (a, b), _, _, g in spans:
        if members and a > last:
            out.append(Segment(tuple(sorted(members, key=lambda m: (m.path, m.index))), first, last))
            members = []
        if not members:
            first, last = a, b
        members.append(g)
        last = max(last, b)
    if members:
        out.append(Segment(tuple(sorted(members, key=lambda m: (m.path, m.index))), first, last))
    return out


def _by_file(seg: Segment) -> Iterator[tuple[str, list[GroupRef]]]:
    for path, refs in groupby(seg.groups, key=lambda g: g.path):
        yield path, list(refs)


def _with_nulls(t: pa.Table, columns: Sequence[str], nulls: Sequence[str],
                schema: pa.Schema) -> pa.Table:
    """``t`` with the columns ``nulls`` added as null columns, in ``columns`` order."""
    if not nulls:
        return t
    fields = [t.schema.field(c) if c not in nulls
              else schema.field(c).with_type(stream.read_type(schema.field(c).type))
              for c in columns]
    return pa.table([t.column(f.name) if f.name not in nulls else pa.nulls(t.num_rows, f.type)
                     for f in fields], schema=pa.schema(fields))


def read(seg: Segment, filesystem: pafs.FileSystem | None, schema: pa.Schema,
         columns: Sequence[str], where: ds.Expression, exact: bool, lo: int, hi: int,
         window_rows: int, direct_rows: int) -> Iterator[pa.Table]:
    """The rows of ``seg`` matching ``where`` (the range [lo, hi)
    and any symbol filter), as tables of consecutive ``ts_recv`` ranges; ``exact``:
    no symbol filter, so groups inside [lo, hi) need no filtering. At most
    ``direct_rows`` rows are read in one piece; a bigger segment is spilled and
    handed out in windows of about ``window_rows`` rows. Columns that the statistics
    show hold only nulls in every group are not read (nor spilled): each table
    gets them as null columns."""
    nulls = stream.null_columns(seg.groups, columns)
    read_cols = [c for c in columns if c not in nulls]

    def rows_of(batch_rows: int, threads: bool) -> Iterator[pa.RecordBatch]:
        for path, refs in _by_file(seg):
            need = not exact or not all(g.inside(lo, hi) for g in refs)
            yield from stream.batches(path, filesystem, schema, read_cols,
                                      [g.index for g in refs], where if need else None,
                                      batch_rows, threads, refs[0].metadata)
    if seg.rows <= direct_rows:
        batches = list(rows_of(WHOLE_BATCH_ROWS, True))
        if batches:
            yield _with_nulls(pa.Table.from_batches(batches), columns, nulls, schema)
        return
    bounds = cuts([Group(g.rows, *_span(g, lo, hi)) for g in seg.groups],
                  seg.lo, seg.hi + 1, window_rows)
    spill = Spill(bounds)
    try:
        # Decoded on this thread: decoded on the pool's threads and freed on this
        # one, batches left the allocator holding 60 MB more at 2x10M rows (mimalloc)
        for batch in rows_of(SPILL_BATCH_ROWS, False):
            spill.add(batch)
        for window in spill.windows():
            yield _with_nulls(window, columns, nulls, schema)
            del window
    finally:
        spill.close()
