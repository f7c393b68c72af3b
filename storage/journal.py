"""Write-ahead journal: append-only, zstd-framed, checksummed segments.

Every raw frame is journaled before anything else happens to it. A journal is a
directory of segment files ``000001.tjr``, ``000002.tjr``, ... (numbered from 1,
at least six digits). A writer only ever creates a new segment after the highest
existing one and appends to it; it never reopens an old segment.

Segment layout (all integers little-endian)::

    segment header   b"TKRJ"  u8 version (=1)  u32 n  n bytes of UTF-8 JSON
                     (the writer's header dict plus "segment": its number)
    block*           b"TKB1"  u32 clen  u32 count  u32 crc32(compressed)
                     clen bytes: one zstd frame (with content size) holding
                     `count` records packed back to back:
    record           struct "<qqBBIH": ts_recv, frame, direction code, kind code,
                     payload length, note length (0xFFFF: note is None);
                     then the payload bytes, then the note as UTF-8.

Direction codes: in=0 out=1 event=2. Kind codes: text=0 binary=1 open=2 close=3
error=4. Notes longer than 65534 UTF-8 bytes are cut to at most 65534 bytes on a
character boundary (notes are diagnostics, not data).

Durability: ``append`` only packs into memory; ``flush`` compresses the buffer as
one block and hands it to the OS in one ``write`` on an unbuffered file, so a
kill -9 leaves at most one partial block at the end of the live segment; ``sync``
adds an fsync. The live segment is held under ``flock(LOCK_EX)``.

Reading never raises for damage. A block that fails any check (magic, length,
crc32, zstd, record layout) starts a damaged range; the reader then resyncs on the
next ``b"TKB1"`` that begins a whole, valid block, so one bad block in the middle
of a segment costs that block only, not the rest of the day. Each damaged range
is one ``JournalDamage``; a range that runs to the end of the file is the torn
tail. ``repair=True`` truncates a torn tail at the end of the last whole block
(and deletes a segment whose header itself is torn, i.e. killed at creation);
damage in the middle is left in place for forensics and is reported on every
read. Segments locked by a live writer are never repaired, but repair (which
truncates) must not run while another process is reading the same journal.
"""

from __future__ import annotations

import fcntl
import io
import json
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import zstandard

from schemas.errors import JournalCorrupt, StoreError
from schemas.events import RawRecord

SEGMENT_MAGIC = b"TKRJ"
BLOCK_MAGIC = b"TKB1"
VERSION = 1
SUFFIX = ".tjr"
DIRECTIONS: tuple[str, ...] = ("in", "out", "event")
KINDS: tuple[str, ...] = ("text", "binary", "open", "close", "error")
MAX_NOTE = 0xFFFE
_NO_NOTE = 0xFFFF
_SEG_HEAD = struct.Struct("<4sBI")
_BLOCK_HEAD = struct.Struct("<4sIII")
_REC = struct.Struct("<qqBBIH")
_DIR_CODE = {d: i for i, d in enumerate(DIRECTIONS)}
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_SEG_NAME = re.compile(r"(\d{6,})\.tjr")
_TORN_HEADER = "torn segment header"
_UNSUPPORTED = "unsupported segment format version"


@dataclass(frozen=True)
class JournalDamage:
    """One damaged byte range of a segment: ``bytes_cut`` bytes from ``offset`` skipped."""

    segment: Path
    offset: int
    bytes_cut: int
    reason: str


