from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import JournalCorrupt, StoreError
from schemas.events import RawRecord
from storage.journal import (
    DIRECTIONS,
    KINDS,
    MAX_NOTE,
    JournalDamage,
    JournalWriter,
    iter_journal,
    list_segments,
    read_header,
    read_journal,
)

ROOT = Path(__file__).resolve().parents[1]
HEADER = {"venue": "alltick", "session": "s-1", "host": "h\u00e9"}
INT64 = st.integers(-(2**63), 2**63 - 1)

records_st = st.builds(
    RawRecord,
    ts_recv=INT64,
    frame=INT64,
    direction=st.sampled_from(DIRECTIONS),
    kind=st.sampled_from(KINDS),
    payload=st.binary(max_size=3000),
    note=st.none() | st.text(max_size=40),
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tickrec-journal-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def rec(i: int, size: int = 40) -> RawRecord:
    return RawRecord(1_700_000_000_000_000_000 + i, i, "in", "text",
                     (b"%08d" % i) * (size // 8), note=None if i % 3 else f"n{i}")


def write_blocks(d: Path, blocks: list[list[RawRecord]], **kw: int) -> list[int]:
    """Write one block per list; return the segment size after each flush (block ends)."""
    ends = []
    with JournalWriter(d, HEADER, **kw) as w:
        for block in blocks:
            for r in block:
                w.append(r)
            w.flush()
            ends.append(w.segment.stat().st_size)
    return ends


# 1. round trip ------------------------------------------------------------------

@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(recs=st.lists(records_st, max_size=40), cuts=st.sets(st.integers(0, 40)),
       segment_bytes=st.sampled_from([1, 300, 4096, 64 << 20]))
def test_round_trip(scratch: Path, recs: list[RawRecord], cuts: set[int],
                    segment_bytes: int) -> None:
    d = Path(tempfile.mkdtemp(dir=scratch))
    w = JournalWriter(d / "j", HEADER, segment_bytes=segment_bytes, level=1)
    for i, r in enumerate(recs):
        if i in cuts:
            w.flush()
            assert w.buffered == 0 and w.buffered_bytes == 0
        w.append(r)
    assert w.buffered + w.records_written == len(recs)
    w.close()
    w.close()  # idempotent
    assert w.records_written == len(recs)
    got, damage = read_journal(d / "j")
    assert damage == []
    assert got == recs
    assert list(iter_journal(d / "j")) == recs
    if segment_bytes == 1:  # every block in its own segment, no empty trailing one
        assert len(list_segments(d / "j")) == max(1, len({0, *cuts} & set(range(len(recs)))))


def test_long_note_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    with JournalWriter(tmp_path, HEADER) as w:
        w.append(RawRecord(1, 1, "event", "error", b"", note="\u00e9" * 40000))
        w.append(RawRecord(2, 2, "out", "close", b"x", note=""))
    (a, b), _ = read_journal(tmp_path)
    assert a.note is not None and len(a.note.encode()) <= MAX_NOTE
    assert a.note == "\u00e9" * (MAX_NOTE // 2)
    assert b.note == ""


@pytest.mark.parametrize("bad", [
    RawRecord(1, 1, "sideways", "text", b""),
    RawRecord(1, 1, "in", "pdf", b""),
    RawRecord(2**63, 1, "in", "text", b""),
])
def test_unjournalable_record_is_rejected_and_buffer_untouched(tmp_path: Path,
                                                               bad: RawRecord) -> None:
    with JournalWriter(tmp_path, HEADER) as w:
        w.append(rec(0))
        size = w.buffered_bytes
        with pytest.raises(ValueError):
            w.append(bad)
        with pytest.raises(TypeError):
            w.append(RawRecord(1, 1, "in", "text", "not bytes"))  # type: ignore[arg-type]
        assert (w.buffered, w.buffered_bytes) == (1, size)
    assert read_journal(tmp_path) == ([rec(0)], [])
    with pytest.raises(StoreError):
        w.append(rec(1))


# 2. torn tail -------------------------------------------------------------------

def test_torn_tail_at_every_offset_of_the_last_block(tmp_path: Path) -> None:
    blocks = [[rec(i) for i in range(b * 5, b * 5 + 5)] for b in range(4)]
    src = tmp_path / "src"
    ends = write_blocks(src, blocks)
    seg = list_segments(src)[0]
    kept = [r for b in blocks[:-1] for r in b]
    for cut in range(ends[-2] + 1, ends[-1]):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        os.truncate(d / seg.name, cut)
        got, damage = read_journal(d)
        assert got == kept
        assert len(damage) == 1
        assert damage[0] == JournalDamage(d / seg.name, ends[-2], cut - ends[-2], damage[0].reason)
        assert damage[0].reason in ("truncated block header", "truncated block")
        got, damage = read_journal(d, repair=True)
        assert got == kept and len(damage) == 1
        assert (d / seg.name).stat().st_size == ends[-2]
        assert read_journal(d) == (kept, [])
        with JournalWriter(d, HEADER) as w:
            assert w.segment.name == "000002.tjr"
            w.append(rec(99))
        assert read_journal(d) == (kept + [rec(99)], [])
        shutil.rmtree(d)


def test_torn_tail_boundary_reports_nothing(tmp_path: Path) -> None:
    ends = write_blocks(tmp_path, [[rec(0)], [rec(1)]])
    os.truncate(list_segments(tmp_path)[0], ends[0])
    assert read_journal(tmp_path) == ([rec(0)], [])


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_torn_tail_across_rolled_segments(scratch: Path, data: st.DataObject) -> None:
    """Cut the last of several rolled segments anywhere, boundaries and header included."""
    d = Path(tempfile.mkdtemp(dir=scratch))
    frames: list[tuple[str, int, list[RawRecord]]] = []  # (segment, block end, records)
    with JournalWriter(d, HEADER, segment_bytes=250) as w:
        for i in range(6):
            block = [rec(i * 3 + j, 100) for j in range(3)]
            for r in block:
                w.append(r)
            w.flush()
            frames.append((w.segment.name, w.segment.stat().st_size, block))
    segs = list_segments(d)
    last = segs[-1]
    assert len(segs) > 1 and frames[-1][0] == last.name
    raw = last.read_bytes()
    head_end = 9 + int.from_bytes(raw[5:9], "little")
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    os.truncate(last, cut)
    want = [r for seg, end, b in frames if seg != last.name or end <= cut for r in b]
    starts = [head_end] + [end for seg, end, _ in frames if seg == last.name and end <= cut]
    got, damage = read_journal(d, repair=True)
    assert got == want
    if cut in starts:  # exactly on a boundary: a clean, shorter file
        assert damage == []
    elif cut < head_end:  # killed while creating the segment: it goes away
        assert damage == [JournalDamage(last, 0, cut, "torn segment header")]
        assert not last.exists()
    else:
        assert damage == [JournalDamage(last, starts[-1], cut - starts[-1], damage[0].reason)]
        assert last.stat().st_size == starts[-1]
    assert read_journal(d) == (want, [])
    with JournalWriter(d, HEADER) as w:
        w.append(rec(1000))
    assert read_journal(d) == (want + [rec(1000)], [])


def test_segment_killed_at_creation_is_reported_then_removed(tmp_path: Path) -> None:
    write_blocks(tmp_path, [[rec(0)]])
    (tmp_path / "000002.tjr").write_bytes(b"")
    (tmp_path / "000003.tjr").write_bytes(b"TKRJ\x01\xff\x00\x00\x00{")
    got, damage = read_journal(tmp_path, repair=True)
    assert got == [rec(0)]
    assert [(x.segment.name, x.offset, x.bytes_cut, x.reason) for x in damage] == [
        ("000002.tjr", 0, 0, "torn segment header"),
        ("000003.tjr", 0, 10, "torn segment header")]
    assert [p.name for p in list_segments(tmp_path)] == ["000001.tjr"]


def test_repair_leaves_a_live_writers_segment_alone(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, HEADER)
    w.append(rec(0))
    w.flush()
    size = w.segment.stat().st_size
    with open(w.segment, "ab") as f:
        f.write(b"TKB1\x00")  # what a reader may see of a block being written
    _, damage = read_journal(tmp_path, repair=True)
    assert len(damage) == 1 and w.segment.stat().st_size == size + 5
    w.close()


# 3. corruption ------------------------------------------------------------------

@pytest.mark.parametrize("where,reason", [(20, "crc mismatch"), (5, "truncated block"),
                                          (0, "bad block magic")])
def test_corrupt_middle_block_is_skipped_and_reading_resyncs(tmp_path: Path, where: int,
                                                             reason: str) -> None:
    """Choice: one bad block costs that block only; the next valid block is found by magic."""
    blocks = [[rec(i) for i in range(b * 4, b * 4 + 4)] for b in range(3)]
    ends = write_blocks(tmp_path, blocks)
    seg = list_segments(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[ends[0] + where] ^= 0xFF  # 20: compressed bytes; 5: length field; 0: magic
    seg.write_bytes(bytes(raw))
    want = blocks[0] + blocks[2]
    got, damage = read_journal(tmp_path, repair=True)
    assert got == want
    assert damage == [JournalDamage(seg, ends[0], ends[1] - ends[0], reason)]
    assert seg.stat().st_size == ends[2]  # mid-file damage is not repaired away
    assert read_journal(tmp_path) == (want, damage)
    assert list(iter_journal(tmp_path)) == want


def test_corrupt_last_block_is_a_tail(tmp_path: Path) -> None:
    ends = write_blocks(tmp_path, [[rec(0)], [rec(1)]])
    seg = list_segments(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[-1] ^= 0x01
    seg.write_bytes(bytes(raw))
    got, damage = read_journal(tmp_path, repair=True)
    assert got == [rec(0)] and damage[0].reason == "crc mismatch"
    assert seg.stat().st_size == ends[0]


def test_mangled_segment_header_keeps_the_blocks(tmp_path: Path) -> None:
    write_blocks(tmp_path, [[rec(0)], [rec(1)]])
    seg = list_segments(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[12] ^= 0xFF  # inside the JSON
    seg.write_bytes(bytes(raw))
    got, damage = read_journal(tmp_path, repair=True)
    assert got == [rec(0), rec(1)]
    assert len(damage) == 1 and damage[0].offset == 0
    assert damage[0].reason.startswith("bad segment header json")
    with pytest.raises(JournalCorrupt):
        read_header(tmp_path)


def test_unknown_format_version_is_reported_whole_and_left_alone(tmp_path: Path) -> None:
    write_blocks(tmp_path, [[rec(0)]])
    seg = list_segments(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    raw[4] = 2
    seg.write_bytes(bytes(raw))
    got, damage = read_journal(tmp_path, repair=True)
    assert got == []
    assert damage == [JournalDamage(seg, 0, len(raw), "unsupported segment format version 2")]
    assert seg.read_bytes() == raw


# 4. header and segments ---------------------------------------------------------

def test_header_and_reopen_starts_a_new_segment(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    with JournalWriter(d, HEADER) as w:
        assert w.segment.name == "000001.tjr"
        w.append(rec(0))
    assert read_header(d) == HEADER
    with JournalWriter(d, {**HEADER, "session": "s-2"}) as w:
        assert w.segment.name == "000002.tjr"
        w.append(rec(1))
    assert [p.name for p in list_segments(d)] == ["000001.tjr", "000002.tjr"]
    assert read_header(d) == HEADER
    assert read_journal(d) == ([rec(0), rec(1)], [])
    (d / "notes.txt").write_text("ignored")
    assert len(list_segments(d)) == 2


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        read_journal(tmp_path / "nope")
    with pytest.raises(StoreError):
        read_header(tmp_path / "nope")
    with pytest.raises(StoreError):
        list(iter_journal(tmp_path / "nope"))
    assert read_journal(tmp_path) == ([], [])
    with pytest.raises(StoreError):
        read_header(tmp_path)
    with pytest.raises(ValueError):
        JournalWriter(tmp_path, {"segment": 3})
    assert list_segments(tmp_path) == []


def test_flush_is_one_block_and_empty_flush_is_a_no_op(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, HEADER)
    size = w.segment.stat().st_size
    assert size > 0  # header reaches the OS at creation
    w.flush()
    assert w.segment.stat().st_size == size
    for i in range(10):
        w.append(rec(i))
    assert w.buffered == 10 and w.buffered_bytes >= 10 * 40
    w.flush()
    assert w.records_written == 10 and w.segment.stat().st_size > size
    assert read_journal(tmp_path) == ([rec(i) for i in range(10)], [])  # before close
    w.close()


# 5. kill -9 ---------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from schemas.events import RawRecord
    from storage.journal import JournalWriter
    w = JournalWriter(Path(sys.argv[2]), {"child": True}, segment_bytes=20000, level=1)
    i = 0
    while True:
        w.append(RawRecord(i, i, "in", "binary", i.to_bytes(8, "little") * 33))
        i += 1
        if i % 7 == 0:
            w.flush()
        if i == 2000:
            print("ready", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_kill_9_while_appending(tmp_path: Path, delay: float) -> None:
    d = tmp_path / "j"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(d)],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(delay)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    got, damage = read_journal(d, repair=True)
    assert len(got) >= 1995
    assert [r.frame for r in got] == list(range(len(got)))
    assert all(r.payload == r.frame.to_bytes(8, "little") * 33 for r in got)
    assert {x.reason for x in damage} <= {"torn segment header", "truncated block header",
                                          "truncated block"}
    assert read_journal(d) == (got, [])
    assert read_header(d) == {"child": True}
