"""End of day: seal one UTC date of the store into a few large sorted files.

``seal_day(root, date)`` takes, for every table and venue, the files of the
partition ``ROOT/<table>/venue=<v>/date=<D>/``, rewrites their rows sorted
(normalized tables by (symbol, ts_recv, session, frame, pos); ``raw`` by
(ts_recv, session, frame); ``sessions`` by (ts_recv, session)) into
``sealed-<id>-NNN.parquet`` files with DuckDB-sized row groups, checks them,
writes the day's manifest ``ROOT/manifests/date=<D>/manifest.json`` and only then
removes the old files; last it deletes the journal runs the sealed days fully
cover. See ``storage/sealio.py`` for the row-group size and the digest.

Checks before anything is switched (a failed check leaves the day untouched):
- the listing holds every sealed file the day's manifest names (object stores:
  listed again a few times first, a listing may lag). Resealing what is listed
  would write a manifest without the others: on an object store their rows would
  vanish for readers and the files be deleted as garbage;
- per (table, venue): the sealed rows equal the old rows (count and an
  order-independent digest);
- per finished journal run that still exists: for each of its sessions, the
  records of that date equal the ``raw`` rows of that session and date.

The switch follows the writer's intent protocol (``storage/writer.py``):

1. sealed files and the new manifest are written whole under hidden temp names
   and fsynced;
2. ``manifests/date=<D>/intent.json`` records the (temp, final) renames and the
   old files to delete;
3. temps are renamed (the manifest last), old files unlinked, directories fsynced;
4. the intent is removed.

``recover_seals`` (run first by every seal, by the daemon at start and by
``tickrec compact``) rolls an intent forward (renames what is left, deletes
what is left) and, where there is no intent, deletes stray seal temps (roll
back). After a crash at any point and that recovery, each partition holds
either its old files or its sealed ones, never both and never neither.

Late files: a recorder that publishes rows of a sealed date afterwards adds a
normal file to the partition. ``day_state`` reports such files (not in the
manifest); sealing the day again merges them.

Readers running during step 3 may see old and new files together for the
milliseconds the renames and unlinks take (see docs/daemon.md).

Object stores (``s3://``, no rename): the same checks, a different switch
(``storage.liveset`` has the reader's rule):

1. the partition's files are downloaded to a local stage
   (``<journal dir>/.seal/<seal>/``), rewritten and checked there exactly as above;
2. the sealed files are uploaded under new names ``sealed-<seal>-NNN.parquet``
   (one whole object each; readers ignore sealed files no manifest names);
3. the day's manifest is written (one object write: **the switch**); it names
   the live sealed files and, cumulatively, every file they replace;
4. the replaced objects are deleted (garbage collection).

``recover_seals`` on an object store deletes what the manifests say is garbage:
sealed objects no manifest names (a seal killed before step 3) and replaced
objects (a seal killed during step 4). A crash before step 3 leaves the old
files live, after it the new ones; late files (recorder files of a sealed day
that the manifest neither names nor replaces) stay live in both. One seal at a
time per store: ``storage.seallock``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from schemas.tables import TABLES
from storage import sealio
from storage.atomic import fsync_dir, read_json, temp_path
from storage.fs import StoreRoot, as_store
from storage.journal_trim import RunSummary, done_runs, remove_run, sweep_trash
from storage.layout import new_session_id, parse_date
from storage.liveset import (
    Manifests,
    base_name,
    classify,
    entry_of,
    manifest_rel,
    merged,
    partition_of,
)
from storage.seallock import SealLock

MANIFEST_FORMAT = 1
LIST_AGAIN_S = (0.5, 2.0, 5.0)      # object stores: waits before listing a lagging day again
Root = Path | str | StoreRoot
Listing = dict[tuple[str, str, str], list[str]]      # (table, venue, date) -> file paths
Log = Callable[[str, dict[str, Any]], None]


def _no_log(event: str, fields: dict[str, Any]) -> None:
    pass


@dataclass
class SealOptions:
    row_group_rows: int = sealio.ROW_GROUP_ROWS
    file_rows: int = sealio.FILE_ROWS
    memory_limit: str = "1GB"
    threads: int | None = None
    trim_journal: bool = True


@dataclass
class PartitionReport:
    table: str
    venue: str
    files_in: int
    files_out: int
    rows: int
    digest: str
    resealed: bool          # False: already sealed, left as it was


@dataclass
class SealReport:
    date: str
    partitions: list[PartitionReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    runs_checked: int = 0
    runs_trimmed: list[str] = field(default_factory=list)
    manifest: Path | str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def sealed(self) -> bool:
        return any(p.resealed for p in self.partitions)

    def lines(self) -> list[str]:
        out = []
        for p in self.partitions:
            what = (f"{p.files_in} file(s) -> {p.files_out}" if p.resealed
                    else "already sealed")
            out.append(f"{self.date} {p.table:<8} {p.venue:<10} {p.rows:>10} rows  {what}")
        out += [f"PROBLEM: {x}" for x in self.problems]
        out.append(f"{self.date}: {'sealed' if self.sealed else 'nothing to seal'}"
                   f"{'' if self.ok else ' (verification FAILED)'}; {self.runs_checked} journal "
                   f"run(s) checked, {len(self.runs_trimmed)} trimmed; {self.seconds:.1f}s")
        return out


def manifest_dir(root: Path, date: str) -> Path:
    return root / "manifests" / f"date={date}"


def manifest_path(root: Path, date: str) -> Path:
    return manifest_dir(root, date) / "manifest.json"


def intent_path(root: Path, date: str) -> Path:
    return manifest_dir(root, date) / "intent.json"


def _rel(root: Path, p: Path | str) -> str:
    return str(Path(p).relative_to(root))


# -- recovery ----------------------------------------------------------------------------
def _roll_forward(root: Path, intent_file: Path) -> None:
    intent = read_json(intent_file, {}) or {}
    dirs: set[Path] = set()
    for tmp, final in intent.get("renames", []):
        if os.path.exists(root / tmp):
            os.replace(root / tmp, root / final)
        dirs.add((root / final).parent)
    for old in intent.get("deletes", []):
        if os.path.exists(root / old):
            os.unlink(root / old)
        dirs.add((root / old).parent)
    for d in dirs:
        if d.is_dir():
            fsync_dir(d)
    os.unlink(intent_file)


def recover_seals(root: Root) -> list[str]:
    """Finish (roll forward) every seal with an intent; delete temps of seals without one.

    Object stores: delete the garbage the manifests define (module doc); returns
    the dates where there was some."""
    store = as_store(root)
    if store.s3:
        return _collect(store, list_store(store))
    root = Path(store.base)
    done: list[str] = []
    for intent in sorted((root / "manifests").glob("date=*/intent.json")):
        _roll_forward(root, intent)
        done.append(intent.parent.name.removeprefix("date="))
    for tmp in root.glob("*/venue=*/date=*/.sealed-*.tmp"):
        tmp.unlink()
    for tmp in (root / "manifests").glob("date=*/.manifest.json.tmp"):
        tmp.unlink()
    return done


# -- state of a day ------------------------------------------------------------------------
def list_store(root: Root, date: str | None = None) -> Listing:
    """Every published file of every partition (of one date), by (table, venue, date).

    Object stores: one recursive listing per table; local roots: a glob."""
    store = as_store(root)
    out: Listing = {}
    for table in TABLES:
        if store.s3:
            paths = store.list_parquet(table)
        else:
            paths = [str(p) for p in Path(store.base).glob(
                f"{table}/venue=*/date={date or '*'}/*.parquet")]
        for path in sorted(paths):
            key = partition_of(path.replace(os.sep, "/"))
            if key is not None and (date is None or key[1] == date):
                out.setdefault((table, *key), []).append(path)
    return out


def _manifest_of(store: StoreRoot, date: str, manifests: Manifests | None) -> Any:
    if manifests is not None:
        return manifests.get(date)
    if store.s3:
        return store.read_json(manifest_rel(date))
    return read_json(manifest_path(Path(store.base), date))


@dataclass
class DayState:
    """One date of the store. Files are ``Path``s for local roots, object paths
    (``bucket/prefix/…``) for object stores."""
    date: str
    partitions: dict[tuple[str, str], list[Any]]        # (table, venue) -> live files now
    manifest: dict[str, Any] | None
    late: dict[tuple[str, str], list[Any]]               # live files the manifest lacks
    unsealed: list[tuple[str, str]]                      # partitions the manifest lacks
    pending_intent: bool
    garbage: list[Any] = field(default_factory=list)     # replaced, not yet deleted
    missing: dict[tuple[str, str], list[str]] = field(default_factory=dict)   # named, not listed

    @property
    def sealed(self) -> bool:
        return (self.manifest is not None and not self.late and not self.unsealed
                and not self.pending_intent)


def day_state(root: Root, date: str, venues: set[str] | None = None, *,
              listing: Listing | None = None, manifests: Manifests | None = None) -> DayState:
    store = as_store(root)
    if listing is None:
        listing = list_store(store, date)
    manifest = _manifest_of(store, date, manifests)
    parts: dict[tuple[str, str], list[Any]] = {}
    late: dict[tuple[str, str], list[Any]] = {}
    unsealed: list[tuple[str, str]] = []
    garbage: list[Any] = []
    missing: dict[tuple[str, str], list[str]] = {}
    as_file: Callable[[str], Any] = str if store.s3 else Path
    for (table, venue, d), paths in sorted(listing.items()):
        if d != date or (venues is not None and venue not in venues):
            continue
        entry = entry_of(manifest, table, venue)
        part = classify(paths, entry)
        garbage += map(as_file, part.garbage)
        if part.missing:
            missing[(table, venue)] = part.missing
        if not part.live:
            continue
        parts[(table, venue)] = list(map(as_file, part.live))
        if entry is None or part.missing:
            unsealed.append((table, venue))      # never sealed, or sealed files missing
            continue                             # (a seal refuses the day: ``missing``)
        named = {base_name(f["path"]) for f in entry["files"]}
        extra = [p for p in part.live if base_name(p) not in named]
        if extra:
            late[(table, venue)] = extra
    pending = False if store.s3 else intent_path(Path(store.base), date).exists()
    return DayState(date, parts, manifest, late, unsealed, pending, garbage, missing)


def store_dates(root: Root, listing: Listing | None = None) -> list[str]:
    if listing is None:
        listing = list_store(root)
    return sorted({d for _, _, d in listing})


def unsealed_days(root: Root, before: str) -> list[str]:
    """Dates before ``before`` (YYYY-MM-DD) with data not sealed, or sealed with late files."""
    store = as_store(root)
    listing = list_store(store)
    dates = [d for d in store_dates(store, listing) if d < before]
    manifests = Manifests(store) if store.s3 else None
    if manifests is not None:
        manifests.prefetch(dates)
    return [d for d in dates
            if not day_state(store, d, listing=listing, manifests=manifests).sealed]


def _collect(store: StoreRoot, listing: Listing) -> list[str]:
    """Object stores: delete every day's garbage (``liveset``); the dates that had some."""
    manifests = Manifests(store)
    dates = store_dates(store, listing)
    manifests.prefetch(dates)
    done = []
    for date in dates:
        garbage = day_state(store, date, listing=listing, manifests=manifests).garbage
        for path in garbage:
            store.delete(str(path)[len(store.base) + 1:])
        if garbage:
            done.append(date)
    return done


