"""``take`` of a table's rows, with list columns of one width gathered as blocks.

Arrow's ``take`` builds a list column's result row by row (new offsets, then the
values of each list): for 5-level book columns that is most of a replay's
gathering time. A list column whose lists all have one width and no nulls (book
levels) is a 2-D block of values: it is gathered as a fixed-size list (one
fixed-width gather of the values) and turned back into a list column, the
same values and type. A column of nulls only (a vendor's unused field) is not
gathered at all: Arrow's ``take`` of one costs more than of real values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def _uniform_width(arr: pa.Array) -> int | None:
    """The width of every list in ``arr`` when they are all equal and not null."""
    if not pa.types.is_list(arr.type) or arr.null_count or not len(arr):
        return None
    offsets = arr.offsets.to_numpy()
    width = int(offsets[1] - offsets[0])
    if width <= 0 or int(offsets[-1] - offsets[0]) != width * len(arr):
        return None
    return width if (np.diff(offsets) == width).all() else None


def _take_list(arr: pa.Array, indices: Any) -> pa.Array:
    width = _uniform_width(arr)
    if width is None or arr.values.null_count:
        return arr.take(indices)
    first = arr.offsets[0].as_py()
    values = arr.values.slice(first, width * len(arr))
    taken = pa.FixedSizeListArray.from_arrays(values, width).take(indices)
    n = len(taken)
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, taken.values, type=arr.type)


def take(table: pa.Table, indices: Any) -> pa.Table:
    """``table.take(indices)``, each column as one chunk. Columns in several chunks
    are not concatenated first (Arrow's take resolves the chunks: with pyarrow 26,
    30-45 against 40-60 ns a row for concatenating and then taking), but list
    columns are: their block gather needs one array."""
    cols = []
    for col in table.columns:
        if len(col) and col.null_count == len(col):
            cols.append(pa.nulls(len(indices), col.type))
        elif pa.types.is_list(col.type):
            cols.append(_take_list(col.chunk(0) if col.num_chunks == 1 else col.combine_chunks(),
                                   indices))
        else:
            cols.append(col.take(indices))
    out = pa.Table.from_arrays(cols, schema=table.schema)
    # pyarrow 26 gives one chunk here anyway; callers rely on it
    return out if all(c.num_chunks <= 1 for c in out.columns) else out.combine_chunks()
