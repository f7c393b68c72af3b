"""AllTick's columnar fast path: the trade and depth pushes of a batch decoded at once.

``AllTickDecoder.feed_batch`` uses it; the reference path is ``on_incoming``. A
push qualifies when its JSON is in the canonical form the vendor sends (keys in
PROTOCOLS.md's order; see ``schemas.venues.columnar``), it is within the frame
size limit, and ``tick_time`` is in the range ``epoch_ns`` accepts as it is. The
fields of every qualifying push are cut out and cast in bulk; the state that is
sequential (subscriptions in force, the gap tracker) still sees every frame in
order, in ``AllTickDecoder.feed_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import Book, RawRecord, Trade
from schemas.tables import TABLES
from schemas.venues import columnar as col
from schemas.venues.base import MAX_FRAME_BYTES

TRADE, DEPTH = 1, 2
PREFIX = {TRADE: b'{"cmd_id":22998,', DEPTH: b'{"cmd_id":22999,'}
PREFIXES = tuple(PREFIX.values())
_HEAD = (r',"data":\{"code":' + col.TEXT + r',"seq":' + col.INT + r',"tick_time":' + col.INT
         + r',')
_LEVEL = r'\{"price":' + col.NUM + r',"volume":' + col.NUM + r'\}'
_LEVELS = r'(?:' + _LEVEL + r'(?:,' + _LEVEL + r')*)?'
SHAPE = {
    TRADE: (r'^\{"cmd_id":22998' + _HEAD + r'"price":' + col.NUM + r',"volume":' + col.NUM
            + r',"turnover":' + col.NUM + r',"trade_direction":' + col.INT + r'\}\}$'),
    DEPTH: (r'^\{"cmd_id":22999' + _HEAD + r'"bids":\[' + _LEVELS + r'\],"asks":\['
            + _LEVELS + r'\]\}\}$'),
}
# Without quotes and split on commas, a trade is 8 tokens: (token, key prefix, suffix).
_TRADE_FIELDS = {"price": (4, 6, 0), "size": (5, 7, 0), "turnover": (6, 9, 0),
                 "direction": (7, 16, 2)}
_HEAD_FIELDS = {"symbol": (1, 11), "seq": (2, 4), "tt": (3, 10)}
# A depth push after these replacements: 4 head tokens, "bids:", price/volume pairs,
# "asks:", price/volume pairs.
_DEPTH_DROP = (("[]", ""), ("{price:", ""), ("volume:", ""), ("}", ""), ("]", ""), ("[", ","))
_SECONDS_MAX = (2**63 - 1) // 1_000_000_000       # epoch seconds whose ns fit int64
_MS_MIN, _MS_MAX = 100_000_000_000, 4_000_000_000_000
_SIDE = pa.array(["unknown", "buy", "sell"])
_TS = TABLES["trades"].field("ts_recv").type
CLASSES = {TRADE: Trade, DEPTH: Book}
_EVENT_FIELDS = {TRADE: ("price", "size", "turnover", "side"),
                 DEPTH: ("depth", "bid_px", "bid_sz", "ask_px", "ask_sz")}


@dataclass
class Pushes:
    """The qualifying pushes of a batch: per record its shape (0: not qualifying), its
    symbol and seq (None when not qualifying), its row among its shape's rows, and per
    shape the rows in record order as Arrow columns."""
    kinds: list[int]
    symbols: list[str | None]
    seqs: list[int | None]
    row: list[int]
    columns: dict[int, dict[str, pa.Array]]
    _py: dict[tuple[int, str], list[Any]] = field(default_factory=dict)
    _tables: dict[int, pa.Table] = field(default_factory=dict)

    def py(self, kind: int, name: str) -> list[Any]:
        """One column as Python values (converted once)."""
        key = (kind, name)
        if key not in self._py:
            self._py[key] = self.columns[kind][name].to_pylist()
        return self._py[key]

    def table(self, kind: int) -> pa.Table:
        """All rows of a shape as a table of its schema (built once)."""
        if kind not in self._tables:
            schema = TABLES["trades" if kind == TRADE else "book"]
            cols = self.columns[kind]
            self._tables[kind] = pa.Table.from_arrays([cols[f.name] for f in schema],
                                                      schema=schema)
        return self._tables[kind]

    def event_fields(self, kind: int, j: int) -> dict[str, Any]:
        """Row ``j`` of a shape as its event's keyword arguments (symbol onwards)."""
        out = {"symbol": self.py(kind, "symbol")[j], "ts_event": self.py(kind, "ts_event_ns")[j],
               "seq": self.py(kind, "seq")[j]}
        for name in _EVENT_FIELDS[kind]:
            out[name] = self.py(kind, name)[j]
        return out


