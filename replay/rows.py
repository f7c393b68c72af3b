"""Arrow rows → Python records, fast: ``RawRow`` and the column-wise builders.

The object path of the replay turns each Arrow column into a Python list once
and builds the records from those lists. ``column_values`` gives what
``to_pylist`` gives (timestamps as int nanoseconds) without a Python call per
value: numbers go through numpy's ``tolist``, text through a dictionary (each
distinct symbol or session becomes one shared ``str``), list columns are
flattened once and cut into lists by their offsets.

Building a slotted dataclass through its keyword-only ``__init__`` costs the
keyword call on top of the stores; the builders below create the instance with
``object.__new__`` and store each field with a plain attribute assignment (the
interpreter's specialised slot store), or, for a frozen class (``RawRow``),
through the slot descriptor. Either gives the very same object (``type(o) is
Trade``, equal to the ``__init__``-built one). Classes that have a
``__post_init__`` or no slots fall back to the keyword constructor.

The cyclic garbage collector is paused while one chunk is converted and built
(process-wide, for the tens of milliseconds a chunk takes; it is switched back
on only if it was on): the records and the lists of ``book`` rows are acyclic,
and letting the collector rescan tens of thousands of fresh containers again and
again costs more than the conversion itself (book lists: 0.7 → 3 M lists/s).
"""

from __future__ import annotations

import base64
import gc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import EVENT_CLASSES, EVENT_COLUMNS, RawRecord
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``payload`` is UTF-8 text with ``encoding: "utf-8"`` when the
        bytes are valid UTF-8 and the frame is not binary, else base64 with
        ``encoding: "base64"``. Decided by the bytes alone, so it is deterministic."""
        payload: str | None = None
        encoding = "utf-8"
        if self.kind != "binary":
            try:
                payload = self.payload.decode("utf-8")
            except UnicodeDecodeError:
                payload = None
        if payload is None:
            payload = base64.b64encode(self.payload).decode("ascii")
            encoding = "base64"
        return {"type": "raw", "venue": self.venue, "ts_recv": self.ts_recv,
                "session": self.session, "frame": self.frame, "direction": self.direction,
                "kind": self.kind, "payload": payload, "encoding": encoding, "note": self.note}

    def to_json(self) -> str:
        """One canonical JSON line (sorted keys, no spaces): what digests hash."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=True)


RAW_COLUMNS: tuple[str, ...] = tuple(RAW.names)
Builder = Callable[..., list[Any]]
RECORD_CLASSES: dict[str, type] = {**EVENT_CLASSES, "raw": RawRow}
RECORD_COLUMNS: dict[str, tuple[str, ...]] = {**EVENT_COLUMNS, "raw": RAW_COLUMNS}


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    for klass in cls.__mro__:
        desc = klass.__dict__.get(name)
        if desc is not None:
            return desc.__set__  # type: ignore[no-any-return]
    raise AttributeError(name)


def _compile(cls: type, columns: Sequence[str]) -> Builder:
    """``make(venue, col0, col1, ...)``: one record per row of the column lists."""
    args = [f"c{i}" for i in range(len(columns))]
    arglist = ", ".join(args)
    names = {f.name for f in fields(cls)}
    if set(columns) | {"venue"} != names:
        raise TypeError(f"{cls.__name__}: columns {columns} do not match its fields")
    slotted = hasattr(cls, "__slots__") and not hasattr(cls, "__post_init__")
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
    if slotted:
        src = (f"def make(venue, {arglist}):\n"
               f"    out = []\n"
               f"    ap = out.append\n"
               f"    for {arglist}, in zip({arglist}):\n"
               f"        o = new(cls); {'; '.join(sets)}; ap(o)\n"
               f"    return out\n")
    else:
        kws = ", ".join(f"{col}=c{i}" for i, col in enumerate(columns))
        src = (f"def make(venue, {arglist}):\n"
               f"    return [cls(venue=venue, {kws}) for {arglist}, in zip({arglist})]\n")
    exec(src, glb)  # noqa: S102 - generated from field names only
    return glb["make"]  # type: ignore[no-any-return]


BUILDERS: dict[str, Builder] = {
    name: _compile(RECORD_CLASSES[name], cols) for name, cols in RECORD_COLUMNS.items()}


def _numbers(arr: pa.Array) -> list[Any]:
    """A fixed-width column (ints, floats, times as int64) through numpy: C loops."""
    if arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
    if arr.null_count * 4 > len(arr):
        return arr.to_pylist()
    out = arr.fill_null(0).to_numpy(zero_copy_only=False).tolist()
    for i in pc.indices_nonzero(arr.is_null()).to_numpy().tolist():
        out[i] = None
    return out  # type: ignore[no-any-return]


def _texts(arr: pa.Array) -> list[Any]:
    """A text column: each distinct value made once (a few symbols and sessions)."""
    enc = arr.dictionary_encode()
    if len(enc.dictionary) * 4 > len(arr):
        return arr.to_pylist()
    values = enc.dictionary.to_pylist()
    if enc.indices.null_count:
        values.append(None)
        idx = enc.indices.fill_null(len(values) - 1)
    else:
        idx = enc.indices
    return list(map(values.__getitem__, idx.to_numpy().tolist()))


def _lists(arr: pa.Array) -> list[Any]:
    """A list column: the values flattened once, then cut into Python lists."""
    flat = arr.flatten()
    if flat.null_count or not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)):
        return arr.to_pylist()
    values = flat.to_numpy(zero_copy_only=False).tolist()
    offsets = arr.offsets.to_numpy()
    offsets = (offsets - offsets[0]).tolist()
    out = [values[a:b] for a, b in pairwise(offsets)]
    if arr.null_count:
        for i in pc.indices_nonzero(arr.is_null()).to_numpy().tolist():
            out[i] = None
    return out


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t)


def column_values(col: pa.Array | pa.ChunkedArray) -> list[Any]:
    """One column as a Python list, exactly as ``to_pylist`` gives it except that
    timestamps are int ns; built with numpy/Arrow loops, not per-value Python calls."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out: list[Any] = []
    for arr in chunks:
        n = len(arr)
        if arr.null_count == n:
            out += [None] * n
            continue
        t = arr.type
        if pa.types.is_timestamp(t):
            arr = arr.cast(pa.int64())
        if _is_number(t):
            out += _numbers(arr)
        elif pa.types.is_string(t):
            out += _texts(arr)
        elif pa.types.is_list(t):
            out += _lists(arr)
        else:
            out += arr.to_pylist()
    return out


def column_lists(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> list[list[Any]]:
    """Each column as a Python list (``column_values``)."""
    return [column_values(table.column(name)) for name in columns]


def build(name: str, venue: str, table: pa.Table | pa.RecordBatch) -> list[Any]:
    """The rows of ``table`` (a ``name`` table: an event table or ``raw``) as records."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return BUILDERS[name](venue, *column_lists(table, RECORD_COLUMNS[name]))
    finally:
        if enabled:
            gc.enable()


__all__ = ["RECORD_CLASSES", "RECORD_COLUMNS", "RawRow", "build", "column_lists"]
