"""Shared test helpers: run a simulator and a recorder together, read the store."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import pyarrow as pa
import pyarrow.dataset as ds

from recorder.capture import RecvClock
from recorder.live import Recorder
from replay.sim.server import Simulator, make_adapter

# A deadline that only a hang reaches: what a test waits for (frames, a process's exit)
# comes in seconds on a quiet machine, and the suite's own timeout is 120 s.
HANG_S = 90.0

# The interpreter's tracing switches. A child inheriting them runs many times slower
# (PYTHONTRACEMALLOC: about 10x), so a test's own processes are started without them.
TRACING_VARS = ("PYTHONTRACEMALLOC", "PYTHONMALLOC", "PYTHONMALLOCSTATS",
                "PYTHONPROFILEIMPORTTIME")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``TRACING_VARS``, plus ``extra``: for the
    ``tickrec`` processes a test starts."""
    env = {k: v for k, v in os.environ.items() if k not in TRACING_VARS}
    env.update(extra)
    return env


class MidnightClock(RecvClock):
    """Receive times a minute before ``midnight`` until ``cross()``, then from
    ``midnight`` on (both in real time): the test, not the machine's speed, decides
    which records fall on which day. Strictly increasing, like any RecvClock."""

    def __init__(self, midnight: int) -> None:
        super().__init__(midnight - 60_000_000_000)
        self.midnight = midnight
        self.crossed = False

    def cross(self) -> None:
        """The next record is the first after midnight."""
        if not self.crossed:
            self._wall0, self._mono0 = max(self.midnight, self.last + 1), time.monotonic_ns()
            self.crossed = True


async def record_across_midnight(root: Path | str, symbols: list[str], midnight: int, *,
                                 rows: int = 100, deadline: float = 60.0,
                                 **rec_kw: Any) -> Recorder:
    """Record the simulator (AllTick) across ``midnight`` so that each of the two days
    holds at least ``rows`` trades and ``rows`` book rows, however slow the machine.

    A ``RecvClock(midnight - lead)`` instead splits the capture by elapsed time: on a
    loaded machine the recorder may still be subscribing ``lead`` after the clock was
    made (AllTick's trade subscription follows the depth one by the vendor's request
    interval), the first day gets no trades, and a seal test reading its manifest
    failed with ``KeyError: 'trades'``. Here the clock crosses midnight once the
    first day's rows are in (``MidnightClock.cross``), and the recording stops once
    the second day's are; both waits poll, up to ``deadline`` seconds in all."""
    adapter = make_adapter("alltick")
    sim = Simulator(adapter, symbols, rate=300, seed=7)
    clock = MidnightClock(midnight)
    await sim.start()
    rec = Recorder("alltick", sim.url, symbols, root, flush_seconds=1.0, reconnect_min=0.2,
                   clock=clock, **rec_kw)
    task = asyncio.create_task(rec.run())

    def counts() -> tuple[int, int]:
        """(trades, book) rows of every record stamped so far (pending pushes decoded:
        this runs between the recorder's callbacks, on its loop)."""
        if rec.capture is None:
            return 0, 0
        rec.capture.decode_pending(deliver=False)
        done = rec.capture.norm.rows_by_table
        return done.get("trades", 0), done.get("book", 0)

    try:
        until, want = time.monotonic() + deadline, (rows, rows)
        for day in (1, 2):
            while (got := counts())[0] < want[0] or got[1] < want[1]:
                assert not task.done() and time.monotonic() < until, (
                    f"day {day}: {got} (trades, book) rows of {want} after {deadline}s")
                await asyncio.sleep(0.05)
            if day == 1:
                clock.cross()
                want = (got[0] + rows, got[1] + rows)
        rec.stop()
        await asyncio.wait_for(asyncio.shield(task), 15)
    finally:
        await sim.stop()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return rec


def poll_until(predicate: Any, limit: float, what: str, proc: Any = None) -> Any:
    """Call ``predicate()`` every 0.1 s until it returns something true, and return that.
    Fails (AssertionError naming ``what``) after ``limit`` seconds, or at once if
    ``proc`` (a Popen the condition waits on) has exited."""
    deadline = time.monotonic() + limit
    while not (got := predicate()):
        assert proc is None or proc.poll() is None, f"{what}: the process exited ({proc.returncode})"
        assert time.monotonic() < deadline, f"{what}: not after {limit}s"
        time.sleep(0.1)
    return got


