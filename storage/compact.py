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
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from schemas.tables import TABLES
from storage import sealio
from storage.atomic import fsync_dir, read_json, temp_path
from storage.journal_trim import RunSummary, done_runs, remove_run, sweep_trash
from storage.layout import new_session_id, parse_date

MANIFEST_FORMAT = 1
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
    manifest: Path | None = None
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


def _rel(root: Path, p: Path) -> str:
    return str(p.relative_to(root))


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


def recover_seals(root: Path) -> list[str]:
    """Finish (roll forward) every seal with an intent; delete temps of seals without one."""
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
@dataclass
class DayState:
    date: str
    partitions: dict[tuple[str, str], list[Path]]       # (table, venue) -> files now
    manifest: dict[str, Any] | None
    late: dict[tuple[str, str], list[Path]]              # files not in the manifest
    unsealed: list[tuple[str, str]]                      # partitions the manifest lacks
    pending_intent: bool

    @property
    def sealed(self) -> bool:
        return (self.manifest is not None and not self.late and not self.unsealed
                and not self.pending_intent)


def _partitions(root: Path, date: str, venues: set[str] | None
                ) -> dict[tuple[str, str], list[Path]]:
    out: dict[tuple[str, str], list[Path]] = {}
    for table in TABLES:
        for d in sorted(root.glob(f"{table}/venue=*/date={date}")):
            venue = d.parent.name.removeprefix("venue=")
            if venues is not None and venue not in venues:
                continue
            files = sorted(d.glob("*.parquet"))
            if files:
                out[(table, venue)] = files
    return out


def _manifest_files(root: Path, manifest: dict[str, Any] | None, table: str, venue: str
                    ) -> set[Path] | None:
    entry = ((manifest or {}).get("tables", {}).get(table, {}) or {}).get(venue)
    if entry is None:
        return None
    return {root / f["path"] for f in entry["files"]}


def day_state(root: Path, date: str, venues: set[str] | None = None) -> DayState:
    parts = _partitions(root, date, venues)
    manifest = read_json(manifest_path(root, date))
    late: dict[tuple[str, str], list[Path]] = {}
    unsealed: list[tuple[str, str]] = []
    for (table, venue), files in parts.items():
        listed = _manifest_files(root, manifest, table, venue)
        if listed is None:
            unsealed.append((table, venue))
        elif set(files) != listed:
            extra = [f for f in files if f not in listed]
            if extra:
                late[(table, venue)] = extra
            else:
                unsealed.append((table, venue))      # sealed files missing: seal again
    return DayState(date, parts, manifest, late, unsealed, intent_path(root, date).exists())


def store_dates(root: Path) -> list[str]:
    dates = {d.name.removeprefix("date=") for t in TABLES for d in root.glob(f"{t}/venue=*/date=*")
             if d.is_dir()}
    return sorted(dates)


def unsealed_days(root: Path, before: str) -> list[str]:
    """Dates before ``before`` (YYYY-MM-DD) with data not sealed, or sealed with late files."""
    return [d for d in store_dates(root) if d < before and not day_state(root, d).sealed]


# -- sealing -------------------------------------------------------------------------------
class _Lock:
    def __init__(self, root: Path) -> None:
        (root / "manifests").mkdir(parents=True, exist_ok=True)
        self._fh = open(root / "manifests" / ".seal.lock", "w")

    def __enter__(self) -> _Lock:
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def seal_day(root: Path | str, date: str, venues: list[str] | None = None, *,
             options: SealOptions | None = None, log: Log = _no_log) -> SealReport:
    """Seal ``date`` (all venues, or only ``venues``); see the module docstring.

    Returns a report; ``report.ok`` is False when a check failed (then nothing
    of that day was switched and no journal was removed). Raises StoreError /
    OSError only for I/O failures; a crash at any point is recovered by the
    next call.
    """
    root = Path(root)
    date = parse_date(date)
    opts = options or SealOptions()
    started = time.monotonic()
    report = SealReport(date)
    with _Lock(root):
        recover_seals(root)
        sweep_trash(root)
        con = sealio.connect(opts.memory_limit, root / "manifests" / ".spill", opts.threads)
        try:
            _seal(root, date, set(venues) if venues else None, opts, report, con, log)
            if report.ok and opts.trim_journal:
                _trim(root, con, report, log)
        finally:
            con.close()
    report.seconds = time.monotonic() - started
    return report


