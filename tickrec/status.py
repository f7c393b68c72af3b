"""``tickrec status``: the daemon's last status snapshot and the seal state of each day.

For an ``s3://`` root the snapshot is read from the local journal directory
(where that host's daemon writes it) and the days from the bucket."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from recorder.health import status_file
from storage.atomic import read_json
from storage.compact import day_state, list_store, store_dates
from storage.fs import StoreRoot, as_store
from storage.liveset import Manifests

SHOW_DAYS = 14


def days_report(root: Path | StoreRoot) -> list[dict[str, Any]]:
    """The last ``SHOW_DAYS`` days of the store: sealed, unsealed, late files, interrupted."""
    store = as_store(root)
    listing = list_store(store)
    dates = store_dates(store, listing)[-SHOW_DAYS:]
    manifests = Manifests(store) if store.s3 else None
    if manifests is not None:
        manifests.prefetch(dates)
    out = []
    for date in dates:
        st = day_state(store, date, listing=listing, manifests=manifests)
        late = sum(len(v) for v in st.late.values())
        if st.pending_intent:
            what = "seal interrupted (run `tickrec compact`)"
        elif st.sealed:
            what = "sealed"
        elif st.manifest is not None and late:
            what = f"sealed, {late} file(s) newer than the seal (a re-seal merges them)"
        elif st.manifest is not None:
            what = "partly sealed"
        else:
            what = "not sealed"
        if st.garbage:
            what += f" ({len(st.garbage)} replaced file(s) not deleted yet)"
        out.append({"date": date, "state": what, "late_files": late,
                    "garbage_files": len(st.garbage),
                    "sealed_at": (st.manifest or {}).get("sealed_at")})
    return out


def _age(snap: dict[str, Any]) -> float:
    return (time.time_ns() - int(snap.get("wall_ns", 0))) / 1e9


def status_text(root: Path | StoreRoot, fmt: str = "table") -> str:
    snap = read_json(status_file(root))
    days = days_report(root)
    if fmt == "json":
        return json.dumps({"daemon": snap, "days": days}, ensure_ascii=False, indent=1)
    lines: list[str] = []
    if snap is None:
        lines.append(f"no daemon status in {status_file(root)} (is `tickrec daemon` running?)")
    else:
        age = _age(snap)
        running = age < 3 * float(snap.get("status_interval", 5)) + 5
        lines.append(f"daemon pid {snap.get('pid')} since {snap.get('started')}; "
                     f"status {age:.0f}s old" + ("" if running else " (NOT RUNNING?)"))
        if snap.get("metrics"):
            lines.append(f"metrics: {snap['metrics']}")
        head = ("feed", "venue", "state", "frames/min", "rows/min", "last frame", "reconn",
                "gaps today", "unpublished", "unfinished runs")
        rows = [head]
        for name, f in snap.get("feeds", {}).items():
            age_s = f.get("last_frame_age_s")
            rows.append((name, f["venue"], f["state"] + (" STALE" if f.get("stale") else ""),
                         f"{f['frames_per_min']:.0f}", f"{f['rows_per_min']:.0f}",
                         "-" if age_s is None else f"{age_s:.1f}s ago", str(f["reconnects"]),
                         str(f["gaps_today"]), str(f["unpublished_records"]),
                         str(f["unfinished_runs"])))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for name, f in snap.get("feeds", {}).items():
            if f.get("reason"):
                lines.append(f"  {name}: {f['reason']}")
        seal = snap.get("seal", {})
        last_ok = {True: "ok", False: "FAILED"}.get(seal.get("last_ok"), "-")
        lines.append(f"seal: last {seal.get('last_date') or '-'} ({last_ok})"
                     f", failures {seal.get('failures', 0)}, next {seal.get('next_at') or '-'}"
                     + (f", sealing {seal['running']} now" if seal.get("running") else ""))
        lines += [f"  seal problem: {p}" for p in seal.get("problems", [])]
    lines.append("days:" if days else "days: none in the store")
    lines += [f"  {d['date']}  {d['state']}" for d in days]
    return "\n".join(lines)
