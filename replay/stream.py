"""Pull-based reading of Parquet files, batch by batch, in bounded memory.

The dataset scanner (``Dataset.to_batches``) decodes on background threads and,
measured with pyarrow 26, does not hold back when its consumer is slower than
the decoding: its readahead settings bound nothing, and the spill pass of a
sealed day (``replay.windows``) held hundreds of MB of decoded batches waiting.
``batches`` decodes a batch only when asked for it (``ParquetFile.iter_batches``,
no pre-buffering: pyarrow's read cache would keep every column chunk of the file
read so far), so at most one batch and the current pages are alive.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from replay.windows import ts_span


def _keep(md: pq.RowGroupMetaData, names: list[str], lo: int, hi: int,
          symbols: Sequence[str] | None) -> bool:
    """Whether the row group's statistics allow rows with ``ts_recv`` in [lo, hi)
    (and one of ``symbols``); no statistics: kept."""
    span = ts_span(md, names)
    if span is not None and (span[1] < lo or span[0] >= hi):
        return False
    if symbols is not None and "symbol" in names:
        st = md.column(names.index("symbol")).statistics
        if st is not None and st.has_min_max and not any(st.min <= s <= st.max for s in symbols):
            return False
    return True


def batches(path: str, filesystem: pafs.FileSystem | None, schema: pa.Schema,
            columns: Sequence[str], where: ds.Expression, lo: int, hi: int,
            symbols: Sequence[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of one file matching ``where`` as batches of ``columns`` (typed by ``schema``),
    in file order (row groups pruned by their ``ts_recv``/``symbol`` statistics
    against [lo, hi) and ``symbols``). Columns the file lacks (an older schema)
    read as nulls; the others are cast to ``schema``'s types."""
    pf = pq.ParquetFile(path, filesystem=filesystem, pre_buffer=False)
    try:
        md = pf.metadata
        names = md.schema.names
        groups = [i for i in range(md.num_row_groups)
                  if _keep(md.row_group(i), names, lo, hi, symbols)]
        if not groups:
            return
        # the filter's columns are read too, and dropped after filtering
        wanted = list(columns) + [c for c in ("ts_recv", "symbol")
                                  if c in schema.names and c not in columns]
        read = pa.schema([schema.field(c) for c in wanted])
        present = [c for c in read.names if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_rows, row_groups=groups, columns=present):
            n = batch.num_rows
            cols = [batch.column(f.name).cast(f.type) if f.name in present
                    else pa.nulls(n, f.type) for f in read]
            batch = pa.RecordBatch.from_arrays(cols, schema=read).filter(where)
            if batch.num_rows:
                yield batch.select(list(columns))
    finally:
        pf.close()
