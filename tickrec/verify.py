"""``tickrec verify``: is the store whole and does every row follow from its raw frames?

Checks, each problem one line:
1. every Parquet file opens, has its table's columns and the schema version;
2. no journal run is left unrecovered (its frames are not all in Parquet yet);
3. every normalized row is re-derived: the ``raw`` rows of each session, fed in
   order through a fresh decoder of the venue, give exactly the stored rows of
   ``trades``, ``book``, ``tickers``, ``bars`` and ``gaps`` (nothing missing,
   nothing extra, nothing different).
Hidden temp files of a publish in progress are reported as notes, not problems.

An ``s3://`` root (``storage.fs.StoreRoot``) gets the same checks: the files are
the bucket's live objects (by the seal manifests, ``storage.liveset``; objects a
seal replaced and has not deleted yet are a note; there are no temps on S3), the
journal is the root's local journal directory.
"""

from __future__ import annotations

import fcntl
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from schemas.errors import ConfigError
from schemas.events import EVENT_COLUMNS, RawRecord, Status
from schemas.tables import EVENT_TABLES, METADATA_KEY, SCHEMA_VERSION, TABLES
from schemas.venues import NAMES, make_decoder
from storage.fs import StoreRoot
from storage.layout import date_of
from storage.writer import _GETTERS

Root = Path | StoreRoot


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    sessions: int = 0
    rows_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _int_times(t: pa.Table) -> pa.Table:
    for i, f in enumerate(t.schema):
        if pa.types.is_timestamp(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.int64()))
    return t


def _check_schema(rel: str, read: Callable[[], pa.Schema], table: str, report: Report) -> bool:
    """One file's schema version and columns; False when it cannot be read at all."""
    report.files += 1
    try:
        got = read()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a finding
        report.problems.append(f"{rel}: unreadable ({exc})")
        return False
    version = (got.metadata or {}).get(METADATA_KEY)
    if version != SCHEMA_VERSION.encode():
        report.problems.append(f"{rel}: schema version {version!r}, expected {SCHEMA_VERSION}")
    if got.names != TABLES[table].names:
        report.problems.append(f"{rel}: columns differ from {table}")
    return True


def check_files(root: Path, report: Report) -> None:
    for table in TABLES:
        for path in sorted(root.glob(f"{table}/venue=*/date=*/*.parquet")):
            _check_schema(str(path.relative_to(root)), partial(pq.read_schema, path), table,
                          report)
        for tmp in root.glob(f"{table}/venue=*/date=*/.*.tmp"):
            report.notes.append(f"{tmp.relative_to(root)}: publish in progress or interrupted")


def check_journal(root: Path, report: Report) -> None:
    base = root / "journal"
    if not base.is_dir():
        return
    for run in sorted(p for p in base.glob("*/*") if p.is_dir()):
        if not (run / "done").exists():
            if _live(run):
                report.notes.append(f"journal run {run.relative_to(root)} is being recorded now")
                continue
            report.problems.append(f"journal run {run.relative_to(root)} is not sealed into "
                                   "Parquet (a recorder is running, or one died: start "
                                   "`tickrec record` for that feed to recover it)")


def _live(run: Path) -> bool:
    """Whether a recorder holds the run's lock (it is capturing into it now)."""
    lock = run / "lock"
    if not lock.exists():
        return False
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


class _Partitions:
    """One venue's published files per (table, date): local directories or, on an
    object store, one listing per table (``skip``: objects reported unreadable)."""

    def __init__(self, root: Root, venue: str, skip: frozenset[str] = frozenset()) -> None:
        self.root, self.venue = root, venue
        self.files: dict[str, dict[str, list[str]]] = {}
        for table in ("raw", *EVENT_TABLES):
            by_date: dict[str, list[str]] = {}
            for path in self._list(table):
                if path in skip:
                    continue
                part = path.rsplit("/", 2)[-2]
                if part.startswith("date="):
                    by_date.setdefault(part[5:], []).append(path)
            self.files[table] = by_date

    def _list(self, table: str) -> list[str]:
        if isinstance(self.root, StoreRoot):
            return list(self.root.parquet_files(table, self.venue))
        base = self.root / table / f"venue={self.venue}"
        return sorted(str(p) for p in base.glob("date=*/*.parquet") if not p.name.startswith("."))

    def dates(self) -> list[str]:
        return sorted({d for by_date in self.files.values() for d in by_date})

    def read(self, table: str, date: str, columns: list[str] | None = None) -> pa.Table | None:
        files = self.files[table].get(date)
        if not files:
            return None
        fs = self.root.fs if isinstance(self.root, StoreRoot) else None
        return _int_times(ds.dataset(files, format="parquet", filesystem=fs)
                          .to_table(columns=columns))


def _raw_records(t: pa.Table) -> Iterator[tuple[str, RawRecord]]:
    """One day's raw rows as (session, record), by (session, ts_recv, frame)."""
    t = t.sort_by([("session", "ascending"), ("ts_recv", "ascending"), ("frame", "ascending")])
    cols = [t.column(n).to_pylist() for n in
            ("session", "ts_recv", "frame", "direction", "kind", "payload", "note")]
    for session, ts, frame, direction, kind, payload, note in zip(*cols):
        yield session, RawRecord(ts, frame, direction, kind, payload, note)


