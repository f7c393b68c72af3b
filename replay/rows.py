"""Arrow rows → Python records, fast: ``RawRow`` and the column-wise builders.

The object path of the replay prepares each Arrow column of a part once
(``Columns``: one ``picker`` per column) and then builds the records of any
rows, in any order, from Python lists the pickers make. A picker gives what
``to_pylist`` gives (timestamps as int nanoseconds) without a Python call per
value: numbers are a numpy gather and ``tolist``, text goes through a
dictionary (each distinct symbol or session is one shared ``str``; the rows
are a gather of references), lists of one width (book levels) are a 2-D numpy
gather whose ``tolist`` makes the row lists, other list columns are flattened
once and cut by their offsets. So a sealed window is put in replay order by
gathering the Python values, never by an Arrow ``take`` of every column.

Building a slotted dataclass through its keyword-only ``__init__`` costs the
keyword call on top of the stores; the builders below create the instance with
``object.__new__`` and store each field with a plain attribute assignment (the
interpreter's specialised slot store), or, for a frozen class (``RawRow``),
through the slot descriptor. Either gives the very same object (``type(o) is
Trade``, equal to the ``__init__``-built one). Classes that have a
``__post_init__`` or no slots fall back to the keyword constructor.

Two ways out. ``Columns.build`` makes a list of records (the feed's buffer,
``Scan.iter_chunks``, iteration for a consumer that keeps them); the cyclic
garbage collector is paused while it runs (process-wide, for the milliseconds a
chunk takes; switched back on only if it was on): the records and the lists of
``book`` rows are acyclic, and letting the collector rescan tens of thousands of
fresh containers again and again costs more than the conversion itself (book
lists: 0.7 → 3 M lists/s). The first allocation after it still sets off one
collection over the whole new chunk. ``Columns.records`` (iteration,
``replay_sync``) gathers the column values the same way but makes each record
only when it is taken (a generator over the same loop), and the row lists of
list columns a block of ``LIST_BLOCK_ROWS`` at a time: a consumer that drops
each record before the next keeps the count of live containers flat, so the
collector has nothing to do and is left as it is. That generator also reuses
a record once nothing but itself refers to it (``_compile``): a record someone
holds is never changed.
"""

from __future__ import annotations

import base64
import gc
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from itertools import chain, pairwise
from json.encoder import encode_basestring
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import EVENT_CLASSES, EVENT_COLUMNS, RawRecord
from schemas.jsonline import value_json
from schemas.tables import RAW


