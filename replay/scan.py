"""Read a venue's rows from the store and put them in replay order, one day at a time.

The contract (DESIGN.md, "Replay semantics"):

- **Order.** Events of all selected tables are merged by
  (``ts_recv``, ``session``, ``frame``, ``pos``); ``raw`` rows by
  (``ts_recv``, ``session``, ``frame``). The order is defined by sorting, never by
  the files: rolled recorder files (arrival order) and sealed files (sorted by
  symbol) give the same stream. Rows of different tables with the same key come
  in ``EVENT_TABLES`` order (trades, book, tickers, bars, gaps). Two rows of one
  table with the same full key are a store defect (a frame stored twice); they
  are kept, in the order read (file name, then row).
- **Filters.** ``venue`` (required); ``symbols`` (gaps with symbol ``""``, the
  connection-level ones, only when no symbol filter is given); ``start``/``end``
  half-open on ``ts_recv``; ``tables``. All are pushed down into the Parquet scan
  (statistics and row-group pruning), only the needed columns are read.
- **Memory.** Date partitions (``date`` = UTC date of ``ts_recv``) are processed
  one at a time in ascending order. Each table's day is read as *segments*
  (``replay.segments``: row groups whose ``ts_recv`` spans chain, from the
  statistics): a small one (a recorder's rolled row group) is read whole, a big
  one (a sealed day, sorted by symbol) through a temporary spill on local disk,
  in ``ts_recv`` windows of about ``window_rows`` rows (``replay.windows``).
  Each piece is sorted, handed out, then dropped; several tables are merged a
  step at a time (``replay.interleave``). Memory follows a window or a small
  segment, not the day or the range. Rows whose ``ts_recv`` does not belong to
  their date partition would break the day order: they are dropped with a
  warning (``tickrec verify`` should flag them).
- **Object stores.** ``root`` may be ``s3://bucket/prefix`` (``storage.fs``):
  the same rows, listed with one recursive listing per table and read through
  pyarrow's S3 filesystem. Sealed days are read by their manifest
  (``storage.liveset``); a day whose objects a seal deleted between the listing
  and the read is listed and read again.
- **Files.** Only ``*.parquet`` files are read; hidden temp files (``.<name>.tmp``)
  never are. A file with an older schema (missing columns) reads as nulls.

Two outputs:

- ``iter_chunks()`` / iteration: lists of records (``schemas.events`` records, or
  ``RawRow`` for ``kind="raw"``), built column-wise (see ``replay.rows``).
- ``iter_batches()``: sorted ``pa.RecordBatch``es. For events, one *wide* schema
  for the whole scan: a ``table`` column (dictionary<int8, string>: which table
  the row belongs to), the common columns (``symbol``, ``ts_recv``, ``ts_event``,
  ``seq``, ``session``, ``frame``, ``pos``) and then the union of the selected
  tables' own columns in ``EVENT_TABLES`` order, null where a table has no such
  column (no two tables use one name with different types). With one table
  selected this is just that table's schema plus ``table``. ``columns=`` narrows
  the output (the sort keys are always read). For ``raw``, the ``raw`` schema.
  Times stay Arrow timestamps here, text is ``string`` (read as dictionary codes
  and decoded when handed out). Batches never span two days (nor two windows).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from replay import gather, segments, stream
from replay.interleave import interleave
from replay.order import Merged, Piece, merge
from replay.params import parse_symbols, parse_tables, parse_time
from replay.rows import RECORD_COLUMNS
from replay.segments import Segment
from replay.windows import WINDOW_ROWS
from schemas.errors import ConfigError, StoreError
from schemas.tables import EVENT_TABLES, TABLES, TS
from storage.fs import StoreRoot, as_store, is_s3
from storage.layout import DAY_NS, VENUES, date_of, parse_date
from storage.liveset import Manifests

log = logging.getLogger("tickrec.replay")

EVENT_KEYS = ("ts_recv", "session", "frame", "pos")
RAW_KEYS = ("ts_recv", "session", "frame")
CHUNK_ROWS = 65_536
BUILD_ROWS = 4_096             # records built at a time by iteration (``__iter__``)
STORE_DIRS = frozenset(TABLES) | {"journal"}
TABLE_TYPE = pa.dictionary(pa.int8(), pa.string())
# No pre-buffering: pyarrow's read cache keeps every column chunk a scan has read
# until the file is done, so a scan's memory grew with the file (a sealed file is
# up to ~10M rows, ~220 MB of compressed book columns; docs/benchmarks.md "Replay").
_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
# A segment of up to this many windows' rows is read in one piece; a bigger one
# (a sealed day) goes through the spill (replay.segments).
DIRECT_WINDOWS = 4


def _young_collections() -> int:
    """How many generation-0 collections the process has run."""
    return int(gc.get_stats()[0]["collections"])


class RecordMaker:
    """Makes each piece's records in the way that suits the consumer, judged by how
    it took the previous piece's (call ``make`` once that piece is used up):

    - while it drops the records as it takes them: made one at a time
      (``Piece.records``). The live containers stay flat, so the cyclic collector
      never runs (it was one collection over every 4,096-record chunk: 25-30 % of
      the time), and the values are still in the CPU caches when handed out;
    - once young collections ran during a piece (two or more: one can be the
      scan's own set-up; the consumer keeps records, or makes containers of its
      own): built as a list with the collector paused (``Piece.build``: one
      collection per list instead of one per 700 new containers), until a list's
      first record is found dropped again.

    The collector's settings are never touched, only paused around a build."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.keeping = False
        self._list: list[Any] | None = None      # the last piece, when built as a list
        self._young: int | None = None           # collections before the last piece

    def make(self, piece: Piece) -> Iterable[Any]:
        if self._list is not None:
            # 3 = held by ``_list``, ``first`` and getrefcount's argument only: the
            # consumer dropped it (a list of one: its last record is still its loop
            # variable, so it proves nothing).
            first = self._list[0] if len(self._list) > 1 else None
            self.keeping = first is not None and sys.getrefcount(first) > 3
            del first
        elif self._young is not None:
            self.keeping = _young_collections() - self._young > 1
        self._list = self._young = None
        if self.keeping:
            self._list = piece.build(self.venue)
            return self._list
        self._young = _young_collections()
        return piece.records(self.venue)