def parse(recs: Sequence[RawRecord], session: str) -> Pushes:
    """Find and decode the qualifying pushes among ``recs``."""
    n = len(recs)
    payloads = col.binary_array([r.payload for r in recs])
    small = pc.less_equal(pc.binary_length(payloads), MAX_FRAME_BYTES)
    kinds = np.zeros(n, np.int8)
    columns: dict[int, dict[str, pa.Array]] = {}
    at: dict[int, np.ndarray] = {}
    for kind in (TRADE, DEPTH):
        mine = pc.and_(small, pc.starts_with(payloads, PREFIX[kind].decode()))
        rows = pc.indices_nonzero(mine)
        frames = payloads.take(rows)
        ok = pc.match_substring_regex(frames, SHAPE[kind])
        rows, frames = rows.filter(ok), frames.filter(ok)
        fields = _trade_fields if kind == TRADE else _depth_fields
        found = fields(frames)
        if found is None:           # some are out of bounds: keep the others, cut again
            keep = pa.array(_in_bounds(frames, kind))
            rows, frames = rows.filter(keep), frames.filter(keep)
            found = fields(frames)
            assert found is not None
        idx = rows.to_numpy().astype(np.int64)
        kinds[idx] = kind
        at[kind] = idx
        found.update(ts_recv=pa.array([recs[i].ts_recv for i in idx.tolist()], _TS),
                     session=col.constant(session, len(idx)),
                     frame=pa.array([recs[i].frame for i in idx.tolist()], pa.int64()),
                     pos=pa.array(np.zeros(len(idx), np.int32)))
        columns[kind] = found
    # per record: its row among its shape's rows, its symbol and seq (None if not a push)
    where = np.zeros(n, np.int64)
    row = np.zeros(n, np.int64)
    nt, nd = len(at[TRADE]), len(at[DEPTH])
    slow = np.flatnonzero(kinds == 0)
    row[at[TRADE]] = np.arange(nt)
    row[at[DEPTH]] = np.arange(nd)
    where[at[TRADE]] = np.arange(nt)
    where[at[DEPTH]] = nt + np.arange(nd)
    where[slow] = nt + nd + np.arange(len(slow))
    pick = pa.array(where)
    symbols = pa.concat_arrays([columns[TRADE]["symbol"], columns[DEPTH]["symbol"],
                                pa.nulls(len(slow), pa.string())]).take(pick)
    seqs = pa.concat_arrays([columns[TRADE]["seq"], columns[DEPTH]["seq"],
                             pa.nulls(len(slow), pa.int64())]).take(pick)
    return Pushes(kinds.tolist(), symbols.to_pylist(), seqs.to_pylist(), row.tolist(), columns)


def _head(flat: pa.Array, starts: np.ndarray) -> tuple[dict[str, pa.Array], np.ndarray]:
    """symbol, seq, tick_time of each frame, and which frames are in bounds so far."""
    got = {name: col.field(flat, starts + at, prefix) for name, (at, prefix) in _HEAD_FIELDS.items()}
    ok = col.fits(got["seq"], col.MAX_INT_CHARS) & col.fits(got["tt"], col.MAX_INT_CHARS)
    return got, ok


