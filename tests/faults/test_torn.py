"""Torn files after a crash, through recovery (``recorder.capture.recover``) and through a
Recorder restart: a journal cut at every byte offset of its last block, a Parquet temp cut
anywhere, a publish interrupted after its intent. Recovery keeps every whole record, says
what it cut, never refuses to start, and leaves each record in the store exactly once."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

import storage.writer
from recorder.capture import Capture, recover
from schemas.venues.alltick import AllTickClient, encode_trade
from storage.atomic import write_parquet_temp
from storage.journal import list_segments, read_journal
from storage.layout import partition_dir
from tests.faults.support import SOAK, running, scaled, wait_for
from tests.helpers import read_table
from tickrec.verify import verify

pytestmark = pytest.mark.timeout(scaled(90, 1800))
SYMBOLS = ["AAPL.US", "700.HK"]


class Crash(BaseException):
    """The process dies here (kill -9): nothing after it runs, no handler sees it."""


def _trade(i: int) -> str:
    return encode_trade(SYMBOLS[i % 2], i // 2 + 1, 1_700_000_000_000 + i, 10.0 + i % 7, 1.0, 1)


def die(cap: Capture) -> None:
    """Leave ``cap`` as a kill -9 would: files closed by the OS, no ``done``, no publish."""
    assert cap.journal._file is not None
    cap.journal._file.close()
    cap.journal._file = None
    cap._lock.close()


def start_run(root: Path) -> tuple[Capture, int]:
    """A capture with both subscriptions acknowledged; returns it and the next trade index."""
    client = AllTickClient(SYMBOLS)
    cap = Capture(root, "alltick")
    cap.open_session("ws://127.0.0.1/quote?token=***", SYMBOLS, client.decoder_options())
    for out in client.on_open():
        cap.frame_out(out.stored, out.kind)
    for cmd in (22003, 22005):
        cap.frame_in(f'{{"cmd_id":{cmd},"seq_id":1,"ret":200,"msg":"ok","data":{{}}}}')
    return cap, 0


def check_sealed(root: Path, expect_records: int) -> list[dict[str, Any]]:
    """The run is sealed, every journal record is in ``raw`` once, the store verifies."""
    [run_dir] = [p for p in (root / "journal" / "alltick").iterdir() if p.is_dir()]
    assert (run_dir / "done").exists()
    records, damage = read_journal(run_dir)
    assert not damage                              # the torn tail was cut off
    raw = read_table(root, "raw")
    assert len(raw) == len(records) == expect_records
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw)
    assert not list(root.rglob("*.tmp"))
    report = verify(root)
    assert report.ok, report.problems
    return raw


@pytest.fixture(scope="module")
def torn_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dead run: four whole blocks (the first two published), then a last block."""
    root = tmp_path_factory.mktemp("template")
    cap, i = start_run(root)
    for block in range(4):
        for _ in range(10):
            cap.frame_in(_trade(i))
            i += 1
        cap.flush_journal()
        if block == 1:
            cap.publish(cap.take())
    seg = list_segments(cap.dir)[-1]
    start = seg.stat().st_size
    if SOAK:                                        # the last block: 12 trades
        for _ in range(12):
            cap.frame_in(_trade(i))
            i += 1
    else:                                           # one heartbeat reply (fewer offsets)
        cap.frame_in('{"cmd_id":22001,"seq_id":9,"ret":200}')
    cap.flush_journal()
    whole = cap.records - (12 if SOAK else 1)
    die(cap)
    return {"root": root, "segment": seg.relative_to(root), "start": start,
            "end": seg.stat().st_size, "whole": whole}


def test_journal_torn_at_every_offset_of_its_last_block(torn_template: dict[str, Any],
                                                        tmp_path: Path) -> None:
    t = torn_template
    for cut in range(t["start"], t["end"]):
        root = tmp_path / f"cut{cut}"
        shutil.copytree(t["root"], root)
        os.truncate(root / t["segment"], cut)
        report = recover(root, "alltick")           # never raises
        lines = report.lines()
        assert len(report.runs) == 1 and any("recovered run" in x for x in lines)
        if cut > t["start"]:                        # it says what it cut, and where
            [damage] = report.damage
            assert f"at byte {t['start']}: cut {cut - t['start']} bytes" in damage
        else:
            assert not report.damage
        # every whole record, plus the close that recovery writes for the dead session
        raw = check_sealed(root, t["whole"] + 1)
        assert raw[-1]["kind"] == "close" and "recorder died" in raw[-1]["note"]
        shutil.rmtree(root)