def wide_schema(tables: Sequence[str]) -> pa.Schema:
    """The schema of ``iter_batches`` for these event tables (see the module doc)."""
    out: dict[str, pa.Field] = {"table": pa.field("table", TABLE_TYPE, nullable=False)}
    for t in tables:
        for f in TABLES[t]:
            if f.name not in out:
                out[f.name] = f if len(tables) == 1 else f.with_nullable(True)
            elif out[f.name].type != f.type:     # pragma: no cover - guarded by a test
                raise TypeError(f"column {f.name!r} has two types across tables")
    return pa.schema(list(out.values()))


class Scan:
    """A venue's rows between ``start`` and ``end``, in replay order (see module doc).

    Constructing it checks everything (``ConfigError``); reading is lazy and can
    be repeated (each ``iter_*`` call starts over and gives the same rows).
    """

    def __init__(self, root: str | os.PathLike[str] | StoreRoot, venue: str, *,
                 symbols: str | Sequence[str] | None = None, start: Any = None, end: Any = None,
                 tables: str | Sequence[str] | None = None, kind: str = "events",
                 chunk_rows: int = CHUNK_ROWS, window_rows: int = WINDOW_ROWS) -> None:
        self.store: StoreRoot | None = None
        self._listing: dict[str, dict[str, list[str]]] = {}     # table -> date -> files
        self._manifests: Manifests | None = None
        if isinstance(root, StoreRoot) and not root.s3:
            root = root.base                # a local store is its directory
        if isinstance(root, StoreRoot) or is_s3(root):
            self.store = as_store(root)
            self.root = Path(".")
            if not self.store.is_store():
                raise ConfigError(f"store root {self.store.uri!r} does not exist (no such bucket)")
        else:
            self.root = Path(root)
            self._check_local()
        self._init(venue, symbols, start, end, tables, kind, chunk_rows)
        if window_rows < 1:
            raise ConfigError("window_rows must be positive")
        self.window_rows = window_rows

    def _check_local(self) -> None:
        if not self.root.exists():
            raise ConfigError(f"store root {str(self.root)!r} does not exist")
        if not self.root.is_dir():
            raise ConfigError(f"store root {str(self.root)!r} is not a directory")
        try:
            names = {p.name for p in self.root.iterdir()}
        except OSError as exc:
            raise ConfigError(f"cannot list store root {str(self.root)!r}: {exc.strerror}") from None
        if not names & STORE_DIRS:
            raise ConfigError(f"{str(self.root)!r} is not a tickrec store "
                              f"(no {', '.join(sorted(TABLES))} or journal directory)")

    def _init(self, venue: str, symbols: Any, start: Any, end: Any, tables: Any, kind: str,
              chunk_rows: int) -> None:
        if venue not in VENUES:
            raise ConfigError(f"unknown venue {venue!r}: expected one of {', '.join(VENUES)}")
        self.venue = venue
        self.kind = kind
        self.tables = parse_tables(tables, kind)
        self.symbols = parse_symbols(symbols)
        if self.symbols is not None and kind == "raw":
            raise ConfigError("raw rows have no symbol: drop the symbols filter with kind 'raw'")
        self.start = parse_time(start, "start")
        self.end = parse_time(end, "end")
        self.keys = RAW_KEYS if kind == "raw" else EVENT_KEYS
        if chunk_rows < 1:
            raise ConfigError("chunk_rows must be positive")
        self.chunk_rows = chunk_rows
        self.dropped_rows = 0      # rows outside their date partition (store defect)

    # -- where the rows are ----------------------------------------------------------
    @property
    def empty_range(self) -> bool:
        return self.start is not None and self.end is not None and self.end <= self.start

    def dates(self) -> list[str]:
        """The date partitions of the selected tables that can hold rows of the range."""
        if self.empty_range:
            return []
        first = date_of(self.start) if self.start is not None else None
        last = date_of(self.end - 1) if self.end is not None else None
        found: set[str] = set()
        self._listing = {}     # fresh per pass
        if self.store is not None:
            self._manifests = Manifests(self.store)
            for table in self.tables:
                for day in self._remote(table):
                    if (first is None or day >= first) and (last is None or day <= last):
                        found.add(day)
            return sorted(found)
        for table in self.tables:
            base = self.root / table / f"venue={self.venue}"
            try:
                entries = list(os.scandir(base))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot list {base}: {exc.strerror}") from None
            for e in entries:
                if not (e.name.startswith("date=") and e.is_dir()):
                    continue
                try:
                    day = parse_date(e.name[5:])
                except ConfigError:
                    log.warning("replay: ignoring %s (not a date partition)", e.path)
                    continue
                if day != e.name[5:]:
                    log.warning("replay: ignoring %s (not a YYYY-MM-DD partition)", e.path)
                    continue
                if (first is None or day >= first) and (last is None or day <= last):
                    found.add(day)
        return sorted(found)

    def files(self, table: str, date: str) -> list[str]:
        """The published files of one partition, by name (never the hidden temps)."""
        if self.store is not None:
            return self._remote(table).get(date, [])
        part = self.root / table / f"venue={self.venue}" / f"date={date}"
        try:
            return sorted(e.path for e in os.scandir(part)
                          if e.name.endswith(".parquet") and not e.name.startswith(".")
                          and e.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {part}: {exc.strerror}") from None

    def _remote(self, table: str) -> dict[str, list[str]]:
        """Object store: the table's files of this venue by date (one listing)."""
        assert self.store is not None
        cached = self._listing.get(table)
        if cached is not None:
            return cached
        out: dict[str, list[str]] = self._listing.setdefault(table, {})
        try:
            paths = self.store.parquet_files(table, self.venue, self._manifests)
        except OSError as exc:
            raise StoreError(f"cannot list {table} of {self.venue} in {self.store.uri}: "
                             f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
        for path in paths:
            part = path.rsplit("/", 2)[-2]
            if not part.startswith("date="):
                continue
            try:
                day = parse_date(part[5:])
            except ConfigError:
                continue
            if day == part[5:]:
                out.setdefault(day, []).append(path)
        return out

    # -- one day ---------------------------------------------------------------------
    def _relist(self, table: str) -> None:
        """Object stores: forget the table's listing and the manifests, so the next
        ``files()`` sees a seal that switched a day after it was listed."""
        self._listing.pop(table, None)
        if self.store is not None:
            self._manifests = Manifests(self.store)

    def _store_error(self, table: str, date: str, exc: BaseException) -> StoreError:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreError(f"cannot read {table} of {self.venue} on {date}: {first}")

    @property
    def _fs(self) -> Any:
        return self.store.fs if self.store is not None else None

    def _count_misplaced(self, files: list[str], table: str, date: str, day_start: int) -> None:
        """Rows outside their date partition are filtered out by ``_scan_filter``; say so."""
        ts = pc.field("ts_recv")
        outside = (ts < pa.scalar(day_start, TS)) | (ts >= pa.scalar(day_start + DAY_NS, TS))
        dataset = ds.dataset(files, schema=TABLES[table], format=_FORMAT, filesystem=self._fs)
        n = dataset.count_rows(filter=outside)
        if n:
            self.dropped_rows += n
            log.warning("replay: %d %s rows of %s in date=%s have ts_recv outside that day; "
                        "skipped (run tickrec verify)", n, table, self.venue, date)

    def _segments(self, table: str, date: str, day_start: int, lo: int, hi: int,
                  first: bool) -> list[Segment]:
        """The table's segments of the day in [lo, hi) (``first``: the day's first
        listing, where rows outside the partition are counted)."""
        files = self.files(table, date)
        symbols = self.symbols if table != "raw" else None
        groups = [g for f in files for g in stream.plan(f, self._fs, symbols)]
        whole_side = (self.start is None or self.start < day_start
                      or self.end is None or self.end > day_start + DAY_NS)
        if first and whole_side and any(not g.inside(day_start, day_start + DAY_NS)
                                        for g in groups):
            self._count_misplaced(files, table, date, day_start)
        return segments.segments(groups, lo, hi)

    def _table_day(self, table: str, date: str, day_start: int, lo: int, hi: int,
                   cols: list[str], window_rows: int) -> Iterator[pa.Table]:
        """The table's rows of the day in [lo, hi) as tables of consecutive ``ts_recv``
        ranges (``replay.segments``), not yet sorted. Object stores: a seal that
        deleted a listed object is met by listing the day again and reading on from
        the first ``ts_recv`` not handed out (the sealed files hold the same rows)."""
        start = lo
        for attempt in (0, 1):
            handing_out = False
            try:
                for seg in self._segments(table, date, day_start, start, hi, attempt == 0):
                    box: list[pa.Table] = []
                    for t in segments.read(seg, self._fs, TABLES[table], cols,
                                           self._scan_filter(table, start, hi),
                                           self.symbols is None or table == "raw",
                                           start, hi, window_rows, DIRECT_WINDOWS * window_rows):
                        handing_out = True
                        box.append(t)
                        del t
                        yield box.pop()     # no reference kept here while it is worked on
                    handing_out = False
                    start = seg.hi + 1
                return
            except (pa.ArrowException, OSError) as exc:
                if self.store is None or attempt or handing_out:
                    raise self._store_error(table, date, exc) from None
                self._relist(table)

    def read_day(self, date: str, columns: Mapping[str, Sequence[str]] | None = None,
                 window_rows: int = WINDOW_ROWS) -> Iterator[Merged]:
        """One date partition in replay order, as consecutive ``Merged`` steps of
        about ``window_rows`` rows or one segment each (``replay.segments``; several
        tables: ``replay.interleave``); nothing when nothing in it matches.
        ``columns`` per table defaults to all of the table's record columns."""
        day_start = int(parse_time(date) or 0)
        lo = day_start if self.start is None else max(self.start, day_start)
        hi = day_start + DAY_NS if self.end is None else min(self.end, day_start + DAY_NS)
        streams = [(table, self._table_day(table, date, day_start, lo, hi,
                                           list((columns or {}).get(table)
                                                or RECORD_COLUMNS[table]), window_rows))
                   for table in self.tables]
        if len(streams) == 1:
            name, units = streams[0]
            for t in units:
                step = merge([(name, t)], self.keys)
                del t           # merge may have made a contiguous copy
                yield step
        else:
            yield from interleave([(name, _in_order(name, units, self.keys))
                                   for name, units in streams], self.keys)

    def _scan_filter(self, table: str, lo: int, hi: int) -> ds.Expression:
        ts = pc.field("ts_recv")
        expr = (ts >= pa.scalar(lo, TS)) & (ts < pa.scalar(hi, TS))
        if self.symbols is not None and table != "raw":
            expr = expr & pc.field("symbol").isin(pa.array(self.symbols, pa.string()))
        return expr

    def _days(self, columns: Mapping[str, Sequence[str]] | None = None) -> Iterator[Merged]:
        for date in self.dates():
            yield from self.read_day(date, columns, self.window_rows)

    # -- records -----------------------------------------------------------------------
    def iter_pieces(self, rows: int | None = None) -> Iterator[Piece]:
        """Arrow pieces of at most ``rows`` (default ``chunk_rows``) records, in
        replay order; ``piece.build(scan.venue)`` makes the records."""
        return chain.from_iterable(self.iter_piece_runs(rows))

    def iter_piece_runs(self, rows: int | None = None) -> Iterator[list[Piece]]:
        """The pieces of ``iter_pieces``, a list per read step (about ``window_rows``
        rows): a reader thread is handed a whole step's pieces per call, not one
        piece, so it waits for the interpreter lock fewer times (``replay.feed``)."""
        for step in self._days():
            yield list(step.pieces(rows or self.chunk_rows))

    def iter_chunks(self) -> Iterator[list[Any]]:
        """Lists of at most ``chunk_rows`` records, in replay order."""
        for piece in self.iter_pieces():
            yield piece.build(self.venue)

    def __iter__(self) -> Iterator[Any]:
        return chain.from_iterable(self._runs())

    def _runs(self) -> Iterator[Iterable[Any]]:
        """The records of each piece (a few thousand rows), made as ``RecordMaker``
        judges suits the consumer."""
        maker = RecordMaker(self.venue)
        for piece in self.iter_pieces(min(self.chunk_rows, BUILD_ROWS)):
            yield maker.make(piece)

    # -- Arrow -------------------------------------------------------------------------
    def schema(self, columns: Sequence[str] | None = None) -> pa.Schema:
        """The schema of ``iter_batches(columns)``."""
        full = TABLES["raw"] if self.kind == "raw" else wide_schema(self.tables)
        if columns is None:
            return full
        unknown = [c for c in columns if c not in full.names]
        if unknown:
            raise ConfigError(f"unknown column {unknown[0]!r}: expected some of "
                              f"{', '.join(full.names)}")
        keep = set(columns) | ({"table"} if self.kind != "raw" else set())
        return pa.schema([f for f in full if f.name in keep], metadata=full.metadata)

    def iter_batches(self, columns: Sequence[str] | None = None,
                     batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
        """Sorted record batches of ``schema(columns)`` (see the module doc)."""
        out_schema = self.schema(columns)       # checks ``columns`` now, not at first next()
        size = batch_rows or self.chunk_rows
        if size < 1:
            raise ConfigError("batch_rows must be positive")
        return self._batches(out_schema, size)

    def _batches(self, out_schema: pa.Schema, size: int) -> Iterator[pa.RecordBatch]:
        read_cols = {t: [c for c in TABLES[t].names
                         if c in out_schema.names or c in self.keys] for t in self.tables}
        raw = self.kind == "raw"
        for step in self._days(read_cols):
            wide = _widen(step, out_schema, raw)     # only columns some part of the step has
            order, rows = step.order, step.rows
            # one table: its ``table`` column is made per batch, not gathered
            only = step.parts[0][0] if len(step.parts) == 1 and not raw else None
            del step            # its parts' copies, where ``wide`` made its own
            if order is None:
                parts: Iterator[pa.RecordBatch] = iter(wide.to_batches(max_chunksize=size))
            else:
                parts = (gather.take(wide, order[off:off + size]).to_batches()[0]
                         for off in range(0, rows, size))
            for part in parts:
                n = part.num_rows
                names = part.schema.names
                cols = [_typed_out(part.column(names.index(f.name)), f.type) if f.name in names
                        else _table_column(only, n) if f.name == "table" and only is not None
                        else pa.nulls(n, f.type) for f in out_schema]
                del part
                yield pa.RecordBatch.from_arrays(cols, schema=out_schema)


def _typed_out(col: pa.Array, typ: pa.DataType) -> pa.Array:
    """A column as handed out: text read as a dictionary decoded (``stream.read_type``)."""
    return col if col.type == typ else col.cast(typ)


def _in_order(name: str, units: Iterator[pa.Table], keys: Sequence[str]) -> Iterator[pa.Table]:
    """Each table of ``units`` sorted by ``keys`` (already sorted ones as they are)."""
    # Each copy is dropped as soon as the next exists: a generator's locals live
    # on while the consumer works on what it yielded.
    for t in units:
        m = merge([(name, t)], keys)
        del t
        out = m.parts[0][1] if m.order is None else gather.take(m.parts[0][1], m.order)
        del m
        yield out


_TABLE_NAMES = pa.array(EVENT_TABLES, pa.string())


def _table_column(table: str, n: int) -> pa.DictionaryArray:
    """The ``table`` column of ``n`` rows of ``table``."""
    codes = pa.array(np.full(n, EVENT_TABLES.index(table), np.int8))
    return pa.DictionaryArray.from_arrays(codes, _TABLE_NAMES, safe=False)


def _widen(day: Merged, schema: pa.Schema, raw: bool) -> pa.Table:
    """The day's parts as one table: the columns of ``schema`` that at least one
    part has (null-padded in the others) plus, for several parts, ``table``, in
    concatenation order."""
    present = {c for _, t in day.parts for c in t.column_names}
    several = len(day.parts) > 1 and not raw
    fields = [f.with_type(stream.read_type(f.type)) for f in schema
              if f.name in present or (f.name == "table" and several)]
    pieces = []
    for table, t in day.parts:
        cols = []
        names = set(t.column_names)
        for f in fields:
            if f.name == "table" and several:
                cols.append(_table_column(table, t.num_rows))
            elif f.name in names:
                cols.append(t.column(f.name))
            else:
                cols.append(pa.nulls(t.num_rows, f.type))
        pieces.append(pa.Table.from_arrays(cols, schema=pa.schema(fields)))
    return pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
