"""Replay throughput: events as objects and rows as Arrow batches, beside plain
``pyarrow.parquet`` batch iteration of the same files and columns, and beside the
machine's limit for making the same objects.

The store (``benchmarks.replay_store``) holds one sealed day (sorted by symbol,
122,880-row groups) and one rolled day (recorder files in arrival order) of
trades and 5-level books over 100 symbols. Trades and books are measured
separately (a book row carries four list columns and costs several times a
trade row everywhere, in pyarrow too); each figure covers both days.

Baselines, measured in the same run (each rate the best of ``rounds`` rounds,
the rounds interleaved so load changes hit every path alike):

- **pyarrow**: the fastest of a few plain ``ParquetFile.iter_batches`` settings
  over the same files (``PYARROW_WAYS``: default; text columns read as
  dictionaries; that plus ``pre_buffer``; that on one thread; that with the text
  decoded per batch, as ``iter_batches`` hands it out). No order, no filter:
  what decoding the files costs here.
- **ordered in memory**: the best any reader could do without a memory bound:
  each day read whole (``pq.read_table``, text as dictionaries, one thread: with
  Arrow's threads it was no faster on 2 shared cores, and much slower under load),
  put in replay order when it is not already (``replay.order.key_order``: numpy's
  stable argsort of ``ts_recv``, which merges a sealed day's sorted symbol runs
  cheaply, then the ties by the full key), taken (``replay.gather.take``) and
  handed out as batches with text decoded, as ``iter_batches`` hands them out.
  A rolled day is in arrival order already: it is just read. Replay as batches
  cannot beat this (it must also bound its memory), so a target above it is out
  of reach for this store layout on this machine.
- **object limit**: the same rows as the same record classes, built by the
  same generated builders (``object.__new__`` plus one slot store per field)
  from ready Python lists: the lists are made outside the timing, batch by
  batch. What making the objects alone costs; replay can only add to it.
- **read** (not a baseline, a part of ours): the replay's reading and ordering
  alone, ``Scan.iter_pieces`` with no record made. The objects path must read and
  build, so it cannot beat the **bound** ``1 / (1/read + 1/limit)``; what it loses
  to the bound is making the values (numbers, texts, level lists) and iterating.
- **machine limit** (``_machine_limit``): the cheapest way we know for anyone to
  turn the same files into the same records, unordered: plain pyarrow decode
  (text read as dictionaries), then per block of ``MACHINE_BLOCK`` rows of a
  decoded batch one numpy ``tolist`` per number column, a dictionary gather per
  text column, one 2-D ``tolist`` per level column (one Python list of floats
  per row: cutting one flat ``tolist`` by slices measured ~1.8x slower), and
  the generated builder making each record as it is taken (``EACH``), with the
  cyclic collector off throughout. Timed whole (``machine``) and without the
  decode (``values``: values and records from decoded batches). Replay must
  also order the rows, so it cannot beat ``machine``: when that is under a
  target, the target is out of reach for the record type on this machine.

The same records through ``async for`` (the Feed interface a live feed has):

- **feed**: ``replay.open(..., speed="max")`` consumed by ``async for``, reading
  on its reader thread (the default);
- **async for over replay_sync** (its baseline): the objects path's records handed
  out by a bare async generator, ``async for`` over ``replay_sync``: what the
  async-iterator protocol alone costs on top of the objects path. The feed cannot
  beat it.

The same events as JSON lines, what ``tickrec replay --speed max`` prints:

- **lines**: ``tickrec.replaying.replay_to`` over the feed, into ``/dev/null``
  (the canonical line of each event, ``schemas.jsonline``, written a block at a
  time);
- **json.dumps** (its baseline): the plain way, each event of ``replay_sync``
  through ``json.dumps(event.to_dict(), ...)`` with the canonical settings and
  written as it comes (without a flush per line, which ``click.echo`` adds).

Run alone: ``PYTHONPATH=. python -m benchmarks.replay_speed [ROWS_PER_DAY]``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import replay
from benchmarks.replay_store import make_day
from replay import gather
from replay.order import is_sorted, key_order
from replay.rows import BUILDERS, EACH, RECORD_COLUMNS, column_values
from replay.scan import BUILD_ROWS, EVENT_KEYS, Scan
from schemas.jsonline import canonical
from tickrec.replaying import replay_to


def _texts(path: Path) -> list[str]:
    schema = pq.read_schema(path)
    return [f.name for f in schema if f.type == pa.string()]


def _decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c
            for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


PYARROW_WAYS: dict[str, Callable[[Path], Any]] = {
    "default": lambda f: pq.ParquetFile(f).iter_batches(65_536),
    "dictionary": lambda f: pq.ParquetFile(f, read_dictionary=_texts(f)).iter_batches(65_536),
    "dictionary+pre_buffer": lambda f: pq.ParquetFile(
        f, read_dictionary=_texts(f), pre_buffer=True).iter_batches(65_536),
    "dictionary, 1 thread": lambda f: pq.ParquetFile(
        f, read_dictionary=_texts(f)).iter_batches(65_536, use_threads=False),
    "dictionary, 1 thread, text decoded": lambda f: map(_decoded, pq.ParquetFile(
        f, read_dictionary=_texts(f)).iter_batches(65_536, use_threads=False)),
}


def _pyarrow(files: Sequence[Path], way: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = sum(b.num_rows for f in files for b in PYARROW_WAYS[way](f))
    return n, time.perf_counter() - t0


def _ordered_in_memory(files: Sequence[Path]) -> tuple[int, float]:
    """The module doc's ordered-in-memory baseline over ``files`` (one day at a time)."""
    t0 = time.perf_counter()
    n = 0
    for _, day in groupby(files, key=lambda f: f.parent):
        day_files = list(day)
        t = pq.read_table(day_files, read_dictionary=_texts(day_files[0]), use_threads=False)
        if not is_sorted(t, EVENT_KEYS):
            t = gather.take(t, key_order(t, EVENT_KEYS))
        for batch in t.to_batches(65_536):
            n += _decoded(batch).num_rows
        del t
    return n, time.perf_counter() - t0