@pytest.mark.parametrize("where", ["block header", "block body"])
async def test_a_recorder_restarts_on_a_torn_journal(torn_template: dict[str, Any],
                                                     tmp_path: Path, where: str) -> None:
    t = torn_template
    root = tmp_path / "store"
    shutil.copytree(t["root"], root)
    cut = t["start"] + 5 if where == "block header" else t["end"] - 1
    os.truncate(root / t["segment"], cut)
    async with running(root, SYMBOLS, rate=300, steps=300) as run:
        await wait_for(run.sim.done.is_set, 15)
    lines = run.rec.recovery_lines
    assert any(line.startswith("recovered run") for line in lines)
    assert any(f"cut {cut - t['start']} bytes" in line for line in lines), lines
    report = verify(root)
    assert report.ok, report.problems
    runs = sorted(p for p in (root / "journal" / "alltick").iterdir() if p.is_dir())
    assert len(runs) == 2 and all((r / "done").exists() for r in runs)
    raw = read_table(root, "raw")
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw)
    total = sum(len(read_journal(r)[0]) for r in runs)
    assert len(raw) == total
    # the time the recorder was dead is a disconnect gap for both symbols
    disc = [g for g in read_table(root, "gaps") if g["kind"] == "disconnect"]
    assert sorted(g["symbol"] for g in disc) == sorted(SYMBOLS)


def _offsets(size: int) -> list[int]:
    if SOAK:
        return list(range(size))
    rng = random.Random(size)
    return sorted({0, 1, 3, 4, size // 2, size - 8, size - 4, size - 1}
                  | {rng.randrange(size) for _ in range(6)})


def test_parquet_temps_torn_anywhere_before_the_intent(tmp_path: Path) -> None:
    """Killed while writing the temps: recovery deletes them and re-derives the rows from
    the journal; nothing is lost and nothing is stored twice."""
    src = tmp_path / "src"
    cap, i = start_run(src)
    for _ in range(30):
        cap.frame_in(_trade(i))
        i += 1
    cap.publish(cap.take())
    for _ in range(30):
        cap.frame_in(_trade(i))
        i += 1
    batch = cap.take()                              # flushes the journal: the records are safe
    temps = []
    for n, ((table, date), rows) in enumerate(batch.tables()):
        final = partition_dir(src, table, "alltick", date) / f"{cap.run}-{100 + n:06d}.parquet"
        temps.append(write_parquet_temp(rows, final))
    raw_temp = next(p for p in temps if "/raw/" in str(p))
    whole = raw_temp.read_bytes()
    records = cap.records
    die(cap)
    for cut in _offsets(len(whole)):
        root = tmp_path / f"cut{cut}"
        shutil.copytree(src, root)
        os.truncate(root / raw_temp.relative_to(src), cut)
        report = recover(root, "alltick")
        assert len(report.runs) == 1 and not report.damage
        check_sealed(root, records + 1)
        shutil.rmtree(root)


def test_a_publish_killed_after_its_intent_rolls_forward(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cap, i = start_run(tmp_path)
    for _ in range(30):
        cap.frame_in(_trade(i))
        i += 1
    real_replace, calls = os.replace, []

    def replace(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:                         # one file renamed, then the process dies
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(storage.writer.os, "replace", replace)
    with pytest.raises(Crash):
        cap.publish(cap.take())
    monkeypatch.setattr(storage.writer.os, "replace", real_replace)
    records = cap.records
    die(cap)
    assert list(tmp_path.rglob("*.tmp"))            # whole temps, the intent on record
    recover(tmp_path, "alltick")
    check_sealed(tmp_path, records + 1)
