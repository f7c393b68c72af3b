"""Files that appear whole or not at all: write to a hidden temp name, fsync, rename.

Temp names start with ``.`` and end with ``.tmp`` so no reader glob
(``*.parquet``) ever matches a half-written file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_OPTIONS: dict[str, Any] = dict(
    compression="zstd", compression_level=3, write_statistics=True, row_group_size=1 << 20,
)


def encoding_options(schema: pa.Schema) -> dict[str, Any]:
    """Dictionaries for text columns, delta encoding for integer and time columns.

    Receive times, sequence and frame numbers rise steadily, so their deltas are
    tiny: this halves a trade row (21 → 11 bytes, ``make bench``).
    """
    text = [f.name for f in schema if pa.types.is_string(f.type)]
    ints = {f.name: "DELTA_BINARY_PACKED" for f in schema
            if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type)}
    return {"use_dictionary": text, "column_encoding": ints}


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_temp(table: pa.Table, final: Path) -> Path:
    """Write ``table`` beside ``final`` under its temp name, fsynced; return the temp path.

    On failure (ENOSPC, ...) the partial temp is removed and the error raised."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, **PARQUET_OPTIONS, **encoding_options(table.schema))
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def write_all(fd: int, data: Any) -> None:
    """Write all of ``data`` (bytes-like) to ``fd``, however short each write is."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def write_temp(data: bytes | pa.Buffer | Sequence[bytes], final: Path) -> Path:
    """Write a whole file's bytes (or its pieces, in order) beside ``final`` under its
    temp name, fsynced; return the temp path. On failure (ENOSPC, ...) the partial
    temp is removed and the error raised."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    pieces = [data] if isinstance(data, (bytes, pa.Buffer)) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for piece in pieces:
                write_all(fd, piece)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_parquet(table: pa.Table, final: Path) -> Path:
    tmp = write_parquet_temp(table, final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` atomically; safe against concurrent writers (unique temp names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def remove_json_temps(path: Path) -> list[Path]:
    """Delete the temp files ``write_json(path)`` left in a process killed mid-write (any
    pid); returns them. Only for the one writer of ``path`` (e.g. under its lock)."""
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        _unlink_quietly(tmp)
    return stale


def read_json(path: Path, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default
