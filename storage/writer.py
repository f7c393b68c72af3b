"""Rows of one recorder run → partitioned Parquet files, published atomically.

Rows are buffered per (table, UTC date of ``ts_recv``) in arrival order, compactly
(``Rows``): row tuples become Arrow tables every ``CHUNK_ROWS`` rows (a columnar
decoder's rows arrive as Arrow tables, ``add_table``), and Arrow rows become a
zstd Parquet row group every ``ROW_GROUP_ROWS``, written to the file's temp as
it is encoded (local roots; in memory on S3: ``storage.spool``). ``take()``
swaps the buffers out (cheap: call it on the event loop); ``publish(batch)``
fsyncs or writes the files (slow: may run in a worker thread). One publish
writes at most one file per (table, date), so files roll by size/time, never
one per frame or per symbol, and a batch that spans midnight is split at the
date boundary.

Publishing follows an intent protocol kept in ``state_dir/checkpoint.json``:

1. every file is written complete under a hidden temp name and fsynced (a failed
   publish takes the batch's files back into memory and removes the temps);
2. the checkpoint records the intent: how many journal records the batch
   covers and the (temp, final) pairs;
3. the temps are renamed to their final names;
4. the checkpoint records that count as published.

``recover_publish`` finishes step 3 after a crash between 2 and 4 (roll
forward; the temps are whole), and deletes temps of an unfinished step 1. So
after any crash, every record before ``checkpoint.records`` is in Parquet exactly
once and nothing after it is (``records`` counts journal records of the run).

On an S3 root (``storage.fs``) there are no temps and no renames: each file is
written directly as one object, which appears whole or not at all. The intent
(step 2) is recorded *before* the objects are written and names the batch's
first file number. After a crash with an intent pending, some of the batch's
objects may exist and others not; ``recover_publish`` does not roll forward but
turns the intent into ``redo``: recovery re-derives the same batch from the
journal records between ``records`` and the intent's count and publishes it
again under the same file numbers. Names are deterministic (run id + file
number) and the rows are re-derived from the same records, so an object that
already exists is overwritten with the same rows, and a missing one appears.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.errors import StoreError
from schemas.events import EVENT_COLUMNS, RawRecord
from schemas.tables import TABLES
from schemas.venues.columnar import binary_array, constant
from storage.atomic import (
    PARQUET_OPTIONS,
    encoding_options,
    fsync_dir,
    read_json,
    temp_path,
    write_json,
    write_temp,
)
from storage.fs import StoreRoot, as_store
from storage.layout import DAY_NS, date_of, partition_dir
from storage.spool import Spool

_COUNT = attrgetter("count")
WRITER_OPTIONS = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
_GETTERS: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    name: attrgetter(*cols) for name, cols in EVENT_COLUMNS.items()}
CHUNK_ROWS = 4096       # row tuples held before they become one Arrow table
ROW_GROUP_ROWS = 32_768  # Arrow rows held before they are encoded as one Parquet row group
# ... for raw rows (~330 bytes each in Arrow: 2.7 MB held instead of 11 MB); without
# statistics on the payloads (two payload copies per page and row group; nothing
# prunes on them) a raw row is no larger than in groups of 32,768 (docs/benchmarks.md).
RAW_ROW_GROUP_ROWS = 8_192
# ... for book rows (~241 bytes each in Arrow, four lists of doubles: 4 MB held instead
# of 8 MB); a book row is 0.1 % larger than in groups of 32,768 (docs/benchmarks.md).
BOOK_ROW_GROUP_ROWS = 16_384
_GROUP_ROWS = {"raw": RAW_ROW_GROUP_ROWS, "book": BOOK_ROW_GROUP_ROWS}


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet options of a recorder file: statistics on every column but raw payloads."""
    stats = [n for n in schema.names if n != "payload"]
    return {**WRITER_OPTIONS, **encoding_options(schema),
            "write_statistics": True if len(stats) == len(schema) else stats}


