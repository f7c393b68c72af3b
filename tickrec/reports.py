"""Reports over the store: the gap report."""

from __future__ import annotations

from pathlib import Path

from storage.catalog import format_table, run_query
from storage.layout import parse_date

# What a venue's feed lets us detect: stated in the report so an empty
# "sequence" column is not read as "nothing was lost".
DETECTABLE = {
    "alltick": "seq per symbol: loss counted when trades and depth are both subscribed",
    "finazon": "no sequence numbers: gaps are disconnects and staleness only",
    "noren": "no sequence numbers: gaps are disconnects and staleness only",
    "hedgetech": "no sequence numbers: gaps are disconnects and staleness only",
    "futu": ("sequence unique but not contiguous: loss inside a connection cannot be counted; "
             "a repeated tick is a duplicate row (stored once); each disconnect says in detail "
             "how many ticks OpenD's cache/refill push filled in (missing 0: fully refilled)"),
}


def gap_report(root: Path, venue: str | None, date: str | None, fmt: str = "table") -> str:
    where = ["true"]
    if venue:
        where.append(f"venue = '{venue}'")
    if date:
        where.append(f"date = DATE '{parse_date(date)}'")
    cond = " AND ".join(where)
    summary = run_query(root, f"""
        SELECT venue, date, symbol, kind, count(*) AS gaps, sum(missing) AS missing,
               round(sum(epoch_ns(ts_end) - epoch_ns(ts_start)) / 1e9, 3) AS seconds
        FROM gaps WHERE {cond}
        GROUP BY ALL ORDER BY venue, date, symbol, kind""")
    out = [format_table(summary, fmt)]
    if fmt == "table":
        venues = [venue] if venue else sorted(set(summary.column("venue").to_pylist()))
        for v in venues:
            out.append(f"{v}: {DETECTABLE.get(v, '')}")
    return "\n".join(out)
