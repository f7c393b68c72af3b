"""The page headers of a Parquet column chunk (pyarrow does not expose them).

A minimal reader of Thrift's compact protocol, enough for ``PageHeader``: the
tests use it to check how a writer cut a column chunk into pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3


@dataclass(frozen=True)
class Page:
    kind: int                   # DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2
    uncompressed: int           # bytes
    compressed: int
    values: int                 # values in the page (rows, for a flat column)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        x = b[i]
        i += 1
        out |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return out, i


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(b: bytes, i: int, kind: int) -> tuple[Any, int]:
    if kind in (1, 2):                      # booleans live in the field header
        return kind == 1, i
    if kind == 3:
        return b[i], i + 1
    if kind in (4, 5, 6):
        v, i = _varint(b, i)
        return _zigzag(v), i
    if kind == 7:
        return b[i:i + 8], i + 8
    if kind == 8:
        n, i = _varint(b, i)
        return b[i:i + n], i + n
    if kind in (9, 10):
        head = b[i]
        i += 1
        n, elem = head >> 4, head & 0x0F
        if n == 15:
            n, i = _varint(b, i)
        items = []
        for _ in range(n):
            if elem in (1, 2):
                items.append(b[i] == 1)
                i += 1
            else:
                v, i = _value(b, i, elem)
                items.append(v)
        return items, i
    if kind == 12:
        return _struct(b, i)
    raise ValueError(f"thrift type {kind}")


def _struct(b: bytes, i: int) -> tuple[dict[int, Any], int]:
    out: dict[int, Any] = {}
    field = 0
    while True:
        head = b[i]
        i += 1
        if head == 0:
            return out, i
        delta, kind = head >> 4, head & 0x0F
        if delta:
            field += delta
        else:
            v, i = _varint(b, i)
            field = _zigzag(v)
        out[field], i = _value(b, i, kind)


def pages(path: Path | str, row_group: int, column: int) -> list[Page]:
    """The pages of one column chunk, in file order."""
    chunk = pq.ParquetFile(path).metadata.row_group(row_group).column(column)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(chunk.total_compressed_size)
    out, i = [], 0
    while i < len(data):
        header, i = _struct(data, i)
        detail = header.get(5) or header.get(7) or header.get(8) or {}
        out.append(Page(header[1], header[2], header[3], detail.get(1, 0)))
        i += header[3]
    return out