async def until(predicate: Any, limit: float, what: str) -> Any:
    """``poll_until`` for a test on the event loop: await ``predicate()`` being true
    (checked every 0.01 s) and return it; fails naming ``what`` after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not (got := predicate()):
        assert time.monotonic() < deadline, f"{what}: not after {limit}s"
        await asyncio.sleep(0.01)
    return got


class LoopLag:
    """How late this event loop woke up, at worst, while the block ran (``max``, in s;
    ``total``: all its lateness added up): a probe asks to wake every ``tick`` s and
    notes its lateness. A pace test adds it
    to its upper bounds: a loop starved by a loaded machine delays a frame by as much
    as it delays the probe, and that is the machine, not the pacing. Unloaded it is a
    few ms, so the bounds stay tight where they can be."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.max = 0.0
        self.total = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            due = time.monotonic() + self.tick
            await asyncio.sleep(self.tick)
            late = time.monotonic() - due
            self.max, self.total = max(self.max, late), self.total + max(0.0, late)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._probe())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def reap(procs: Iterable[Any]) -> None:
    """SIGKILL and wait for every Popen of ``procs`` still running, so that a test that
    failed midway leaves no recorder behind (its pipes would leak into later tests)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)


def wait_journaled(runs: Path, ready: Any, *, old: Iterable[Path] = (), proc: Any = None,
                   limit: float = 60.0) -> Path:
    """Poll until a run directory under ``runs`` (``journal/<feed>``), not one of ``old``,
    holds records that ``ready(records)`` accepts; return it. For tests that kill a
    ``tickrec record`` mid-capture: the process needs seconds to start on a loaded
    machine, so "mid-capture" is a journal that has grown, not a fixed sleep. Fails
    after ``limit`` seconds, or at once if ``proc`` (the recorder's Popen) has exited."""
    from schemas.errors import StoreError
    from storage.journal import read_journal

    def grown() -> Path | None:
        skip = set(old)
        for run in (p for p in (runs.iterdir() if runs.is_dir() else [])
                    if p.is_dir() and p not in skip):
            try:
                if ready(read_journal(run)[0]):
                    return run
            except StoreError:
                continue
        return None

    return poll_until(grown, limit, f"{runs}: a run with the records wanted", proc)


def read_table(root: Path, table: str) -> list[dict[str, Any]]:
    """All rows of a table as dicts, timestamps as int ns, sorted in replay order."""
    base = root / table
    if not base.exists():
        return []
    t = ds.dataset(base, format="parquet", partitioning="hive",
                   exclude_invalid_files=True).to_table()
    for i, f in enumerate(t.schema):
        if pa.types.is_timestamp(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.int64()))
    keys = [k for k in ("ts_recv", "session", "frame", "pos") if k in t.column_names]
    return t.sort_by([(k, "ascending") for k in keys]).to_pylist()


async def record_sim(root: Path, symbols: list[str], *, venue: str = "alltick", rate: float = 400,
                     steps: int = 2000, seed: int = 7, faults: str | None = None,
                     token: str | None = None, credentials: dict[str, str] | None = None,
                     idle_timeout: float | None = None, linger: float = 0.5,
                     max_seconds: float = 30.0, adapter_options: dict[str, Any] | None = None,
                     rec_symbols: list[str] | None = None, reconnect_min: float = 0.2,
                     **rec_kw: Any) -> tuple[Simulator, Recorder]:
    """Run the simulator until its last step, recording it; return both for inspection.

    After the last step it waits ``linger`` seconds, then until no frame has arrived
    for 0.2 s, then stops the recorder. ``adapter_options`` go to the venue's
    simulator adapter, ``rec_symbols`` (default ``symbols``) are what the recorder
    subscribes; other keywords go to the ``Recorder``.
    """
    adapter = make_adapter(venue, **(adapter_options or {}))
    sim_class = getattr(adapter, "simulator", Simulator)    # futu: a TCP server
    sim = sim_class(adapter, symbols, rate=rate, steps=steps, seed=seed, faults=faults,
                    token=token, audience=rec_symbols)
    await sim.start()
    rec = Recorder(venue, sim.url, symbols if rec_symbols is None else rec_symbols,
                   root, credentials=credentials, flush_seconds=1.0,
                   reconnect_min=reconnect_min, idle_timeout=idle_timeout, **rec_kw)
    task = asyncio.create_task(rec.run())
    try:
        done = asyncio.create_task(sim.done.wait())
        await asyncio.wait({task, done}, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.sleep(linger)
            # then until the recorder has read what is still in flight (it lags under load)
            deadline, seen = time.monotonic() + 10.0, -1
            while (rec.capture is not None and rec.capture.frames_in != seen and not task.done()
                   and time.monotonic() < deadline):
                seen = rec.capture.frames_in
                await asyncio.sleep(0.2)
            rec.stop()
        await asyncio.wait_for(asyncio.shield(task), 15)
    finally:
        await sim.stop()
    return sim, rec


def redecode(root: Path, venue: str) -> dict[str, list[tuple[Any, ...]]]:
    """Decode the stored ``raw`` rows again, session by session, with fresh decoders.

    Returns, per event table, (session, frame, pos, symbol, ts_event) of every event:
    compare with the stored rows to check that raw frames alone reproduce them.
    """
    from schemas.events import RawRecord, Status
    from schemas.venues import make_decoder
    out: dict[str, list[tuple[Any, ...]]] = {}
    decoders: dict[str, Any] = {}
    for r in sorted(read_table(root, "raw"), key=lambda r: (r["session"], r["frame"])):
        dec = decoders.setdefault(r["session"], make_decoder(venue, r["session"]))
        rec = RawRecord(r["ts_recv"], r["frame"], r["direction"], r["kind"], r["payload"],
                        r["note"])
        for ev in dec.feed(rec):
            if not isinstance(ev, Status):
                key = (ev.session, ev.frame, ev.pos, ev.symbol, ev.ts_event)
                out.setdefault(ev.TABLE, []).append(key)
    return {k: sorted(v) for k, v in out.items()}


def stored_keys(root: Path, table: str) -> list[tuple[Any, ...]]:
    """(session, frame, pos, symbol, ts_event) of a table's stored rows, sorted."""
    return sorted((r["session"], r["frame"], r["pos"], r["symbol"], r["ts_event"])
                  for r in read_table(root, table))