def _object_limit(files: Sequence[Path], table: str) -> tuple[int, float]:
    """Build the rows of ``files`` from ready lists; only the building is timed."""
    make, cols = BUILDERS[table], RECORD_COLUMNS[table]
    n, spent = 0, 0.0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(65_536, columns=list(cols)):
            lists = [column_values(batch.column(c)) for c in cols]
            gc.disable()
            t0 = time.perf_counter()
            records = make("alltick", *lists)
            spent += time.perf_counter() - t0
            gc.enable()
            n += len(records)
            del records, lists
    return n, spent


MACHINE_BLOCK = 4_096


def _block_values(arr: pa.Array) -> Callable[[int, int], list[Any]]:
    """``values(lo, hi)``: rows lo..hi of a decoded column as Python values, the
    cheapest plain way (see ``_machine_limit``)."""
    n = len(arr)
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    if arr.null_count == n:
        return lambda lo, hi: [None] * (hi - lo)
    if arr.null_count:
        every = arr.to_pylist()
        return lambda lo, hi: every[lo:hi]
    if pa.types.is_dictionary(arr.type):
        if len(arr.dictionary) == 1:          # one session: a list repeat
            one = arr.dictionary.to_pylist()
            return lambda lo, hi: one * (hi - lo)
        table = np.array(arr.dictionary.to_pylist(), dtype=object)
        codes = arr.indices.to_numpy()
        return lambda lo, hi: table[codes[lo:hi]].tolist()
    if pa.types.is_list(arr.type):
        flat = arr.flatten().to_numpy()
        grid = flat.reshape(n, len(flat) // n)
        return lambda lo, hi: grid[lo:hi].tolist()
    v = arr.to_numpy()
    return lambda lo, hi: v[lo:hi].tolist()


def _dictionary_batches(f: Path, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """``f``'s batches as the machine limit decodes them: text read as dictionaries."""
    return pq.ParquetFile(f, read_dictionary=_texts(f)).iter_batches(65_536, columns=list(columns))


def _records_of(each: Callable[..., Iterator[Any]], values: Sequence[Callable[[int, int], list[Any]]],
                rows: int) -> int:
    """Make the records of one decoded batch (``values``: ``_block_values`` of its
    columns) ``MACHINE_BLOCK`` rows at a time, each dropped as it is taken; their count."""
    n = 0
    for lo in range(0, rows, MACHINE_BLOCK):
        hi = min(lo + MACHINE_BLOCK, rows)
        n += sum(1 for _ in each("alltick", *[v(lo, hi) for v in values]))
    return n


def _machine_limit(files: Sequence[Path], table: str, timed: str = "all") -> tuple[int, float]:
    """The module doc's machine limit: the rows of ``files`` (unordered) decoded and
    made into records, each dropped as it is taken. ``timed``: ``"all"`` (decode,
    values and records) or ``"values"`` (values and records only)."""
    each, cols = EACH[table], RECORD_COLUMNS[table]
    n, spent = 0, 0.0
    was_on = gc.isenabled()
    gc.disable()
    try:
        t_all = time.perf_counter()
        for f in files:
            for batch in _dictionary_batches(f, cols):
                t0 = time.perf_counter()
                values = [_block_values(batch.column(c)) for c in cols]
                n += _records_of(each, values, batch.num_rows)
                spent += time.perf_counter() - t0
        if timed == "all":
            spent = time.perf_counter() - t_all
    finally:
        if was_on:
            gc.enable()
    return n, spent


async def _feed(root: Path, table: str) -> int:
    n = 0
    async with replay.open(root, "alltick", tables=[table], speed="max") as feed:
        async for _ in feed:
            n += 1
    return n


async def _async_for(events: Iterable[Any]) -> int:
    async def handed_out() -> AsyncIterator[Any]:
        for ev in events:
            yield ev
    n = 0
    async for _ in handed_out():
        n += 1
    return n


def _lines(root: Path, table: str) -> int:
    feed = replay.open(root, "alltick", tables=[table], speed="max")
    with open(os.devnull, "wb") as out:
        asyncio.run(replay_to(feed, out, False))
    return feed.count


def _dumps_lines(root: Path, table: str) -> int:
    n = 0
    with open(os.devnull, "wb") as out:
        for ev in replay.replay_sync(root, "alltick", tables=[table]):
            out.write(canonical(ev.to_dict()).encode() + b"\n")   # json.dumps, canonical
            n += 1
    return n


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


def _paths(root: Path, table: str) -> dict[str, Callable[[], tuple[int, float]]]:
    """What is timed for ``table``: (rows, seconds) of each pyarrow way, the object
    limit, and the replay as objects and as batches."""
    files = sorted(root.glob(f"{table}/*/*/*.parquet"))
    paths: dict[str, Callable[[], tuple[int, float]]] = {
        f"pyarrow {way}": lambda way=way: _pyarrow(files, way) for way in PYARROW_WAYS}
    paths["ordered in memory"] = lambda: _ordered_in_memory(files)
    paths["limit"] = lambda: _object_limit(files, table)
    paths["read"] = lambda: _timed(lambda: sum(
        len(p) for p in Scan(root, "alltick", tables=[table]).iter_pieces(BUILD_ROWS)))
    paths["machine"] = lambda: _machine_limit(files, table)
    paths["values"] = lambda: _machine_limit(files, table, "values")
    paths["objects"] = lambda: _timed(lambda: sum(
        1 for _ in replay.replay_sync(root, "alltick", tables=[table])))
    paths["feed"] = lambda: _timed(lambda: asyncio.run(_feed(root, table)))
    paths["async for"] = lambda: _timed(lambda: asyncio.run(_async_for(
        replay.replay_sync(root, "alltick", tables=[table]))))
    paths["lines"] = lambda: _timed(lambda: _lines(root, table))
    paths["json.dumps"] = lambda: _timed(lambda: _dumps_lines(root, table))
    paths["batches"] = lambda: _timed(lambda: sum(
        b.num_rows for b in replay.iter_batches(root, "alltick", tables=[table])))
    return paths


def run(rows_per_day: int = 2_000_000, rounds: int = 2) -> dict[str, Any]:
    """Rates (rows or events per second) per table: ``{t}_objects``, ``{t}_batches``,
    ``{t}_feed`` and ``{t}_async`` (``async for``: the feed, and over ``replay_sync``),
    ``{t}_lines`` and ``{t}_dumps`` (JSON lines: ``replay_to``, and ``json.dumps``),
    ``{t}_baseline`` (best pyarrow way, named by ``{t}_baseline_way``), ``{t}_limit``,
    ``{t}_read``, ``{t}_bound``, ``{t}_machine``, ``{t}_values`` and ``{t}_ordered``
    (ordered in memory; see the module doc)."""
    out: dict[str, Any] = {"rows_per_day": rows_per_day}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_day(root, 0, rows_per_day, "sealed")
        make_day(root, 1, rows_per_day, "rolled")
        for table in ("trades", "book"):
            paths = _paths(root, table)
            best: dict[str, float] = {}
            for _ in range(rounds):
                for name, fn in paths.items():
                    n, spent = fn()
                    best[name] = max(best.get(name, 0.0), n / spent)
            way = max(PYARROW_WAYS, key=lambda w: best[f"pyarrow {w}"])
            out[f"{table}_baseline"] = best[f"pyarrow {way}"]
            out[f"{table}_baseline_way"] = way
            out[f"{table}_pyarrow"] = {w: best[f"pyarrow {w}"] for w in PYARROW_WAYS}
            for name in ("limit", "read", "objects", "batches", "feed", "lines"):
                out[f"{table}_{name}"] = best[name]
            out[f"{table}_async"] = best["async for"]
            out[f"{table}_dumps"] = best["json.dumps"]
            out[f"{table}_ordered"] = best["ordered in memory"]
            out[f"{table}_bound"] = 1 / (1 / best["read"] + 1 / best["limit"])
            out[f"{table}_machine"], out[f"{table}_values"] = best["machine"], best["values"]
    return out


if __name__ == "__main__":
    import sys
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000))
