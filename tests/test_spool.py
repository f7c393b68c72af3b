"""Parquet files written straight to their temp files (``storage.spool``), and given back
whole in memory when a write or a publish fails (issue 8: a batch's files are not
resident; durability unchanged)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage.spool
from schemas.errors import StoreError
from storage.spool import Spool
from storage.writer import StoreWriter, recover_publish, to_arrow, writer_options
from tests.test_writer import DAY0, read_trades, trade

ROWS = [(DAY0 + i, "s1", i, "in", "text", b'{"x":%d}' % i * (1 + i % 7), None)
        for i in range(20_000)]


def _write(sink: Any) -> None:
    table = to_arrow("raw", ROWS)
    w = pq.ParquetWriter(sink, table.schema, **writer_options(table.schema))
    w.write_table(table, row_group_size=8192)
    w.close()


def _expected() -> bytes:
    buf = pa.BufferOutputStream()
    _write(buf)
    return buf.getvalue().to_pybytes()


def test_a_file_on_disk_holds_nothing_in_memory(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "d" / ".x.tmp")
    _write(spool)
    assert spool.on_disk and spool.pieces == []
    assert spool.finish() == tmp_path / "d" / ".x.tmp"
    assert (tmp_path / "d" / ".x.tmp").read_bytes() == _expected() == spool.getvalue()


def test_disk_full_mid_file_goes_on_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = os.write, {"n": 0}

    def write(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            return real(fd, bytes(memoryview(data)[:3]))       # a short write, then full
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(storage.spool.os, "write", write)
    spool = Spool(tmp_path / ".x.tmp")
    _write(spool)
    assert not spool.on_disk and not spool.lost
    assert not (tmp_path / ".x.tmp").exists()
    assert spool.getvalue() == _expected()


def _writer(tmp_path: Path) -> StoreWriter:
    w = StoreWriter(tmp_path, "alltick", "run1", tmp_path / "journal" / "run1")
    for i in range(3):
        w.add_event(trade(DAY0 + i, i))
    w.mark(3)
    return w


def test_a_failed_fsync_gives_the_batch_back_whole_and_it_is_published_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path)
    batch = w.take()
    [rows] = batch.rows.values()
    rows.files()
    assert rows.done[0].on_disk
    real = os.fsync
    monkeypatch.setattr(storage.spool.os, "fsync", lambda fd: (_ for _ in ()).throw(
        OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        w.publish(batch)
    monkeypatch.setattr(storage.spool.os, "fsync", real)
    assert not batch.intent and not list(tmp_path.rglob("*.tmp"))
    assert not list(tmp_path.rglob("*.parquet"))
    assert not rows.done[0].on_disk and rows.done[0].pieces        # held in memory now
    w.restore(batch)
    w.add_event(trade(DAY0 + 3, 3))
    w.mark(4)
    w.publish(w.take())
    assert [r["frame"] for r in read_trades(tmp_path)] == [0, 1, 2, 3]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_file_read_back_wrong_is_never_published(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    w = _writer(tmp_path)
    batch = w.take()
    [rows] = batch.rows.values()
    rows.files()
    tmp = rows.done[0].path
    assert tmp is not None

    def fsync(fd: int) -> None:         # the kernel dropped the pages after the error
        with open(tmp, "r+b") as fh:
            fh.write(b"\0" * 16)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(storage.spool.os, "fsync", fsync)
    with pytest.raises(OSError):
        w.publish(batch)
    monkeypatch.undo()
    assert rows.done[0].lost and not list(tmp_path.rglob("*.tmp"))
    w.restore(batch)
    with pytest.raises(StoreError, match="recovered from the journal"):
        w.publish(w.take())
    state = json.loads((tmp_path / "journal" / "run1" / "checkpoint.json").read_text()) \
        if (tmp_path / "journal" / "run1" / "checkpoint.json").exists() else {}
    assert state.get("records", 0) == 0 and not list(tmp_path.rglob("*.parquet"))


def test_spooled_temps_of_a_run_that_died_are_removed_by_recovery(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    [rows] = w._batch.rows.values()
    rows.files()                        # written, never published: then the process died
    assert len(list(tmp_path.rglob(".run1-s*.tmp"))) == 1
    assert recover_publish(tmp_path, "alltick", "run1", tmp_path / "journal" / "run1") == 0
    assert not list(tmp_path.rglob("*.tmp"))
