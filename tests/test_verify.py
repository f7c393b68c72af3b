"""``tickrec verify`` re-derives the store day by day: sessions that span
midnight keep their decoder, and a difference is reported with its day."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.blast import frames
from recorder.capture import Capture
from tickrec.verify import verify

MIDNIGHT = 1_767_312_000 * 10**9          # 2026-01-02T00:00Z


class StepClock:
    """Receive times 1 ms apart, starting 40 ms before midnight."""

    def __init__(self) -> None:
        self.last = MIDNIGHT - 40_000_000

    def now(self) -> int:
        self.last += 1_000_000
        return self.last


def record_across_midnight(root: Path) -> None:
    cap = Capture(root, "alltick", clock=StepClock())        # type: ignore[arg-type]
    cap.open_session("ws://test", ["AAPL.US", "700.HK"])
    for payload in frames(80, ["AAPL.US", "700.HK"]):
        cap.frame_in(payload.encode())
    cap.close()


def test_a_session_across_midnight_is_re_derived_day_by_day(tmp_path: Path) -> None:
    record_across_midnight(tmp_path)
    days = sorted(p.name for p in (tmp_path / "raw" / "venue=alltick").iterdir())
    assert days == ["date=2026-01-01", "date=2026-01-02"]
    report = verify(tmp_path)
    assert report.ok, report.problems
    assert report.sessions == 1 and report.rows_checked == 80      # one row per frame


def test_a_changed_row_is_reported_with_its_day(tmp_path: Path) -> None:
    record_across_midnight(tmp_path)
    [path] = (tmp_path / "trades" / "venue=alltick" / "date=2026-01-02").glob("*.parquet")
    t = pq.read_table(path)
    price = t.column("price")
    t = t.set_column(t.schema.get_field_index("price"), t.schema.field("price"),
                     pc.add(price, pa.scalar(0.5)))
    pq.write_table(t, path)
    report = verify(tmp_path)
    assert len(report.problems) == 1
    assert report.problems[0].startswith("alltick trades on 2026-01-02: ")
    assert "first difference at row 0" in report.problems[0]
