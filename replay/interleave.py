"""Several tables' rows, each table already in replay order, merged into one order
a bounded step at a time.

Each stream yields tables of one event table, sorted, each after the previous
one. A step hands out every held row with ``ts_recv`` below the *horizon*: the
smallest last ``ts_recv`` held by a stream that may still yield rows, below
which no stream can bring anything new. Rows at the horizon wait for the next
step (another stream may still give rows with that very ``ts_recv``); when a
stream holds nothing but rows at the horizon, it reads its next table first.
The rows of one step are put in order by ``replay.order.merge`` (stable, so
equal keys keep the streams' order: ``EVENT_TABLES`` order).

Memory: what each stream holds, about one of its tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from replay.order import Merged, merge


def _ts(table: pa.Table) -> np.ndarray:
    ts: np.ndarray = table.column("ts_recv").cast(pa.int64()).to_numpy()
    return ts


def _last_ts(table: pa.Table) -> int:
    return int(table.column("ts_recv")[-1].cast(pa.int64()).as_py())


def _empty(table: pa.Table | None) -> bool:
    return table is None or not table.num_rows


def interleave(streams: Sequence[tuple[str, Iterator[pa.Table]]],
               keys: Sequence[str]) -> Iterator[Merged]:
    """The streams' rows in replay order, as ``Merged`` steps (see the module doc)."""
    names = [name for name, _ in streams]
    sources: list[Iterator[pa.Table] | None] = [iter(s) for _, s in streams]
    held: list[pa.Table | None] = [None] * len(streams)

    def pull(i: int) -> None:
        """Stream ``i``'s next table added to what it holds (or the stream closed)."""
        src = sources[i]
        nxt = next(src, None) if src is not None else None
        if nxt is None:
            sources[i] = None
        elif nxt.num_rows:
            t = held[i]
            held[i] = nxt if _empty(t) else pa.concat_tables([t, nxt])

    while True:
        for i in range(len(streams)):
            while sources[i] is not None and _empty(held[i]):
                pull(i)
        open_ = [i for i, s in enumerate(sources) if s is not None]
        horizon = min(_last_ts(held[i]) for i in open_) if open_ else None
        parts: list[tuple[str, pa.Table]] = []
        for i, t in enumerate(held):
            if t is None or not t.num_rows:
                continue
            n = t.num_rows if horizon is None else int(np.searchsorted(_ts(t), horizon, "left"))
            if n:
                parts.append((names[i], t.slice(0, n)))
                held[i] = t.slice(n)
        if parts:
            yield merge(parts, keys)
        elif horizon is None:
            return
        else:       # every held row is at or past the horizon: read on where it is held
            for i in open_:
                if _last_ts(held[i]) == horizon:
                    pull(i)