# -- sealing -------------------------------------------------------------------------------
def seal_day(root: Root, date: str, venues: list[str] | None = None, *,
             options: SealOptions | None = None, log: Log = _no_log) -> SealReport:
    """Seal ``date`` (all venues, or only ``venues``); see the module docstring.

    Returns a report; ``report.ok`` is False when a check failed (then nothing
    of that day was switched and no journal was removed). Raises StoreError /
    OSError only for I/O failures; a crash at any point is recovered by the
    next call.
    """
    store = as_store(root)
    date = parse_date(date)
    opts = options or SealOptions()
    started = time.monotonic()
    report = SealReport(date)
    with SealLock(store) as lock:
        recover_seals(store)
        sweep_trash(store.journal)
        spill = (store.journal / ".seal" / "spill" if store.s3
                 else Path(store.base) / "manifests" / ".spill")
        con = sealio.connect(opts.memory_limit, spill, opts.threads)
        try:
            _seal(store, date, set(venues) if venues else None, opts, report, con, log, lock)
            if report.ok and opts.trim_journal:
                _trim(store, con, report, log)
        finally:
            con.close()
    report.seconds = time.monotonic() - started
    return report


class _Stage:
    """Where a seal reads its input files and writes its sealed files, locally.

    Local roots: the partition's own files; sealed temps beside them. Object
    stores: inputs downloaded to ``<journal dir>/.seal/<seal>/in``, sealed files
    written under ``…/out`` and uploaded at the switch; the stage is removed at
    the end whatever happens (``close``)."""

    def __init__(self, store: StoreRoot, seal_id: str) -> None:
        self.store = store
        self.dir = store.journal / ".seal" / seal_id if store.s3 else None

    def inputs(self, files: list[str]) -> list[str]:
        if self.dir is None:
            return files
        out = []
        for path in files:
            local = self.dir / "in" / path[len(self.store.base) + 1:]
            local.parent.mkdir(parents=True, exist_ok=True)
            with self.store.fs.open_input_stream(path) as src, open(local, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            out.append(str(local))
        return out

    def drop_inputs(self, local: list[str]) -> None:
        if self.dir is not None:
            for p in local:
                os.unlink(p)

    def out_dir(self, table: str, venue: str, date: str) -> Path:
        rel = partition_rel(table, venue, date)
        return self.dir / "out" / rel if self.dir is not None else self.store.local_path(rel)

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def partition_rel(table: str, venue: str, date: str) -> str:
    return f"{table}/venue={venue}/date={date}"


def _seal(store: StoreRoot, date: str, venues: set[str] | None, opts: SealOptions,
          report: SealReport, con: Any, log: Log, lock: SealLock) -> None:
    state = day_state(store, date, venues)
    for wait in LIST_AGAIN_S if store.s3 else ():
        if not state.missing:
            break
        time.sleep(wait)        # an object store's listing may lag behind its manifest
        state = day_state(store, date, venues)
    if state.missing:
        for (table, venue), names in sorted(state.missing.items()):
            report.problems.append(
                f"{date} {table} {venue}: the manifest names {len(names)} sealed file(s) the "
                f"store does not list (e.g. {names[0]}); nothing of the day was sealed, so "
                f"their rows stay named: list the store again later, or run tickrec verify")
        log("seal_failed", {"date": date, "problems": report.problems[:5]})
        return
    todo = sorted(set(state.late) | set(state.unsealed))
    seal_id = new_session_id()
    stage = _Stage(store, seal_id)
    try:
        _seal_staged(store, date, state, todo, seal_id, stage, opts, report, con, log, lock)
    finally:
        stage.close()


def _sealed_names(base: Path, seal_id: str) -> Callable[[int], Path]:
    """File ``k`` of one partition's seal ``seal_id``: ``base/sealed-<seal_id>-<kkk>.parquet``."""
    return lambda k: base / f"sealed-{seal_id}-{k:03d}.parquet"


def _seal_staged(store: StoreRoot, date: str, state: DayState, todo: list[tuple[str, str]],
                 seal_id: str, stage: _Stage, opts: SealOptions, report: SealReport, con: Any,
                 log: Log, lock: SealLock) -> None:
    written: dict[tuple[str, str], list[sealio.Written]] = {}
    digests: dict[tuple[str, str], sealio.Digest] = {}
    if todo:
        log("seal_started", {"date": date, "partitions": len(todo)})
    try:
        for table, venue in todo:
            files = stage.inputs(state.partitions[(table, venue)])
            before = sealio.digest(con, files, table)
            base = stage.out_dir(table, venue, date)
            out = sealio.rewrite(con, files, table, _sealed_names(base, seal_id),
                                 row_group_rows=opts.row_group_rows, file_rows=opts.file_rows)
            written[(table, venue)] = out
            after = sealio.digest(con, [w.path for w in out], table)
            if after.text != before.text:
                report.problems.append(f"{date} {table} {venue}: sealed rows differ from the "
                                       f"old rows ({after.text} != {before.text})")
            digests[(table, venue)] = after
            stage.drop_inputs(files if store.s3 else [])
            lock.renew()
        _check_journal(store, date, con, state, written, report)
        if not report.ok:
            raise _Abort
    except BaseException:
        for out in written.values():
            for w in out:
                if w.path.exists():
                    w.path.unlink()
        if not report.ok:
            log("seal_failed", {"date": date, "problems": report.problems[:5]})
            return
        raise
    for (table, venue), files in sorted(state.partitions.items()):
        if (table, venue) in written:
            report.partitions.append(PartitionReport(
                table, venue, len(files), len(written[(table, venue)]),
                digests[(table, venue)].rows, digests[(table, venue)].text, True))
        else:
            entry = entry_of(state.manifest, table, venue) or {}
            report.partitions.append(PartitionReport(table, venue, len(files), len(files),
                                                     int(entry.get("rows", 0)),
                                                     str(entry.get("digest", "")), False))
    where = (store.join(manifest_rel(date)) if store.s3
             else manifest_path(Path(store.base), date))
    if not todo:
        report.manifest = where if state.manifest else None
        return
    manifest = _manifest(date, seal_id, state, written, digests, con, opts)
    if store.s3:
        _commit_objects(store, date, manifest, state, written, log)
    else:
        _commit(Path(store.base), date, manifest, state, written, log)
    report.manifest = where
    log("seal_committed", {"date": date, "partitions": len(todo),
                           "rows": sum(d.rows for d in digests.values())})


class _Abort(Exception):
    pass


def _session_counts(store: StoreRoot, con: Any, files: Sequence[Path | str],
                    local: bool) -> dict[str, int]:
    """Raw rows per session in ``files`` (local paths, or objects of ``store``)."""
    if local or not store.s3:
        return dict(sealio.scalar_rows(con, files,
                                       "SELECT session, count(*) FROM {files} GROUP BY session"))
    if not files:
        return {}
    t = ds.dataset([str(f) for f in files], format="parquet", filesystem=store.fs
                   ).to_table(columns=["session"])
    counts = pc.value_counts(t.column("session")).to_pylist()
    return {c["values"]: int(c["counts"]) for c in counts}


def _check_journal(store: StoreRoot, date: str, con: Any, state: DayState,
                   written: dict[tuple[str, str], list[sealio.Written]],
                   report: SealReport) -> None:
    """Each finished run's records of ``date`` equal its sessions' raw rows of ``date``."""
    here = {v for _, v in state.partitions}
    runs = [r for r in done_runs(store.journal) if date in r.dates and r.venue in here]
    for venue in sorted({r.venue for r in runs}):
        if ("raw", venue) in written:
            counts = _session_counts(store, con, [w.path for w in written[("raw", venue)]], True)
        else:
            counts = _session_counts(store, con, state.partitions.get(("raw", venue), []), False)
        for run in (r for r in runs if r.venue == venue):
            report.runs_checked += 1
            for session, per_date in run.sessions.items():
                want, have = per_date.get(date, 0), counts.get(session, 0)
                if want != have:
                    report.problems.append(
                        f"{date} raw {venue}: session {session} of journal run "
                        f"{run.path.name} has {want} records that day, raw has {have} rows")


def _manifest(date: str, seal_id: str, state: DayState,
              written: dict[tuple[str, str], list[sealio.Written]],
              digests: dict[tuple[str, str], sealio.Digest], con: Any,
              opts: SealOptions) -> dict[str, Any]:
    old = state.manifest or {}
    tables: dict[str, dict[str, Any]] = {t: dict((old.get("tables") or {}).get(t, {}))
                                         for t in TABLES}
    for (table, venue), out in written.items():
        d = digests[(table, venue)]
        tables[table][venue] = {
            "rows": d.rows, "digest": d.text,
            "first_ts_recv": d.first_ts, "last_ts_recv": d.last_ts,
            "first": _iso(d.first_ts), "last": _iso(d.last_ts), "seal": seal_id,
            "files": [{"path": f"{partition_rel(table, venue, date)}/{w.final.name}",
                       "rows": w.rows, "row_groups": w.row_groups, "bytes": w.bytes,
                       "sha256": w.sha256} for w in out],
            "replaced": merged(entry_of(old, table, venue), state.partitions[(table, venue)])}
    gaps = dict(old.get("gaps") or {})
    for venue in {v for _, v in written}:
        gaps.setdefault(venue, {"rows": 0, "by_kind": {}, "missing": 0})
    for (table, venue), out in written.items():
        if table != "gaps":
            continue
        rows = sealio.scalar_rows(con, [w.path for w in out],
                                  "SELECT kind, count(*), coalesce(sum(missing), 0) FROM {files} "
                                  "GROUP BY kind ORDER BY kind")
        gaps[venue] = {"rows": sum(int(r[1]) for r in rows),
                       "by_kind": {str(r[0]): int(r[1]) for r in rows},
                       "missing": sum(int(r[2]) for r in rows)}
    return {"format": MANIFEST_FORMAT, "date": date, "seal": seal_id,
            "sealed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "row_group_rows": opts.row_group_rows,
            "tables": {t: v for t, v in tables.items() if v}, "gaps": gaps}


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="microseconds")


