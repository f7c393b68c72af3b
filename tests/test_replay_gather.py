"""``replay.gather.take`` is ``Table.take``, list columns of one width and columns of
nulls only included, from a table in chunks into one chunk per column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import gather

LEVELS = pa.list_(pa.float64())


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.one_of(st.none(), st.lists(st.floats(allow_nan=False), min_size=0,
                                                   max_size=3)), max_size=12),
       width=st.sampled_from([None, 1, 5]), cut=st.integers(0, 3), data=st.data())
def test_take_is_arrow_take(rows: list, width: int | None, cut: int, data: st.DataObject) -> None:
    if width is not None:        # book-like: every list of one width, no nulls
        rows = [[float(i * width + j) for j in range(width)] for i in range(len(rows))]
    levels = pa.array([[-1.0]] * cut + rows, LEVELS).slice(cut)     # offsets not from 0
    table = pa.table({"levels": levels, "n": pa.array(range(len(rows)), pa.int64()),
                      "s": pa.array(["x"] * len(rows)).dictionary_encode(),
                      "unused": pa.nulls(len(rows), pa.float64()),
                      "no_text": pa.nulls(len(rows), pa.dictionary(pa.int32(), pa.string()))})
    split = data.draw(st.integers(0, len(rows)))        # in two chunks, as read
    table = pa.concat_tables([table.slice(0, split), table.slice(split)])
    idx = np.asarray(data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)),
                                        max_size=20 if rows else 0)), np.int64)
    got = gather.take(table, idx)
    want = table.take(pa.array(idx, pa.int64()))
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert all(c.num_chunks <= 1 for c in got.columns)
