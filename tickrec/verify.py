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
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def check_files(root: Path, report: Report) -> None:
    for table, schema in TABLES.items():
        for path in sorted(root.glob(f"{table}/venue=*/date=*/*.parquet")):
            report.files += 1
            try:
                got = pq.read_schema(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a finding
                report.problems.append(f"{path.relative_to(root)}: unreadable ({exc})")
                continue
            version = (got.metadata or {}).get(METADATA_KEY)
            if version != SCHEMA_VERSION.encode():
                report.problems.append(f"{path.relative_to(root)}: schema version {version!r}, "
                                       f"expected {SCHEMA_VERSION}")
            if got.names != schema.names:
                report.problems.append(f"{path.relative_to(root)}: columns differ from {table}")
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


def _open(root: Root, table: str, venue: str,
          skip: frozenset[str] = frozenset()) -> ds.Dataset | None:
    """The table's files of one venue as a dataset; ``None`` when there are none.

    ``skip``: object paths already reported unreadable (object stores)."""
    if isinstance(root, StoreRoot):
        files = [f for f in root.parquet_files(table, venue) if f not in skip]
        return ds.dataset(files, format="parquet", filesystem=root.fs) if files else None
    base = root / table / f"venue={venue}"
    return ds.dataset(base, format="parquet") if base.is_dir() else None


def _raw_sessions(root: Root, venue: str,
                  skip: frozenset[str] = frozenset()) -> Iterator[tuple[str, list[RawRecord]]]:
    data = _open(root, "raw", venue, skip)
    if data is None:
        return
    t = _int_times(data.to_table())
    t = t.sort_by([("session", "ascending"), ("ts_recv", "ascending"), ("frame", "ascending")])
    cols = {n: t.column(n).to_pylist() for n in t.column_names}
    i, n = 0, t.num_rows
    while i < n:
        session = cols["session"][i]
        recs = []
        while i < n and cols["session"][i] == session:
            recs.append(RawRecord(cols["ts_recv"][i], cols["frame"][i], cols["direction"][i],
                                  cols["kind"][i], cols["payload"][i], cols["note"][i]))
            i += 1
        yield session, recs


def _stored(root: Root, venue: str,
            skip: frozenset[str] = frozenset()) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in EVENT_TABLES:
        data = _open(root, table, venue, skip)
        if data is None:
            out[table] = []
            continue
        t = _int_times(data.to_table(columns=list(EVENT_COLUMNS[table])))
        out[table] = sorted(zip(*(t.column(c).to_pylist() for c in EVENT_COLUMNS[table])),
                            key=_key(table))
    return out


def _key(table: str) -> Any:
    cols = EVENT_COLUMNS[table]
    idx = [cols.index(c) for c in ("session", "ts_recv", "frame", "pos")]
    return lambda row: tuple(row[i] for i in idx)


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    # NaN never equals itself; compare field by field treating NaN == NaN
    return all(x == y or (x != x and y != y) for x, y in zip(a, b))


def check_rederive(root: Root, venue: str, report: Report,
                   skip: frozenset[str] = frozenset()) -> None:
    derived: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for session, recs in _raw_sessions(root, venue, skip):
        report.sessions += 1
        dec = make_decoder(venue, session)
        for rec in recs:
            for ev in dec.feed(rec):
                if not isinstance(ev, Status):
                    derived[ev.TABLE].append(_GETTERS[ev.TABLE](ev))
    stored = _stored(root, venue, skip)
    for table in EVENT_TABLES:
        want = sorted(derived.get(table, []), key=_key(table))
        have = stored[table]
        report.rows_checked += len(have)
        if len(want) != len(have) or not all(_same(a, b) for a, b in zip(want, have)):
            diff = next((i for i, (a, b) in enumerate(zip(want, have)) if not _same(a, b)),
                        min(len(want), len(have)))
            report.problems.append(
                f"{venue} {table}: {len(have)} rows stored, {len(want)} re-derived from raw; "
                f"first difference at row {diff}")


def check_objects(store: StoreRoot, report: Report) -> frozenset[str]:
    """``check_files`` for an object store (whole objects only: no temps to note);
    returns the unreadable objects' paths."""
    bad: set[str] = set()
    for table, schema in TABLES.items():
        live = store.parquet_files(table)
        dead = len(store.list_parquet(table)) - len(live)
        if dead:
            report.notes.append(f"{table}: {dead} object(s) replaced by a seal and not deleted "
                                "yet (the next seal deletes them)")
        for path in live:
            report.files += 1
            rel = path[len(store.base) + 1:]
            try:
                got = pq.read_schema(path, filesystem=store.fs)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is a finding
                report.problems.append(f"{rel}: unreadable ({exc})")
                bad.add(path)
                continue
            version = (got.metadata or {}).get(METADATA_KEY)
            if version != SCHEMA_VERSION.encode():
                report.problems.append(f"{rel}: schema version {version!r}, "
                                       f"expected {SCHEMA_VERSION}")
            if got.names != schema.names:
                report.problems.append(f"{rel}: columns differ from {table}")
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