class Rows:
    """The buffered rows of one (table, date), in arrival order, kept small: row tuples
    become an Arrow table every ``CHUNK_ROWS`` rows, and Arrow tables are encoded as a
    Parquet row group (zstd, in memory) every ``ROW_GROUP_ROWS`` rows, so a batch costs
    its compressed size, not its Python or Arrow size (raw rows: every
    ``RAW_ROW_GROUP_ROWS``, book rows every ``BOOK_ROW_GROUP_ROWS``), written to a
    ``Spool`` made by ``spool`` (on disk: not even that). ``files()`` closes the file;
    a failed batch given back (``prepend``) keeps its files in front."""
    __slots__ = ("table", "group_rows", "chunks", "tail", "count", "loose", "_sink", "_writer",
                 "done", "_spool")

    def __init__(self, table: str, spool: Callable[[], Spool] = Spool) -> None:
        self.table = table
        self._spool = spool
        self.group_rows = _GROUP_ROWS.get(table, ROW_GROUP_ROWS)
        self.chunks: list[pa.Table] = []
        self.tail: list[tuple[Any, ...]] = []
        self.count = 0
        self.loose = 0                          # rows in chunks, not yet encoded
        self._sink: Spool | None = None
        self._writer: pq.ParquetWriter | None = None
        self.done: list[Spool] = []             # whole Parquet files

    def __len__(self) -> int:
        return self.count

    def append(self, row: tuple[Any, ...]) -> None:
        tail = self.tail
        tail.append(row)
        self.count += 1
        if len(tail) >= CHUNK_ROWS:
            self.seal()

    def add_table(self, table: pa.Table) -> None:
        self._seal_tail()
        self.chunks.append(table)
        self.count += table.num_rows
        self.loose += table.num_rows
        if self.loose >= self.group_rows:
            self._encode()

    def seal(self) -> None:
        self._seal_tail()
        if self.loose >= self.group_rows:
            self._encode()

    def _seal_tail(self) -> None:
        if self.tail:
            self.chunks.append(to_arrow(self.table, self.tail))
            self.loose += len(self.tail)
            self.tail = []

    def _encode(self) -> None:
        if not self.chunks:
            return
        if self._writer is None:
            schema = TABLES[self.table]
            self._sink = self._spool()
            self._writer = pq.ParquetWriter(self._sink, schema, **writer_options(schema))
        table = self.chunks[0] if len(self.chunks) == 1 else pa.concat_tables(self.chunks)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.chunks, self.loose = [], 0

    def files(self) -> list[Spool]:
        """The rows as whole Parquet files (one, or more after ``prepend``)."""
        self._seal_tail()
        self._encode()
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self.done.append(self._sink)
            self._writer = self._sink = None
        return self.done

    def prepend(self, front: Rows) -> None:
        """Put ``front``'s rows before these (a failed batch given back)."""
        self.done[:0] = front.files()
        self.count += front.count

    def arrow(self) -> pa.Table:
        tables = [pq.read_table(pa.BufferReader(f.getvalue())) for f in self.files()]
        if not tables:
            return to_arrow(self.table, [])
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


@dataclass
class Batch:
    rows: dict[tuple[str, str], Rows] = field(default_factory=dict)
    records: int = 0
    intent: bool = False        # its publish got as far as recording the intent

    def __len__(self) -> int:
        return sum(map(_COUNT, self.rows.values()))     # per frame: C-level, no generator

    def tables(self) -> Iterator[tuple[tuple[str, str], pa.Table]]:
        """((table, date), Arrow table) in (table, date) order (read back: slow)."""
        for key, rows in sorted(self.rows.items(), key=lambda kv: kv[0]):
            yield key, rows.arrow()