@dataclass(frozen=True, slots=True, kw_only=True)
class RawRow:
    """One ``raw`` row as the replay yields it (``kind="raw"``).

    ``RawRecord`` plus where it was stored: ``venue`` (the partition) and
    ``session`` (the connection). Raw rows are ordered by (ts_recv, session, frame).
    """
    TABLE: ClassVar[str] = "raw"
    venue: str
    ts_recv: int
    session: str
    frame: int
    direction: str          # in / out / event
    kind: str               # text / binary / open / close / error
    payload: bytes
    note: str | None = None

    def sort_key(self) -> tuple[int, str, int]:
        return (self.ts_recv, self.session, self.frame)

    def record(self) -> RawRecord:
        """The journal record this row was stored from (what a venue decoder eats)."""
        return RawRecord(self.ts_recv, self.frame, self.direction, self.kind, self.payload,
                         self.note)

    def payload_text(self) -> tuple[str, str]:
        """(text, encoding): the payload as UTF-8 text (``"utf-8"``) when the bytes
        are valid UTF-8 and the frame is not binary, else as base64 (``"base64"``).
        Decided by the bytes alone, so it is deterministic."""
        if self.kind != "binary":
            try:
                return self.payload.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                pass
        return base64.b64encode(self.payload).decode("ascii"), "base64"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``payload`` and ``encoding`` as ``payload_text`` gives them."""
        payload, encoding = self.payload_text()
        return {"type": "raw", "venue": self.venue, "ts_recv": self.ts_recv,
                "session": self.session, "frame": self.frame, "direction": self.direction,
                "kind": self.kind, "payload": payload, "encoding": encoding, "note": self.note}

    def to_json(self) -> str:
        """One canonical JSON line: ``to_dict()`` through ``json.dumps`` with sorted
        keys, no spaces, ``ensure_ascii=False``; what digests hash. Written out here,
        key by key in sorted order (``schemas.jsonline``: the same characters)."""
        payload, encoding = self.payload_text()
        return ('{"direction":' + value_json(self.direction)
                + ',"encoding":' + encode_basestring(encoding)
                + ',"frame":' + value_json(self.frame)
                + ',"kind":' + value_json(self.kind)
                + ',"note":' + value_json(self.note)
                + ',"payload":' + encode_basestring(payload)
                + ',"session":' + value_json(self.session)
                + ',"ts_recv":' + value_json(self.ts_recv)
                + ',"type":"raw","venue":' + value_json(self.venue) + '}')


RAW_COLUMNS: tuple[str, ...] = tuple(RAW.names)
Builder = Callable[..., list[Any]]
Each = Callable[..., Iterator[Any]]
RECORD_CLASSES: dict[str, type] = {**EVENT_CLASSES, "raw": RawRow}
RECORD_COLUMNS: dict[str, tuple[str, ...]] = {**EVENT_COLUMNS, "raw": RAW_COLUMNS}


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    for klass in cls.__mro__:
        desc = klass.__dict__.get(name)
        if desc is not None:
            setter: Callable[[Any, Any], None] = desc.__set__
            return setter
    raise AttributeError(name)


def _compile(cls: type, columns: Sequence[str]) -> tuple[Builder, Each]:
    """``make(venue, col0, col1, ...)``: one record per row of the columns, as a list;
    ``each(...)``: the same records one at a time (a generator over the same loop).

    ``each`` recycles records the consumer has let go of: when it makes a record, the
    one it handed out two records back is filled with the new values instead of
    allocating, if its reference count shows that only ``each`` still holds it (the
    record of one step back is still in the consumer's loop variable while it asks
    for the next). No one else can reach such a record (the classes take no weak
    references), so this is the interpreter's own free-list trick applied to a
    record: a record anyone still refers to (kept in a list, in a variable, in a
    queue) is never touched again, and every record handed out holds its own row's
    values. It saves the allocation and deallocation of the record, ~130 of the
    ~390 ns that making a book from ready values costs here. ``make`` builds new
    records only (its list holds them all)."""
    args = [f"c{i}" for i in range(len(columns))]
    arglist = ", ".join(args)
    names = {f.name for f in fields(cls)}
    if set(columns) | {"venue"} != names:
        raise TypeError(f"{cls.__name__}: columns {columns} do not match its fields")
    slotted = hasattr(cls, "__slots__") and not hasattr(cls, "__post_init__")
    # dataclasses keeps "frozen" only in this private attribute, which typeshed omits
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    glb: dict[str, Any] = {"cls": cls, "new": object.__new__}
    if slotted and not frozen:
        # Plain attribute stores: the interpreter's fastest path into a slot.
        sets = ["o.venue = venue"] + [f"o.{col} = c{i}" for i, col in enumerate(columns)]
    elif slotted:
        glb["s_venue"] = _slot_setter(cls, "venue")
        sets = ["s_venue(o, venue)"]
        for i, col in enumerate(columns):
            glb[f"s_{i}"] = _slot_setter(cls, col)
            sets.append(f"s_{i}(o, c{i})")
    rows = f"    for {arglist}, in zip({arglist}):\n"
    if slotted:
        stores = "; ".join(sets)
        loop = f"{rows}        o = new(cls); {stores}\n"
        # ``each`` reuses the record it handed out two steps back when nothing but
        # ``a`` refers to it any more (see ``_compile``'s doc); else a new one.
        each_loop = (f"    a = new(cls); b = new(cls)\n{rows}"
                     f"        o = a if refs(a) == 2 else new(cls); {stores}\n"
                     f"        a = b; b = o\n")
    else:
        kws = ", ".join(f"{col}=c{i}" for i, col in enumerate(columns))
        loop = each_loop = f"{rows}        o = cls(venue=venue, {kws})\n"
    src = (f"def make(venue, {arglist}):\n    out = []\n    ap = out.append\n"
           f"{loop}        ap(o)\n    return out\n"
           f"def each(venue, {arglist}):\n{each_loop}        yield o\n")
    glb["refs"] = sys.getrefcount
    exec(src, glb)  # noqa: S102 - generated from field names only
    return glb["make"], glb["each"]


_COMPILED = {name: _compile(RECORD_CLASSES[name], cols) for name, cols in RECORD_COLUMNS.items()}
BUILDERS: dict[str, Builder] = {name: make for name, (make, _) in _COMPILED.items()}
EACH: dict[str, Each] = {name: each for name, (_, each) in _COMPILED.items()}
_ALL = slice(None)
# Row lists a lazy list column makes at a time: 4 level columns of a book then make
# 512 lists at once, below the collector's default generation-0 threshold (700).
LIST_BLOCK_ROWS = 128


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic collector off for the block (back on only if it was on)."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


Picker = Callable[[Any], list[Any]]
Values = Callable[[Any], Iterable[Any]]      # a picker, or a lazy one (``picker``)


def _count(n: int, idx: Any) -> int:
    """How many rows ``idx`` (a slice or an index array) picks out of ``n``."""
    return len(range(n)[idx]) if isinstance(idx, slice) else len(idx)


def _pick_list(values: list[Any]) -> Picker:
    """A picker over a ready Python list (the general, slower case)."""
    def pick(idx: Any) -> list[Any]:
        if isinstance(idx, slice):
            return values[idx]
        return list(map(values.__getitem__, idx.tolist()))
    return pick


def _numbers(arr: pa.Array) -> Picker:
    """A fixed-width column (ints, floats, times as int64) through numpy: C loops."""
    if arr.null_count == 0:
        v = arr.to_numpy(zero_copy_only=False)
        return lambda idx: v[idx].tolist()
    if arr.null_count * 4 > len(arr):
        return _pick_list(arr.to_pylist())
    filled = arr.fill_null(0).to_numpy(zero_copy_only=False)
    null = arr.is_null().to_numpy(zero_copy_only=False)

    def pick(idx: Any) -> list[Any]:
        out: list[Any] = filled[idx].tolist()
        for i in np.flatnonzero(null[idx]).tolist():
            out[i] = None
        return out
    return pick


def _texts(arr: pa.Array) -> Picker:
    """A text column: each distinct value made once (a few symbols and sessions),
    rows picked through their dictionary code (a numpy object array: the gather and
    ``tolist`` only copy references). One value and no nulls: one list repeat.
    Text read as a dictionary is used as it is."""
    enc = arr if pa.types.is_dictionary(arr.type) else arr.dictionary_encode()
    if len(enc.dictionary) * 4 > len(arr):
        return _pick_list(arr.to_pylist())
    values = enc.dictionary.to_pylist()
    codes_arr = enc.indices
    if codes_arr.null_count:
        values.append(None)
        codes_arr = codes_arr.fill_null(len(values) - 1)
    elif len(values) == 1:
        n = len(arr)
        return lambda idx: values * _count(n, idx)
    table = np.empty(len(values), dtype=object)
    table[:] = values
    codes = codes_arr.to_numpy()
    return lambda idx: table[codes[idx]].tolist()


def _row_lists(grid: np.ndarray) -> Iterator[list[Any]]:
    """The rows of a 2-D array as lists, made ``LIST_BLOCK_ROWS`` at a time (``tolist``
    of a block) as the iteration reaches them."""
    return chain.from_iterable(grid[a:a + LIST_BLOCK_ROWS].tolist()
                               for a in range(0, len(grid), LIST_BLOCK_ROWS))


def _grid_rows(grid: np.ndarray, idx: Any) -> np.ndarray:
    """Rows ``idx`` (a slice or an index array) of a 2-D array. ``take`` along the
    rows, not ``grid[idx]``: numpy's fancy index copies a 2-D row at a time
    (~28 against ~6 ns a 5-float row here)."""
    return grid[idx] if isinstance(idx, slice) else grid.take(idx, axis=0)


def _lists(arr: pa.Array, lazy: bool) -> Values:
    """A list column. Lists of one width with no nulls (book levels) are a 2-D numpy
    array whose ``tolist`` makes the row lists in C (``lazy``: a block at a time,
    ``_row_lists``); otherwise the values are flattened once and cut into lists by
    their offsets."""
    flat = arr.flatten()
    if flat.null_count or not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)):
        return _pick_list(arr.to_pylist())
    values = flat.to_numpy(zero_copy_only=False)
    widths = np.diff(arr.offsets.to_numpy())
    if not arr.null_count and len(widths) and widths[0] > 0 and (widths == widths[0]).all():
        grid = values.reshape(len(arr), int(widths[0]))
        if lazy:
            return lambda idx: _row_lists(_grid_rows(grid, idx))
        return lambda idx: _grid_rows(grid, idx).tolist()
    flat_list = values.tolist()
    offsets = arr.offsets.to_numpy()
    offsets = (offsets - offsets[0]).tolist()
    out = [flat_list[a:b] for a, b in pairwise(offsets)]
    if arr.null_count:
        for i in pc.indices_nonzero(arr.is_null()).to_numpy().tolist():
            out[i] = None
    return _pick_list(out)


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t))


def picker(arr: pa.Array, lazy: bool = False) -> Values:
    """``pick(idx)``: the values of rows ``idx`` (a numpy index array or a slice) of
    ``arr`` as a Python list, exactly as ``to_pylist`` gives them except that
    timestamps are int ns; built with numpy/Arrow loops, not per-value Python calls.
    The preparation (numpy views, dictionary) is done once, here. ``lazy``: list
    columns of one width give an iterator over the same lists instead, which makes
    them a block at a time (``_row_lists``)."""
    n = len(arr)
    if arr.null_count == n:
        return lambda idx: [None] * _count(n, idx)
    t = arr.type
    if pa.types.is_timestamp(t):
        arr = arr.cast(pa.int64())
    if _is_number(t):
        return _numbers(arr)
    if pa.types.is_string(t) or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)):
        return _texts(arr)
    if pa.types.is_list(t):
        return _lists(arr, lazy)
    return _pick_list(arr.to_pylist())


def column_values(col: pa.Array | pa.ChunkedArray) -> list[Any]:
    """One column as a Python list (``picker`` of each chunk, every row)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out: list[Any] = []
    for arr in chunks:
        out += picker(arr)(slice(None))
    return out


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    if col.num_chunks == 1:
        return col.chunk(0)
    return col.combine_chunks()


