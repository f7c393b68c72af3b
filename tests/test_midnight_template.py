"""The captures across a past midnight that the seal tests start from hold trades and
book on both days however slow the machine (``record_across_midnight``): a capture
split by elapsed time (``RecvClock(midnight - 1.2 s)``) once held no trades on the
first day under load, and a seal test failed with ``KeyError: 'trades'`` reading the
day's manifest."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recorder.capture import Capture
from storage.compact import SealOptions, manifest_path, seal_day
from tests.helpers import read_table, record_across_midnight

D1 = "2024-03-10"
MIDNIGHT = int(datetime(2024, 3, 11, tzinfo=UTC).timestamp()) * 1_000_000_000


def test_a_capture_stalled_before_its_first_push_still_has_every_table_on_both_days(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Capture.batch_in
    stalled: list[float] = []

    def stall_once(self: Capture, batch: Any) -> list[Any]:
        if not stalled:          # a loaded machine: the process gets no CPU for 1.5 s
            stalled.append(1.5)
            time.sleep(1.5)
        return real(self, batch)

    monkeypatch.setattr(Capture, "batch_in", stall_once)
    asyncio.run(record_across_midnight(tmp_path, ["AAPL.US", "700.HK"], MIDNIGHT, rows=60,
                                       flush_rows=300))
    assert stalled
    for table in ("trades", "book"):
        times = [r["ts_recv"] for r in read_table(tmp_path, table)]
        before = sum(t < MIDNIGHT for t in times)
        assert before >= 60 and len(times) - before >= 60, (table, before, len(times))
    assert seal_day(tmp_path, D1, options=SealOptions(row_group_rows=256, file_rows=1024)).ok
    m = json.loads(manifest_path(tmp_path, D1).read_text())
    assert all(m["tables"][t]["alltick"]["rows"] > 0 for t in ("raw", "trades", "book", "sessions"))