def to_arrow(table: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    """Row tuples in schema column order → an Arrow table of that schema."""
    schema = TABLES[table]
    columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


class StoreWriter:
    def __init__(self, root: Path | str | StoreRoot, venue: str, run: str,
                 state_dir: Path) -> None:
        self.store = as_store(root)
        self.root = Path(self.store.base) if not self.store.s3 else Path(".")
        self.venue = venue
        self.run = run
        self.state_dir = state_dir
        self.checkpoint_path = state_dir / "checkpoint.json"
        state = read_json(self.checkpoint_path, {}) or {}
        self.published_records: int = state.get("records", 0)
        self._next_file: int = state.get("next_file", 0)
        self.redo: int | None = state.get("redo")     # S3: re-publish up to this record
        self._batch = Batch()
        self.files_published = 0
        self.rows_published = 0
        self._unsettled: tuple[int, list[tuple[Path, Path]], int] | None = None
        self._spools = itertools.count()

    # -- buffering (hot path) --------------------------------------------------------
    def _rows(self, table: str, ts: int) -> Rows:
        key = (table, date_of(ts))
        rows = self._batch.rows.get(key)
        if rows is None:
            rows = self._batch.rows[key] = self._new_rows(key)
        return rows

    def _new_rows(self, key: tuple[str, str]) -> Rows:
        """Rows of (table, date) whose files go straight to their temp files (local
        roots: ``storage.spool``; the names match ``recover_publish``'s clean-up)."""
        if self.store.s3:
            return Rows(key[0])
        where = partition_dir(self.root, key[0], self.venue, key[1])
        return Rows(key[0], lambda: Spool(where / f".{self.run}-s{next(self._spools):06d}.tmp"))

    def add_raw(self, session: str, rec: RawRecord) -> None:
        self._rows("raw", rec.ts_recv).append(
            (rec.ts_recv, session, rec.frame, rec.direction, rec.kind, rec.payload, rec.note))

    def add_raw_many(self, session: str, recs: Sequence[RawRecord]) -> None:
        """``add_raw`` for each record, built as one Arrow table (payloads: one concat)."""
        if not recs:
            return
        n = len(recs)
        schema = TABLES["raw"]
        columns = {
            "ts_recv": pa.array([r.ts_recv for r in recs], schema.field("ts_recv").type),
            "session": constant(session, n),
            "frame": pa.array([r.frame for r in recs], pa.int64()),
            "direction": pa.array([r.direction for r in recs], pa.string()),
            "kind": pa.array([r.kind for r in recs], pa.string()),
            "payload": binary_array([r.payload for r in recs]),
            "note": pa.array([r.note for r in recs], pa.string()),
        }
        self.add_table("raw", pa.Table.from_pydict(columns, schema=schema))

    def add_table(self, table: str, rows: pa.Table) -> None:
        """Rows already in ``table``'s schema, ``ts_recv`` not decreasing (split at UTC
        midnight here)."""
        if rows.num_rows == 0:
            return
        ts = rows.column("ts_recv")
        first, last = ts[0].value, ts[-1].value
        if first // DAY_NS == last // DAY_NS:
            self._rows(table, first).add_table(rows)
            return
        days = pc.floor_temporal(ts, unit="day")
        for day in pc.unique(days):
            part = rows.filter(pc.equal(days, day))
            self._rows(table, part.column("ts_recv")[0].value).add_table(part)

    def mark(self, records: int) -> None:
        """The buffered rows now cover the run's first ``records`` journal records."""
        self._batch.records = records

    def add_event(self, ev: Any) -> None:
        self._rows(ev.TABLE, ev.ts_recv).append(_GETTERS[ev.TABLE](ev))

    def add_session(self, row: dict[str, Any]) -> None:
        self._rows("sessions", row["ts_recv"]).append(tuple(row[n] for n in TABLES["sessions"].names))

    @property
    def buffered(self) -> int:
        return len(self._batch)

    def take(self) -> Batch:
        batch, self._batch = self._batch, Batch(records=self._batch.records)
        return batch

    # -- publishing ------------------------------------------------------------------
    def publish(self, batch: Batch) -> list[Path]:
        """Write ``batch`` as Parquet files and move the checkpoint past its records.

        On an I/O error (``OSError``, e.g. ENOSPC) before the intent is recorded,
        nothing of the batch is published: its temps are removed, ``batch.intent``
        stays False and the error is raised; give the batch back with ``restore``
        (on the thread that adds rows) and publish again later. After the intent,
        the batch is as good as published (recovery would roll it forward): an
        error there is raised too, with ``batch.intent`` True, and the next
        ``publish`` (or ``settle``) finishes the renames and the checkpoint first.
        """
        self.settle()
        if not batch.rows:
            if batch.records > self.published_records:
                self._checkpoint(batch.records, None)
            return []
        if self.store.s3:
            return self._publish_objects(batch)
        pairs: list[tuple[Path, Path]] = []
        written: list[Path] = []        # temps written here from memory
        try:
            for (table, date), rows in sorted(batch.rows.items(), key=lambda kv: kv[0]):
                for data in rows.files():
                    if data.lost:
                        raise StoreError("a batch's Parquet file was lost after a failed write; "
                                         "restart the recorder: its rows are recovered from "
                                         "the journal")
                    final = partition_dir(self.root, table, self.venue, date) / \
                        f"{self.run}-{self._next_file:06d}.parquet"
                    self._next_file += 1
                    if data.on_disk:
                        pairs.append((data.finish(), final))
                    else:
                        written.append(write_temp(data.pieces, final))
                        pairs.append((written[-1], final))
            self._checkpoint(batch.records, [[str(t), str(f)] for t, f in pairs])
        except BaseException:
            for rows in batch.rows.values():    # the batch is given back whole, in memory
                for data in rows.done:
                    data.hold()
            for tmp in written:
                try:
                    tmp.unlink()
                except OSError:
                    pass
            raise
        batch.intent = True
        self._unsettled = (batch.records, pairs, len(batch))
        self.settle()
        return [f for _, f in pairs]

    def settle(self) -> None:
        """Finish a publish whose intent is recorded: renames, fsyncs, checkpoint."""
        if self._unsettled is None:
            return
        records, pairs, rows = self._unsettled
        for tmp, final in pairs:
            if os.path.exists(tmp):
                os.replace(tmp, final)
        for d in {f.parent for _, f in pairs}:
            fsync_dir(d)
        self._checkpoint(records, None)
        self._unsettled = None
        self.files_published += len(pairs)
        self.rows_published += rows

    def restore(self, batch: Batch) -> None:
        """Put the rows of a batch whose publish failed back in front of the buffer."""
        for key, rows in batch.rows.items():
            mine = self._batch.rows.get(key)
            if mine is None:
                mine = self._batch.rows[key] = self._new_rows(key)
            mine.prepend(rows)
        self._batch.records = max(self._batch.records, batch.records)

    def _publish_objects(self, batch: Batch) -> list[Path]:
        """S3: intent first, then one object write per file (see the module doc)."""
        first = self._next_file
        names: list[tuple[str, str, str]] = []
        for table, date in sorted(batch.rows):
            names.append((table, date, (f"{table}/venue={self.venue}/date={date}/"
                                        f"{self.run}-{self._next_file:06d}.parquet")))
            self._next_file += 1
        self._checkpoint(batch.records, [[None, n] for _, _, n in names], first)
        for t, d, n in names:
            self.store.write_parquet(batch.rows[(t, d)].arrow(), n)
        out = [Path(self.store.join(n)) for _, _, n in names]    # bucket/prefix/... keys
        self._checkpoint(batch.records, None)
        if self.redo is not None and batch.records >= self.redo:
            self.redo = None
        self.files_published += len(names)
        self.rows_published += len(batch)
        return out

    def _checkpoint(self, records: int, intent: list[list[str | None]] | None,
                    first_file: int | None = None) -> None:
        state: dict[str, Any] = {"records": self.published_records if intent else records,
                                 "next_file": self._next_file}
        if intent is not None:
            state["intent"] = {"records": records, "files": intent}
            if first_file is not None:
                state["intent"]["first_file"] = first_file
        elif self.redo is not None and records < self.redo:
            state["redo"] = self.redo
        write_json(self.checkpoint_path, state)
        if intent is None:
            self.published_records = records


def recover_publish(root: Path | str | StoreRoot, venue: str, run: str, state_dir: Path) -> int:
    """Finish or undo an interrupted publish; return how many records are published.

    S3: an interrupted publish becomes ``redo`` (module doc); the records count
    stays at the last completed publish."""
    path = state_dir / "checkpoint.json"
    state = read_json(path, {}) or {}
    intent = state.pop("intent", None)
    store = as_store(root)
    if store.s3:
        if intent:
            state["next_file"] = intent.get("first_file", state.get("next_file", 0))
            state["redo"] = intent["records"]
            write_json(path, state)
        return int(state.get("records", 0))
    root = Path(store.base)
    if intent:
        for tmp, final in intent["files"]:
            if os.path.exists(tmp):
                os.replace(tmp, final)
        state["records"] = intent["records"]
        write_json(path, state)
    for tmp in root.glob(f"*/venue={venue}/date=*/.{run}-*.tmp"):
        tmp.unlink()
    return int(state.get("records", 0))


__all__ = ["Batch", "Rows", "Spool", "StoreWriter", "recover_publish", "temp_path", "to_arrow"]
