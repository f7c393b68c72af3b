"""Reading row groups of Parquet files, whole or batch by batch, in bounded memory.

``plan`` reads a file's footer and lists its row groups that can hold rows of a
``ts_recv`` range (and of some symbols), with each group's ``ts_recv`` span
from the statistics. ``batches`` reads chosen row groups of one file:

- decoded only as they are consumed (``ParquetFile.iter_batches``, no
  pre-buffering: pyarrow's read cache would keep every column chunk of the file
  read so far; the dataset scanner, measured with pyarrow 26, decodes ahead of
  a slow consumer whatever its readahead settings);
- filtered only when asked (``where``): a group that lies inside the range, with
  no symbol filter, is read as it is;
- text columns are read as dictionaries (``read_type``: their codes as stored;
  symbols and sessions repeat), columns a file lacks (an older schema) read as
  nulls, the others are cast to the table's types. Consumers decode text when
  they hand it out (after sorting: a gather of codes is cheaper than one of text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from replay.windows import ts_span


@dataclass(frozen=True)
class GroupRef:
    """One row group of one file: its rows and its ``ts_recv`` span from the
    statistics (inclusive, ns; ``None`` when the group has none)."""
    path: str
    index: int
    rows: int
    span: tuple[int, int] | None
    metadata: pq.FileMetaData | None = field(default=None, compare=False, repr=False)  # its file's

    def meets(self, lo: int, hi: int) -> bool:
        """Whether it can hold rows with ``ts_recv`` in [lo, hi)."""
        return self.span is None or not (self.span[1] < lo or self.span[0] >= hi)

    def inside(self, lo: int, hi: int) -> bool:
        """Whether all its rows have ``ts_recv`` in [lo, hi)."""
        return self.span is not None and lo <= self.span[0] and self.span[1] < hi


def _symbols_may_match(md: pq.RowGroupMetaData, names: list[str],
                       symbols: Sequence[str] | None) -> bool:
    if symbols is None or "symbol" not in names:
        return True
    st = md.column(names.index("symbol")).statistics
    return st is None or not st.has_min_max or any(st.min <= s <= st.max for s in symbols)


def plan(path: str, filesystem: pafs.FileSystem | None,
         symbols: Sequence[str] | None) -> list[GroupRef]:
    """The non-empty row groups of ``path`` whose ``symbol`` statistics allow one of
    ``symbols`` (None: all), in file order (one footer read)."""
    md = pq.read_metadata(path, filesystem=filesystem)
    names = md.schema.names
    out = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        if rg.num_rows and _symbols_may_match(rg, names, symbols):
            out.append(GroupRef(path, i, rg.num_rows, ts_span(rg, names), md))
    return out


def null_columns(groups: Sequence[GroupRef], columns: Sequence[str]) -> list[str]:
    """Those of ``columns`` that hold nothing but nulls in every one of ``groups``, by
    the statistics (a flat column whose null count is the group's rows, or one a
    file lacks): they need not be read. A group without a footer, or a column
    without a null count (lists have none), is taken to hold values."""
    if any(g.metadata is None for g in groups):
        return []
    paths: dict[int, list[str]] = {}        # per footer: its leaf columns' paths
    out = []
    for c in columns:
        for g in groups:
            md = g.metadata
            assert md is not None
            leaves = paths.get(id(md))
            if leaves is None:
                leaves = paths[id(md)] = [md.schema.column(i).path for i in range(md.num_columns)]
            if c in leaves:
                st = md.row_group(g.index).column(leaves.index(c)).statistics
                if st is None or not st.has_null_count or st.null_count != g.rows:
                    break
            elif any(p.split(".", 1)[0] == c for p in leaves):      # a nested column
                break
        else:
            out.append(c)
    return out


TEXT = pa.dictionary(pa.int32(), pa.string())


def read_type(typ: pa.DataType) -> pa.DataType:
    """How a column of the table's type ``typ`` is read: text as a dictionary."""
    return TEXT if typ == pa.string() else typ


def _typed(col: pa.Array, typ: pa.DataType) -> pa.Array:
    if col.type == typ:
        return col
    if typ == TEXT:
        return col.cast(pa.string()).dictionary_encode()
    return col.cast(typ)


def batches(path: str, filesystem: pafs.FileSystem | None, schema: pa.Schema,
            columns: Sequence[str], groups: Sequence[int], where: ds.Expression | None,
            batch_rows: int, threads: bool = True,
            metadata: pq.FileMetaData | None = None) -> Iterator[pa.RecordBatch]:
    """Row groups ``groups`` of one file, in that order, as batches of ``columns``
    (typed by ``schema``, text as ``TEXT``), keeping only the rows matching
    ``where`` (None: all). ``threads``: columns decoded on Arrow's thread pool and
    read with pyarrow's coalescing read cache (faster; for small reads only: the
    cache keeps every column chunk read until the file is done, and the allocator
    keeps more memory when batches are decoded on other threads). ``metadata``: the
    file's footer when ``plan`` has already read it (not read again)."""
    if not groups:
        return
    wanted = list(columns)
    if where is not None:       # the filter's columns are read too, dropped after
        wanted += [c for c in ("ts_recv", "symbol") if c in schema.names and c not in columns]
    md = metadata if metadata is not None else pq.read_metadata(path, filesystem=filesystem)
    texts = [c for c in wanted if schema.field(c).type == pa.string() and c in md.schema.names]
    pf = pq.ParquetFile(path, filesystem=filesystem, metadata=md, pre_buffer=threads,
                        read_dictionary=texts)
    try:
        read = pa.schema([schema.field(c).with_type(read_type(schema.field(c).type))
                          for c in wanted])
        present = [c for c in read.names if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_rows, row_groups=list(groups), columns=present,
                                     use_threads=threads):
            n = batch.num_rows
            cols = [_typed(batch.column(f.name), f.type) if f.name in present
                    else pa.nulls(n, f.type) for f in read]
            batch = pa.RecordBatch.from_arrays(cols, schema=read)
            if where is not None:
                batch = batch.filter(where).select(list(columns))
            if batch.num_rows:
                yield batch
    finally:
        pf.close()
