"""What a finished journal run holds, per session and UTC date; and removing it.

A run that is ``done`` never changes again, so its summary is computed once
(reading every record) and kept beside it as ``summary.json``::

    {"venue": "alltick", "feed": "alltick", "records": 1234, "orphans": 0,
     "sessions": {"<session>": {"2024-03-10": 800, "2024-03-11": 434}}}

``orphans`` are records before any ``open`` (no session: never in ``raw``).

Removal (``remove_run``) is crash-safe: the run directory is first renamed to
``.trash-<run>`` (so no reader takes it for a run any more), then its segments
are deleted, then the other files, ``done`` last; a removal killed half-way
leaves a trash directory that still says ``done`` (recovery skips it) and that
``sweep_trash`` finishes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.atomic import read_json, write_json
from storage.journal import iter_journal, read_header
from storage.layout import date_of

DONE = "done"
SUMMARY = "summary.json"
TRASH = ".trash-"


@dataclass(frozen=True)
class RunSummary:
    path: Path
    venue: str
    feed: str
    records: int
    orphans: int
    sessions: dict[str, dict[str, int]]

    @property
    def dates(self) -> set[str]:
        return {d for per in self.sessions.values() for d in per}

    def records_on(self, date: str) -> int:
        return sum(per.get(date, 0) for per in self.sessions.values())


def _summarise(run_dir: Path) -> dict[str, Any]:
    header = read_header(run_dir)
    sessions: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    records = orphans = 0
    for rec in iter_journal(run_dir):
        records += 1
        if rec.kind == "open":
            note = json.loads(rec.note or "{}")
            current = sessions.setdefault(str(note.get("session", "")), {})
        if current is None:
            orphans += 1
            continue
        d = date_of(rec.ts_recv)
        current[d] = current.get(d, 0) + 1
        if rec.kind == "close":
            current = None
    return {"venue": header.get("venue", ""), "feed": header.get("feed", ""),
            "records": records, "orphans": orphans, "sessions": sessions}


def done_runs(root: Path) -> list[RunSummary]:
    """Summaries of every finished run under ``ROOT/journal`` (computed once, then cached)."""
    out: list[RunSummary] = []
    base = root / "journal"
    if not base.is_dir():
        return out
    for run_dir in sorted(base.glob("*/*")):
        if not run_dir.is_dir() or run_dir.name.startswith(TRASH) or not (run_dir / DONE).exists():
            continue
        data = read_json(run_dir / SUMMARY)
        if data is None:
            try:
                data = _summarise(run_dir)
            except Exception:  # noqa: BLE001 - a run with no readable header holds nothing
                data = {"venue": "", "feed": run_dir.parent.name, "records": 0, "orphans": 0,
                        "sessions": {}}
            write_json(run_dir / SUMMARY, data)
        out.append(RunSummary(run_dir, data["venue"], data["feed"], int(data["records"]),
                              int(data["orphans"]), data["sessions"]))
    return out


def unfinished_runs(root: Path, feed: str | None = None) -> list[Path]:
    """Run directories not yet ``done`` (live, or died and not yet recovered)."""
    base = root / "journal"
    pattern = f"{feed}/*" if feed else "*/*"
    return sorted(p for p in base.glob(pattern) if p.is_dir() and not p.name.startswith(TRASH)
                  and not (p / DONE).exists()) if base.is_dir() else []


def _remove_tree(d: Path) -> None:
    files = sorted((p for p in d.iterdir() if p.is_file()),
                   key=lambda p: (p.name == DONE, not p.name.endswith(".tjr"), p.name))
    for p in files:
        p.unlink()
    for p in d.iterdir():        # nothing else is expected; be thorough anyway
        if p.is_dir():
            _remove_tree(p)
    d.rmdir()


def remove_run(run_dir: Path) -> None:
    """Delete a finished run directory (see the module docstring for the order)."""
    trash = run_dir.with_name(TRASH + run_dir.name)
    os.replace(run_dir, trash)
    _remove_tree(trash)


def sweep_trash(root: Path) -> None:
    """Finish removals a crash interrupted."""
    for d in (root / "journal").glob(f"*/{TRASH}*"):
        if d.is_dir():
            _remove_tree(d)