def _commit(root: Path, date: str, manifest: dict[str, Any], state: DayState,
            written: dict[tuple[str, str], list[sealio.Written]], log: Log) -> None:
    mpath = manifest_path(root, date)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    mtmp = temp_path(mpath)
    with open(mtmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    renames = [[_rel(root, w.path), _rel(root, w.final)] for out in written.values() for w in out]
    renames.append([_rel(root, mtmp), _rel(root, mpath)])
    deletes = [_rel(root, f) for key in written for f in state.partitions[key]]
    ipath = intent_path(root, date)
    itmp = ipath.with_name(".intent.json.tmp")
    with open(itmp, "w", encoding="utf-8") as fh:
        json.dump({"date": date, "seal": manifest["seal"], "renames": renames,
                   "deletes": deletes}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(itmp, ipath)
    fsync_dir(ipath.parent)
    log("seal_switching", {"date": date, "renames": len(renames), "deletes": len(deletes)})
    _roll_forward(root, ipath)
    fsync_dir(ipath.parent)


def _commit_objects(store: StoreRoot, date: str, manifest: dict[str, Any], state: DayState,
                    written: dict[tuple[str, str], list[sealio.Written]], log: Log) -> None:
    """Object stores: upload the sealed files, write the manifest (the switch), delete the
    files it replaces (module doc). Each step can be cut short by a crash: before the
    manifest the old files stay live, after it the new ones."""
    for (table, venue), out in sorted(written.items()):
        for w in out:
            store.upload(w.path, f"{partition_rel(table, venue, date)}/{w.final.name}")
    log("seal_switching", {"date": date, "uploads": sum(map(len, written.values())),
                           "deletes": sum(len(state.partitions[k]) for k in written)})
    store.write_json(manifest_rel(date), manifest)
    for key in sorted(written):
        for path in state.partitions[key]:
            store.delete(path[len(store.base) + 1:])


def _trim(store: StoreRoot, con: Any, report: SealReport, log: Log) -> None:
    """Remove finished runs whose every date is sealed and checked against raw."""
    cache: dict[tuple[str, str], dict[str, int]] = {}
    states: dict[str, DayState] = {}
    listing: Listing | None = None

    def raw_counts(date: str, venue: str) -> dict[str, int] | None:
        nonlocal listing
        if date not in states:
            if listing is None:
                listing = list_store(store)
            states[date] = day_state(store, date, listing=listing)
        st = states[date]
        if not st.sealed or ("raw", venue) not in st.partitions:
            return None
        if (date, venue) not in cache:
            cache[(date, venue)] = _session_counts(store, con, st.partitions[("raw", venue)],
                                                   False)
        return cache[(date, venue)]

    runs = done_runs(store.journal)
    if not runs:
        return
    for run in runs:
        if _covered(run, raw_counts):
            remove_run(run.path)
            report.runs_trimmed.append(run.path.name)
    if report.runs_trimmed:
        log("journal_trimmed", {"runs": len(report.runs_trimmed)})


def _covered(run: RunSummary, raw_counts: Callable[[str, str], dict[str, int] | None]) -> bool:
    if run.orphans:
        return False        # records that never reached raw: keep them for a human
    for date in run.dates:
        counts = raw_counts(date, run.venue)
        if counts is None:
            return False
        for session, per_date in run.sessions.items():
            if per_date.get(date, 0) and counts.get(session, 0) != per_date[date]:
                return False
    return True
