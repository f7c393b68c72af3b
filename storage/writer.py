"""Rows of one recorder run → partitioned Parquet files, published atomically.

Rows are buffered per (table, UTC date of ``ts_recv``) as tuples. ``take()``
swaps the buffers out (cheap: call it on the event loop); ``publish(batch)``
writes them (slow: may run in a worker thread). One publish writes at most one
file per (table, date), so files roll by size/time, never one per frame or per
symbol, and a batch that spans midnight is split at the date boundary.

Publishing follows an intent protocol kept in ``state_dir/checkpoint.json``:

1. every file is written complete under a hidden temp name and fsynced;
2. the checkpoint records the intent: how many journal records the batch
   covers and the (temp, final) pairs;
3. the temps are renamed to their final names;
4. the checkpoint records that count as published.

``recover_publish`` finishes step 3 after a crash between 2 and 4 (roll
forward; the temps are whole), and deletes temps of an unfinished step 1. So
after any crash, every record before ``checkpoint.records`` is in Parquet exactly
once and nothing after it is (``records`` counts journal records of the run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from schemas.events import EVENT_COLUMNS, RawRecord
from schemas.tables import TABLES
from storage.atomic import fsync_dir, read_json, temp_path, write_json, write_parquet_temp
from storage.layout import date_of, partition_dir

_GETTERS: dict[str, Callable[[Any], tuple[Any, ...]]] = {
    name: attrgetter(*cols) for name, cols in EVENT_COLUMNS.items()}


@dataclass
class Batch:
    rows: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=dict)
    records: int = 0
    intent: bool = False        # its publish got as far as recording the intent

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


def to_arrow(table: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    """Row tuples in schema column order → an Arrow table of that schema."""
    schema = TABLES[table]
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


class StoreWriter:
    def __init__(self, root: Path, venue: str, run: str, state_dir: Path) -> None:
        self.root = root
        self.venue = venue
        self.run = run
        self.state_dir = state_dir
        self.checkpoint_path = state_dir / "checkpoint.json"
        state = read_json(self.checkpoint_path, {}) or {}
        self.published_records: int = state.get("records", 0)
        self._next_file: int = state.get("next_file", 0)
        self._batch = Batch()
        self.files_published = 0
        self.rows_published = 0
        self._unsettled: tuple[int, list[tuple[Path, Path]], int] | None = None

    # -- buffering (hot path) --------------------------------------------------------
    def _rows(self, table: str, ts: int) -> list[tuple[Any, ...]]:
        key = (table, date_of(ts))
        rows = self._batch.rows.get(key)
        if rows is None:
            rows = self._batch.rows[key] = []
        return rows

    def add_raw(self, session: str, rec: RawRecord) -> None:
        self._rows("raw", rec.ts_recv).append(
            (rec.ts_recv, session, rec.frame, rec.direction, rec.kind, rec.payload, rec.note))

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
        pairs: list[tuple[Path, Path]] = []
        try:
            for (table, date), rows in sorted(batch.rows.items()):
                final = partition_dir(self.root, table, self.venue, date) / \
                    f"{self.run}-{self._next_file:06d}.parquet"
                self._next_file += 1
                pairs.append((write_parquet_temp(to_arrow(table, rows), final), final))
            self._checkpoint(batch.records, [[str(t), str(f)] for t, f in pairs])
        except BaseException:
            for tmp, _ in pairs:
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
            rows.extend(self._batch.rows.get(key, ()))
            self._batch.rows[key] = rows
        self._batch.records = max(self._batch.records, batch.records)

    def _checkpoint(self, records: int, intent: list[list[str]] | None) -> None:
        state: dict[str, Any] = {"records": self.published_records if intent else records,
                                 "next_file": self._next_file}
        if intent is not None:
            state["intent"] = {"records": records, "files": intent}
        write_json(self.checkpoint_path, state)
        if intent is None:
            self.published_records = records


def recover_publish(root: Path, venue: str, run: str, state_dir: Path) -> int:
    """Finish or undo an interrupted publish; return how many records are published."""
    path = state_dir / "checkpoint.json"
    state = read_json(path, {}) or {}
    intent = state.pop("intent", None)
    if intent:
        for tmp, final in intent["files"]:
            if os.path.exists(tmp):
                os.replace(tmp, final)
        state["records"] = intent["records"]
        write_json(path, state)
    for tmp in root.glob(f"*/venue={venue}/date=*/.{run}-*.tmp"):
        tmp.unlink()
    return int(state.get("records", 0))


__all__ = ["Batch", "StoreWriter", "recover_publish", "to_arrow", "temp_path"]