def _times(got: dict[str, pa.Array], ok: np.ndarray) -> np.ndarray | None:
    """``ts_event`` in ns (as ``epoch_ns``) where every frame is in bounds, else None."""
    if not ok.all():
        return None
    tt = got["tt"].cast(pa.int64()).to_numpy()
    if not ((tt <= _MS_MAX) & ((tt >= _MS_MIN) | (tt <= _SECONDS_MAX))).all():
        return None
    ns: np.ndarray = np.where(tt < _MS_MIN, tt * 1_000_000_000, tt * 1_000_000)
    return ns


def _common(got: dict[str, pa.Array], ts_event: np.ndarray) -> dict[str, pa.Array]:
    ns = pa.array(ts_event, pa.int64())
    return {"symbol": got["symbol"], "seq": got["seq"].cast(pa.int64()),
            "ts_event": ns.cast(_TS), "ts_event_ns": ns}


def _trade_fields(frames: pa.Array) -> dict[str, pa.Array] | None:
    flat, offsets = col.tokens(frames, ())
    starts = offsets[:-1]
    got, ok = _head(flat, starts)
    for name, (at, prefix, suffix) in _TRADE_FIELDS.items():
        got[name] = col.field(flat, starts + at, prefix, suffix)
        ok &= col.fits(got[name], col.MAX_INT_CHARS if name == "direction" else col.MAX_NUM_CHARS)
    ts_event = _times(got, ok)
    if ts_event is None:
        return None
    n = len(frames)
    direction = got["direction"].cast(pa.int64()).to_numpy()
    side = np.where((direction == 1) | (direction == 2), direction, 0)
    return {**_common(got, ts_event),
            "price": got["price"].cast(pa.float64()), "size": got["size"].cast(pa.float64()),
            "turnover": got["turnover"].cast(pa.float64()), "side": _SIDE.take(pa.array(side)),
            "trade_type": pa.nulls(n, pa.string()), "extras": pa.nulls(n, pa.string())}


def _depth_fields(frames: pa.Array) -> dict[str, pa.Array] | None:
    flat, offsets = col.tokens(frames, _DEPTH_DROP)
    starts, ends = offsets[:-1], offsets[1:]
    got, ok = _head(flat, starts)
    asks = pc.indices_nonzero(pc.equal(flat, "asks:")).to_numpy().astype(np.int64)
    asks = asks[np.searchsorted(asks, starts + 5)]          # the marker after the head
    n_bids, n_asks = (asks - starts - 5) // 2, (ends - asks - 1) // 2
    bid_at = col.ranges(starts + 5, n_bids, 2)
    ask_at = col.ranges(asks + 1, n_asks, 2)
    values = {}
    for name, at in (("bid_px", bid_at), ("bid_sz", bid_at + 1), ("ask_px", ask_at),
                     ("ask_sz", ask_at + 1)):
        tok = flat.take(pa.array(at))
        long = ~col.fits(tok, col.MAX_NUM_CHARS)
        if long.any():
            ok[np.searchsorted(offsets, at[long], side="right") - 1] = False
        values[name] = tok
    ts_event = _times(got, ok)
    if ts_event is None:
        return None
    n = len(frames)
    out = _common(got, ts_event)
    for name, counts in (("bid_px", n_bids), ("bid_sz", n_bids), ("ask_px", n_asks),
                         ("ask_sz", n_asks)):
        out[name] = col.lists(values[name].cast(pa.float64()), counts)
    out.update(depth=pa.array(np.maximum(n_bids, n_asks).astype(np.int32)),
               bid_n=pa.nulls(n, pa.list_(pa.int64())), ask_n=pa.nulls(n, pa.list_(pa.int64())))
    return out


def _in_bounds(frames: pa.Array, kind: int) -> list[bool]:
    """Per frame, whether its fields are in bounds (the rare batch where some are not)."""
    fields = _trade_fields if kind == TRADE else _depth_fields
    return [fields(frames.slice(i, 1)) is not None for i in range(len(frames))]