class Columns:
    """The record columns of one table, ready to be read in any row order: each
    column is one contiguous Arrow array and a ``picker`` (prepared once; reading
    rows ``idx`` is then a numpy gather plus ``tolist``, no Arrow ``take``)."""

    def __init__(self, name: str, table: pa.Table | pa.RecordBatch) -> None:
        self.name = name
        self.rows = table.num_rows
        self._arrays = [_one_chunk(c) if isinstance(c, pa.ChunkedArray) else c
                        for c in (table.column(c) for c in RECORD_COLUMNS[name])]

    @cached_property
    def _pickers(self) -> list[Values]:
        return [picker(a) for a in self._arrays]

    @cached_property
    def _lazy(self) -> list[Values]:
        return [picker(a, lazy=True) for a in self._arrays]

    def build(self, venue: str, idx: Any = _ALL) -> list[Any]:
        """Records of rows ``idx`` (numpy indices or a slice; default all), in that order."""
        with _gc_paused():
            return BUILDERS[self.name](venue, *[pick(idx) for pick in self._pickers])

    @cached_property
    def _ts_recv(self) -> np.ndarray:
        column = self._arrays[RECORD_COLUMNS[self.name].index("ts_recv")]
        ts: np.ndarray = column.cast(pa.int64()).to_numpy()     # never null: no copy
        return ts

    def ts_recv(self, idx: Any = _ALL) -> np.ndarray:
        """The ``ts_recv`` (int64 ns) of rows ``idx``, in that order, without their
        records: a view for a slice, a numpy gather for indices."""
        ts: np.ndarray = self._ts_recv[idx]
        return ts

    def records(self, venue: str, idx: Any = _ALL) -> Iterator[Any]:
        """The records of ``build``, made one at a time as they are taken (the column
        values are gathered here, at once). A consumer that drops each record before
        taking the next keeps the number of live containers flat, so this path
        does not set off the cyclic collector (whose settings it leaves alone)."""
        return EACH[self.name](venue, *[pick(idx) for pick in self._lazy])


def build(name: str, venue: str, table: pa.Table | pa.RecordBatch) -> list[Any]:
    """The rows of ``table`` (a ``name`` table: an event table or ``raw``) as records."""
    return Columns(name, table).build(venue)


__all__ = ["RECORD_CLASSES", "RECORD_COLUMNS", "Columns", "RawRow", "build", "column_values",
           "picker"]
