"""One Parquet file as its writer hands it over: straight to its temp file, or in memory.

A recorder encodes a batch's rows as they arrive (``storage.writer.Rows``), so each
file of the batch grows for the whole batch. ``Spool`` is the file object its
``ParquetWriter`` writes to:

- **on disk** (local roots): each piece goes to the file's hidden temp name in its
  partition directory as it comes, so a batch's compressed bytes are not resident
  (issue 8: 10 MB of a recorder's peak were these files). ``finish`` fsyncs it
  for the publish, which renames it (``storage.writer``);
- **in memory** (S3, where a file is one object write; or once a write or a
  publish failed): the pieces in order, no slack (an Arrow ``BufferOutputStream``
  doubles its buffer as it grows).

A spool on disk remembers the size and crc32 of what it wrote. When a write fails
(disk full) it takes the file back into memory and goes on there; when a publish
fails, ``hold`` does the same, so a failed batch is given back whole and written
again later, as before. The bytes read back must match the crc32 (after a failed
fsync the kernel may have dropped the pages): if they do not, the spool is
``lost`` and ``storage.writer`` refuses to publish it, leaving its records
unpublished in the journal for the next start's recovery; nothing is guessed.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

from storage.atomic import write_all


def _read_all(fd: int, size: int) -> bytes:
    parts, at = [], 0
    while at < size:
        part = os.pread(fd, size - at, at)
        if not part:
            break
        parts.append(part)
        at += len(part)
    return b"".join(parts)


class Spool:
    """A file written in pieces; on disk at ``path`` unless ``path`` is None or a write
    failed (then in ``pieces``). ``size``/``crc`` cover every byte written."""
    __slots__ = ("_fd", "closed", "crc", "lost", "path", "pieces", "size")

    def __init__(self, path: Path | None = None) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.crc = 0
        self.closed = False
        self.lost = False               # on disk, read back wrong: not publishable
        self.path: Path | None = None
        self._fd: int | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                self.path = path
            except OSError:
                pass                    # in memory then; the publish meets the error

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def write(self, data: Any) -> int:
        n = len(data)
        if self._fd is not None:
            try:
                write_all(self._fd, data)
            except OSError:
                self.hold()             # disk full: go on in memory (never raises here)
            else:
                self.size += n
                self.crc = zlib.crc32(data, self.crc)
                return n
        if not self.lost:
            self.pieces.append(bytes(data))        # a copy only if not bytes already
        self.size += n
        self.crc = zlib.crc32(data, self.crc)
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def finish(self) -> Path:
        """On disk: fsync the temp file and close it; its path (raises OSError)."""
        assert self.path is not None
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        return self.path

    def hold(self) -> None:
        """Take the file back into memory (verified against what was written) and
        remove it from disk; ``lost`` if the bytes read back differ. Never raises."""
        if self.path is None:
            return
        path, fd, self.path, self._fd = self.path, self._fd, None, None
        data = b""
        try:
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
            data = _read_all(fd, self.size)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)
        self.lost = len(data) != self.size or zlib.crc32(data) != self.crc
        self.pieces = [] if self.lost else [data]
        try:
            os.unlink(path)
        except OSError:
            pass

    def __del__(self) -> None:
        # a spool dropped unfinished (its run died): the temp stays for recovery to remove
        if self._fd is not None:
            os.close(self._fd)

    def getvalue(self) -> bytes:
        """The whole file (read back from disk for a spool on disk)."""
        if self.path is not None:
            if self._fd is not None:
                return _read_all(self._fd, self.size)
            return self.path.read_bytes()
        return b"".join(self.pieces)