def _seal(root: Path, date: str, venues: set[str] | None, opts: SealOptions, report: SealReport,
          con: Any, log: Log) -> None:
    state = day_state(root, date, venues)
    todo = sorted(set(state.late) | set(state.unsealed))
    seal_id = new_session_id()
    written: dict[tuple[str, str], list[sealio.Written]] = {}
    digests: dict[tuple[str, str], sealio.Digest] = {}
    if todo:
        log("seal_started", {"date": date, "partitions": len(todo)})
    try:
        for table, venue in todo:
            files = state.partitions[(table, venue)]
            before = sealio.digest(con, files, table)
            base = files[0].parent
            out = sealio.rewrite(con, files, table,
                                 lambda k, b=base: b / f"sealed-{seal_id}-{k:03d}.parquet",
                                 row_group_rows=opts.row_group_rows, file_rows=opts.file_rows)
            written[(table, venue)] = out
            after = sealio.digest(con, [w.path for w in out], table)
            if after.text != before.text:
                report.problems.append(f"{date} {table} {venue}: sealed rows differ from the "
                                       f"old rows ({after.text} != {before.text})")
            digests[(table, venue)] = after
        _check_journal(root, date, con, state, written, report)
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
            entry = state.manifest["tables"][table][venue] if state.manifest else {}
            report.partitions.append(PartitionReport(table, venue, len(files), len(files),
                                                     int(entry.get("rows", 0)),
                                                     str(entry.get("digest", "")), False))
    if not todo:
        report.manifest = manifest_path(root, date) if state.manifest else None
        return
    manifest = _manifest(root, date, seal_id, state, written, digests, con, opts)
    _commit(root, date, manifest, state, written, log)
    report.manifest = manifest_path(root, date)
    log("seal_committed", {"date": date, "partitions": len(todo),
                           "rows": sum(d.rows for d in digests.values())})


class _Abort(Exception):
    pass


def _check_journal(root: Path, date: str, con: Any, state: DayState,
                   written: dict[tuple[str, str], list[sealio.Written]],
                   report: SealReport) -> None:
    """Each finished run's records of ``date`` equal its sessions' raw rows of ``date``."""
    here = {v for _, v in state.partitions}
    runs = [r for r in done_runs(root) if date in r.dates and r.venue in here]
    for venue in sorted({r.venue for r in runs}):
        if ("raw", venue) in written:
            files = [w.path for w in written[("raw", venue)]]
        else:
            files = state.partitions.get(("raw", venue), [])
        counts = dict(sealio.scalar_rows(con, files, "SELECT session, count(*) FROM {files} "
                                         "GROUP BY session"))
        for run in (r for r in runs if r.venue == venue):
            report.runs_checked += 1
            for session, per_date in run.sessions.items():
                want, have = per_date.get(date, 0), counts.get(session, 0)
                if want != have:
                    report.problems.append(
                        f"{date} raw {venue}: session {session} of journal run "
                        f"{run.path.name} has {want} records that day, raw has {have} rows")


def _manifest(root: Path, date: str, seal_id: str, state: DayState,
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
            "files": [{"path": _rel(root, w.final), "rows": w.rows, "row_groups": w.row_groups,
                       "bytes": w.bytes, "sha256": w.sha256} for w in out]}
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
            "sealed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "row_group_rows": opts.row_group_rows,
            "tables": {t: v for t, v in tables.items() if v}, "gaps": gaps}


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="microseconds")


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


def _trim(root: Path, con: Any, report: SealReport, log: Log) -> None:
    """Remove finished runs whose every date is sealed and checked against raw."""
    cache: dict[tuple[str, str], dict[str, int]] = {}
    states: dict[str, DayState] = {}

    def raw_counts(date: str, venue: str) -> dict[str, int] | None:
        if date not in states:
            states[date] = day_state(root, date)
        st = states[date]
        if not st.sealed or ("raw", venue) not in st.partitions:
            return None
        if (date, venue) not in cache:
            cache[(date, venue)] = dict(sealio.scalar_rows(
                con, st.partitions[("raw", venue)],
                "SELECT session, count(*) FROM {files} GROUP BY session"))
        return cache[(date, venue)]

    for run in done_runs(root):
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