class JournalWriter:
    """Appends RawRecords to a new segment of ``directory``; one writer per segment.

    Order of calls: ``append``* interleaved with ``flush``/``sync``, then ``close``
    (or use it as a context manager). ``append`` raises ValueError for a record
    the format cannot hold (unknown direction/kind, ints beyond int64) and
    StoreError once closed; ``flush``/``sync``/``close`` raise StoreError on I/O
    failure. After a failed write the buffer is kept and the partial block is cut
    off the file again, so ``flush`` may be retried (e.g. after ENOSPC) and the
    segment stays whole (if even the cut fails, readers skip the partial block as
    mid-file damage); the ``StoreError``'s ``__cause__`` is the ``OSError``;
    a failure while rolling segments leaves the writer closed. The header must be
    JSON-serialisable (else TypeError) and must not use the reserved key
    ``"segment"`` (else ValueError). Not thread-safe: one thread owns a writer.
    """

    def __init__(self, directory: Path, header: dict[str, Any], *,
                 segment_bytes: int = 64 << 20, level: int = 3) -> None:
        if "segment" in header:
            raise ValueError('journal header key "segment" is reserved')
        json.dumps(header)  # fail here, before any file exists
        self.directory = Path(directory)
        self.records_written = 0
        self._header = dict(header)
        self._segment_bytes = segment_bytes
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._buf = bytearray()
        self._n = 0
        self._file: io.FileIO | None = None
        self._size = self._head_size = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create journal directory {self.directory}: {exc}") from exc
        segments = list_segments(self.directory)
        self._number = int(segments[-1].stem) if segments else 0
        self._open_next()

    @property
    def buffered(self) -> int:
        """Records appended but not yet flushed."""
        return self._n

    @property
    def buffered_bytes(self) -> int:
        """Bytes not yet flushed: payloads, notes and 24 bytes of framing per record."""
        return len(self._buf)

    @property
    def segment(self) -> Path:
        """The segment currently written to."""
        return self.directory / f"{self._number:06d}{SUFFIX}"

    def append(self, rec: RawRecord) -> None:
        """Buffer one record in memory (no I/O)."""
        if self._file is None:
            raise StoreError("journal writer is closed")
        note = b"" if rec.note is None else rec.note.encode()
        if len(note) > MAX_NOTE:
            note = note[:MAX_NOTE].decode(errors="ignore").encode()
        buf = self._buf
        mark = len(buf)
        try:
            buf += _REC.pack(rec.ts_recv, rec.frame, _DIR_CODE[rec.direction],
                             _KIND_CODE[rec.kind], len(rec.payload),
                             _NO_NOTE if rec.note is None else len(note))
            buf += rec.payload
            buf += note
        except BaseException as exc:
            del buf[mark:]
            if isinstance(exc, (KeyError, struct.error)):
                raise ValueError(f"record not journalable: {exc!r}") from exc
            raise
        self._n += 1

    def append_in(self, ts0: int, frame0: int, frames: Sequence[tuple[bytes, bool]]) -> None:
        """Buffer frames received together, ``(payload, is_text)`` each: the same bytes as
        ``append`` of ``RawRecord(ts0 + i, frame0 + i, "in", "text"|"binary", payload)``
        for each, in order."""
        if self._file is None:
            raise StoreError("journal writer is closed")
        pack, din = _REC.pack, _DIR_CODE["in"]
        text, binary = _KIND_CODE["text"], _KIND_CODE["binary"]
        parts: list[bytes] = []
        add = parts.append
        for i, (payload, is_text) in enumerate(frames):
            add(pack(ts0 + i, frame0 + i, din, text if is_text else binary, len(payload), _NO_NOTE))
            add(payload)
        self._buf += b"".join(parts)
        self._n += len(frames)

    def flush(self) -> None:
        """Write the buffer as one block (one os-level write, no fsync); no-op if empty.

        Rolls to a new segment first when this block would push a segment that
        already holds a block beyond ``segment_bytes``.
        """
        if not self._n:
            return
        data = self._cctx.compress(self._buf)
        block = _BLOCK_HEAD.pack(BLOCK_MAGIC, len(data), self._n, zlib.crc32(data)) + data
        if self._size > self._head_size and self._size + len(block) > self._segment_bytes:
            self._close_file()
            self._open_next()
        self._write(block)
        self.records_written += self._n
        self._buf = bytearray()
        self._n = 0

    def sync(self) -> None:
        """flush(), then fsync the live segment."""
        self.flush()
        try:
            os.fsync(self._live().fileno())
        except OSError as exc:
            raise StoreError(f"cannot fsync {self.segment}: {exc}") from exc

    def close(self) -> None:
        """sync() and close; idempotent."""
        if self._file is not None:
            try:
                self.sync()
            finally:
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> io.FileIO:
        if self._file is None:
            raise StoreError("journal writer is closed")
        return self._file

    def _write(self, data: bytes) -> None:
        view, fd = memoryview(data), self._live().fileno()
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            # Take back what part of the block did reach the file (ENOSPC mid-block), so
            # a retried flush leaves no damaged range behind; a failed cut is only damage.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                pass
            raise StoreError(f"cannot write {self.segment}: {exc.strerror or exc}") from exc
        self._size += len(data)

    def _close_file(self) -> None:
        f = self._live()
        try:
            os.fsync(f.fileno())
        except OSError as exc:
            raise StoreError(f"cannot fsync {self.segment}: {exc}") from exc
        f.close()
        self._file = None

    def _open_next(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        while True:  # O_EXCL: a racing writer makes us take the next number
            self._number += 1
            try:
                fd = os.open(self.segment, flags, 0o644)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot create {self.segment}: {exc}") from exc
        self._file = open(fd, "ab", buffering=0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        meta = json.dumps({**self._header, "segment": self._number}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        self._size = 0
        self._write(_SEG_HEAD.pack(SEGMENT_MAGIC, VERSION, len(meta)) + meta)
        self._head_size = self._size
        try:  # make the new name itself durable
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise StoreError(f"cannot fsync {self.directory}: {exc}") from exc


def list_segments(directory: Path) -> list[Path]:
    """Segment files of ``directory`` in number order; StoreError if it cannot be listed."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise StoreError(f"cannot list journal directory {directory}: {exc}") from exc
    found = sorted((int(m[1]), n) for n in names if (m := _SEG_NAME.fullmatch(n)))
    return [Path(directory) / n for _, n in found]


def read_header(directory: Path) -> dict[str, Any]:
    """The header given to the writer (without "segment"), from the first segment
    whose header is readable. StoreError if there is no segment, JournalCorrupt if
    no segment header can be read."""
    for seg in list_segments(directory):
        try:
            with open(seg, "rb") as f:
                head = f.read(_SEG_HEAD.size)
                head += f.read(_SEG_HEAD.unpack(head)[2]) if len(head) == _SEG_HEAD.size else b""
            header, _ = _parse_header(head)
        except (OSError, ValueError):
            continue
        header.pop("segment", None)
        return header
    if not list_segments(directory):
        raise StoreError(f"no journal segment in {directory}")
    raise JournalCorrupt(f"no readable journal segment header in {directory}")


def read_journal(directory: Path, *, repair: bool = False,
                 ) -> tuple[list[RawRecord], list[JournalDamage]]:
    """Every whole record of every segment, in order, and every damaged range.

    With ``repair=True`` torn tails are truncated (see the module docstring).
    Never raises for damage; StoreError if the directory cannot be read.
    """
    records: list[RawRecord] = []
    damages: list[JournalDamage] = []
    for seg in list_segments(directory):
        found: list[JournalDamage] = []
        for item in _scan(seg):
            if isinstance(item, JournalDamage):
                found.append(item)
            else:
                records.extend(item)
        damages.extend(found)
        if repair and found:
            _repair(seg, found[-1])
    return records, damages


def iter_journal(directory: Path) -> Iterator[RawRecord]:
    """Stream every whole record, in order; damage is skipped silently, never repaired."""
    for seg in list_segments(directory):
        for item in _scan(seg):
            if not isinstance(item, JournalDamage):
                yield from item


def _parse_header(buf: bytes | mmap.mmap) -> tuple[dict[str, Any], int]:
    """(header dict, offset of the first block); ValueError(reason) if unusable."""
    if len(buf) < _SEG_HEAD.size:
        raise ValueError(_TORN_HEADER if SEGMENT_MAGIC.startswith(buf[:4]) else "bad segment magic")
    magic, version, n = _SEG_HEAD.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise ValueError("bad segment magic")
    if version != VERSION:
        raise ValueError(f"{_UNSUPPORTED} {version}")
    end = _SEG_HEAD.size + n
    if end > len(buf):
        raise ValueError(_TORN_HEADER)
    try:
        header = json.loads(buf[_SEG_HEAD.size:end].decode())
    except ValueError as exc:
        raise ValueError(f"bad segment header json: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError("segment header is not a JSON object")
    return header, end


def _scan(path: Path) -> Iterator[list[RawRecord] | JournalDamage]:
    """Yield each whole block's records and each damaged range, in file order."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield JournalDamage(path, 0, 0, _TORN_HEADER)
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            dctx = zstandard.ZstdDecompressor()
            bad_at, why = -1, ""
            try:
                pos = _parse_header(mm)[1]
            except ValueError as exc:
                if str(exc).startswith(_UNSUPPORTED):  # a format we cannot resync into
                    yield JournalDamage(path, 0, size, str(exc))
                    return
                pos, bad_at, why = 0, 0, str(exc)
            while pos < size:
                try:
                    recs, end = _read_block(mm, pos, dctx)
                except ValueError as exc:
                    if bad_at < 0:
                        bad_at, why = pos, str(exc)
                    nxt = mm.find(BLOCK_MAGIC, pos + 1)
                    pos = size if nxt < 0 else nxt
                    continue
                if bad_at >= 0:
                    yield JournalDamage(path, bad_at, pos - bad_at, why)
                    bad_at = -1
                yield recs
                pos = end
            if bad_at >= 0:
                yield JournalDamage(path, bad_at, size - bad_at, why)


def _read_block(mm: mmap.mmap, pos: int, dctx: zstandard.ZstdDecompressor,
                ) -> tuple[list[RawRecord], int]:
    """(records, end offset) of the block at ``pos``; ValueError(reason) if not whole and valid."""
    if len(mm) - pos < _BLOCK_HEAD.size:
        raise ValueError("truncated block header")
    magic, clen, count, crc = _BLOCK_HEAD.unpack_from(mm, pos)
    if magic != BLOCK_MAGIC:
        raise ValueError("bad block magic")
    start = pos + _BLOCK_HEAD.size
    if start + clen > len(mm):
        raise ValueError("truncated block")
    data = mm[start:start + clen]
    if zlib.crc32(data) != crc:
        raise ValueError("crc mismatch")
    try:
        return _decode(dctx.decompress(data), count), start + clen
    except zstandard.ZstdError as exc:
        raise ValueError(f"undecompressable block: {exc}") from exc
    except (struct.error, IndexError, ValueError) as exc:
        raise ValueError(f"bad record layout: {exc}") from exc


def _decode(raw: bytes, count: int) -> list[RawRecord]:
    out: list[RawRecord] = []
    pos, unpack, head = 0, _REC.unpack_from, _REC.size
    for _ in range(count):
        ts, frame, d, k, plen, nlen = unpack(raw, pos)
        pos += head
        payload = raw[pos:pos + plen]
        pos += plen
        note = None
        if nlen != _NO_NOTE:
            note = raw[pos:pos + nlen].decode()
            pos += nlen
        out.append(RawRecord(ts, frame, DIRECTIONS[d], KINDS[k], payload, note))
    if pos != len(raw):
        raise ValueError(f"{len(raw) - pos} bytes left after {count} records")
    return out


def _repair(seg: Path, last: JournalDamage) -> None:
    """Cut a torn tail (or delete a segment torn in its header); leave everything else."""
    try:
        with open(seg, "r+b") as f:
            if last.offset + last.bytes_cut != os.fstat(f.fileno()).st_size:
                return  # damage in the middle: keep the evidence
            if last.offset == 0 and last.reason != _TORN_HEADER:
                return  # not our torn write: a foreign or mangled file
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a live writer owns it
            if last.offset == 0:
                seg.unlink()
            else:
                f.truncate(last.offset)
                os.fsync(f.fileno())
    except OSError as exc:
        raise StoreError(f"cannot repair {seg}: {exc}") from exc