def _stored(parts: _Partitions, table: str, date: str) -> list[tuple[Any, ...]]:
    t = parts.read(table, date, list(EVENT_COLUMNS[table]))
    if t is None:
        return []
    return sorted(zip(*(t.column(c).to_pylist() for c in EVENT_COLUMNS[table])), key=_key(table))


def _key(table: str) -> Any:
    cols = EVENT_COLUMNS[table]
    idx = [cols.index(c) for c in ("session", "ts_recv", "frame", "pos")]
    return lambda row: tuple(row[i] for i in idx)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    # NaN never equals itself; compare field by field treating NaN == NaN
    return all(x == y or (x != x and y != y) for x, y in zip(a, b))  # noqa: PLR0124


def check_rederive(root: Root, venue: str, report: Report,
                   skip: frozenset[str] = frozenset()) -> None:
    """Every stored event row of ``venue`` equals the rows its raw frames give.

    Day by day, so memory follows the largest day: each day's raw rows go through
    the decoders of their sessions (kept across midnight until the session closes),
    and the rows derived so far for that day are compared with the day's stored
    rows. A derived row lands in the day of its own ``ts_recv``, as the writer puts it.
    """
    parts = _Partitions(root, venue, skip)
    decoders: dict[str, Any] = {}
    derived: dict[str, dict[str, list[tuple[Any, ...]]]] = defaultdict(lambda: defaultdict(list))
    for date in parts.dates():
        raw = parts.read("raw", date)
        for session, rec in _raw_records(raw) if raw is not None else ():
            dec = decoders.get(session)
            if dec is None:
                dec = decoders[session] = make_decoder(venue, session)
                report.sessions += 1
            for ev in dec.feed(rec):
                if not isinstance(ev, Status):
                    derived[date_of(ev.ts_recv)][ev.TABLE].append(_GETTERS[ev.TABLE](ev))
            if rec.kind == "close":
                del decoders[session]
        _compare(venue, date, derived.pop(date, {}), parts, report)
    for date in sorted(derived):            # rows derived for a day nothing was stored in
        _compare(venue, date, derived[date], parts, report)


def _compare(venue: str, date: str, derived: dict[str, list[tuple[Any, ...]]],
             parts: _Partitions, report: Report) -> None:
    for table in EVENT_TABLES:
        want = sorted(derived.get(table, []), key=_key(table))
        have = _stored(parts, table, date)
        report.rows_checked += len(have)
        if len(want) != len(have) or not all(_same(a, b) for a, b in zip(want, have)):
            diff = next((i for i, (a, b) in enumerate(zip(want, have)) if not _same(a, b)),
                        min(len(want), len(have)))
            report.problems.append(
                f"{venue} {table} on {date}: {len(have)} rows stored, {len(want)} re-derived "
                f"from raw; first difference at row {diff}")


def check_objects(store: StoreRoot, report: Report) -> frozenset[str]:
    """``check_files`` for an object store (whole objects only: no temps to note);
    returns the unreadable objects' paths."""
    bad: set[str] = set()
    for table in TABLES:
        live = store.parquet_files(table)
        dead = len(store.list_parquet(table)) - len(live)
        if dead:
            report.notes.append(f"{table}: {dead} object(s) replaced by a seal and not deleted "
                                "yet (the next seal deletes them)")
        for path in live:
            if not _check_schema(path[len(store.base) + 1:],
                                 partial(pq.read_schema, path, filesystem=store.fs), table,
                                 report):
                bad.add(path)
    return frozenset(bad)


def verify(root: Root) -> Report:
    if isinstance(root, StoreRoot):
        if not root.s3:
            root = Path(root.base)
        else:
            return _verify_store(root)
    if not root.is_dir():
        raise ConfigError(f"store root {str(root)!r} does not exist")
    if not any((root / t).is_dir() for t in TABLES) and not (root / "journal").is_dir():
        raise ConfigError(f"{str(root)!r} is not a tickrec store (no table directories)")
    report = Report()
    check_files(root, report)
    check_journal(root, report)
    for venue in NAMES:
        if (root / "raw" / f"venue={venue}").is_dir():
            try:
                check_rederive(root, venue, report)
            except ConfigError as exc:
                report.notes.append(f"{venue}: not re-derived ({exc})")
    return report


def _verify_store(store: StoreRoot) -> Report:
    if not store.is_store():
        raise ConfigError(f"store root {store.uri!r} does not exist (no such bucket)")
    report = Report()
    unreadable = check_objects(store, report)
    check_journal(store.journal, report)
    for venue in NAMES:
        if store.parquet_files("raw", venue):
            try:
                check_rederive(store, venue, report, unreadable)
            except ConfigError as exc:
                report.notes.append(f"{venue}: not re-derived ({exc})")
            except (pa.ArrowException, OSError) as exc:    # e.g. an object gone since listed
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                report.problems.append(f"{venue}: not re-derived ({first})")
    return report
