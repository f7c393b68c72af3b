"""``ReplayFeed``: the Feed protocol (``schemas.feed``) over the store.

    async with replay.open(root, venue="alltick", symbols=["BTCUSDT"], speed=10) as feed:
        async for event in feed:
            ...

Yields the ``schemas.events`` records (``RawRow`` for ``kind="raw"``) of
``replay.scan.Scan`` in replay order, each released by the clock
(``replay.clock``). Reading and sorting (Arrow, mostly outside the GIL) run on a
reader thread one read step ahead of the consumer (``Scan.iter_piece_runs``:
about a window's rows, cut into pieces of ``PIECE_ROWS``), so a day boundary or
a large Parquet file does not stall the event loop or the pacing. A step, not a
piece, per call: while the consumer holds the GIL the reader gets it back after
each Arrow call only at the interpreter's switch interval, so it is handed work
in as few calls as possible (docs/benchmarks.md, "Replay through ``async
for``"). The loop takes the read step when it needs it and waits only if the
reader is behind; ``read_ahead=False`` reads each step on the loop instead. The
reader hands over ``Piece``s (zero-copy Arrow slices); the records are made on
the loop, as ``replay.scan.RecordMaker`` judges suits the consumer:
one at a time as taken while it drops them (so the cyclic collector does not
run), a list per piece while it keeps them. A paced feed computes a piece's
deadlines in one step from its ``ts_recv`` (``WallClock.deadlines``): handing
out an event that is due costs one clock reading and one lateness ``append``,
no call into the clock (docs/benchmarks.md, "Pacing"). It makes the records
from cuts of ``RECORD_ROWS`` of the piece, one cut after the other, so the
work done at once when a cut begins (gathering its values, or building its
list) stays short enough not to make the events then due late. Building Python
objects on the reader thread instead gains nothing under the GIL and, worse,
makes the loop wait up to the interpreter's switch interval (5 ms) whenever it
wants the GIL back, which shows up as pacing lateness. ``async for`` gets an
async generator (``_paced`` or ``_unpaced``) that keeps its place in locals;
``anext(feed)`` goes through it too. The feed is one stream: a second ``async
for`` continues where the first stopped; open a new feed to replay again.
Other tasks on the loop run while a paced feed sleeps; an unpaced feed yields to
the event loop after each piece, and a paced one behind schedule once it has
handed out a piece's worth of events without sleeping (counted at the end of a
piece: at most two pieces go out back to back). ``chunk_rows`` caps the piece
size.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from itertools import chain
from typing import Any, Self

import pyarrow as pa

from replay.clock import WINDOW_S, Lateness, VirtualClock, WallClock, make_clock
from replay.order import Piece
from replay.params import parse_speed
from replay.rows import RawRow
from replay.scan import CHUNK_ROWS, RecordMaker, Scan

_monotonic_ns = time.monotonic_ns     # bound once: read for every paced event

PIECE_ROWS = 4096     # rows a piece: the read-ahead's unit, and a paced piece's deadlines
RECORD_ROWS = 1024    # paced: records are made from pieces this long, cut from a piece
@cache
def _reader() -> ThreadPoolExecutor:
    """The threads that read steps ahead, shared by all feeds (one read in flight per
    feed). A plain ``concurrent.futures`` future per step: the loop checks ``done()``
    when it needs the step, so a read that finishes in time wakes nobody (an asyncio
    future would wake the loop through its self-pipe once a read, ~100 µs of CPU a
    wake-up on a VM); the loop waits on it only when the worker is behind."""
    return ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4),
                              thread_name_prefix="tickrec-replay")


if hasattr(os, "register_at_fork"):         # a forked child has none of these threads
    os.register_at_fork(after_in_child=_reader.cache_clear)


class ReplayFeed:
    """A replay of one venue's range from the store (see ``replay.open``)."""

    def __init__(self, root: str | os.PathLike[str], venue: str, *,
                 symbols: str | Sequence[str] | None = None, start: Any = None, end: Any = None,
                 speed: float | str = 1.0, clock: str = "wall", kind: str = "events",
                 tables: str | Sequence[str] | None = None, precise: bool = False,
                 pace_window: float = WINDOW_S, chunk_rows: int = CHUNK_ROWS,
                 read_ahead: bool = True) -> None:
        self.scan = Scan(root, venue, symbols=symbols, start=start, end=end, tables=tables,
                         kind=kind, chunk_rows=chunk_rows)
        self.speed = parse_speed(speed)
        self.clock: VirtualClock | WallClock = make_clock(clock, self.speed, precise,
                                                          self.scan.start, pace_window)
        self.count = 0                         # events handed to the consumer
        self._source: Iterator[list[Piece]] | None = None
        self._pending: Future[list[Piece] | None] | None = None  # the worker's next step
        self._queued: deque[Piece] = deque()   # read, not handed out yet
        self._ahead: tuple[Piece, list[int]] | None = None    # paced: read, deadlines known
        self._dues: list[int] = []    # paced: the piece's deadlines (monotonic ns)
        self._prev_due = 0            # paced: the previous piece's last deadline
        self._take: Any = None        # makes the piece's next record
        self._piece: Any = None       # unpaced: the piece handed out, and its ts_recv
        self._piece_ts: Any = None    # (made when ``now()`` asks)
        self._start_count = 0         # ``count`` when the piece began
        self._n = 0                   # records in the piece
        self._maker = RecordMaker(self.scan.venue)
        self._read_ahead = read_ahead   # False: each step is read on the loop, when needed
        self._events: AsyncGenerator[Any, None] | None = None   # see __aiter__
        self._done = False

    # -- Feed protocol ---------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done = True
        events, self._events = self._events, None
        if events is not None:
            try:
                await events.aclose()
            except RuntimeError:    # another task is inside it: it ends when it wakes
                pass
        pending, self._pending = self._pending, None
        if pending is not None:
            # The worker thread cannot be interrupted: let it finish its step.
            await asyncio.gather(asyncio.wrap_future(pending), return_exceptions=True)
        source, self._source = self._source, None
        if source is not None and hasattr(source, "close"):
            source.close()
        self.clock.close()
        self._settle_clock()                    # now() goes on saying the last event's time
        self._dues, self._take, self._start_count, self._n = [], None, self.count, 0
        self._piece = self._piece_ts = None
        self._ahead = None
        self._queued.clear()

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        """The events, from where the last ``async for`` stopped. One async generator
        hands them out while it lives: its state is in locals, not attributes (per event:
        one clock reading, one lateness ``append``, the record, one ``count`` store).
        A generator ended by an exception (a cancel while it slept, say) has left its
        place in the feed's attributes, and the next call starts another from there."""
        events = self._events
        if events is None or getattr(events, "ag_frame", None) is None:   # none, or ended
            events = self._events = self._paced() if self.clock.paced else self._unpaced()
        return events

    async def __anext__(self) -> Any:
        """The next event (``anext(feed)``; ``async for`` takes the faster way)."""
        return await self.__aiter__().__anext__()

    def now(self) -> int:
        """The replay clock's time (ns): see ``replay.clock``. Unpaced: the ``ts_recv``
        of the last event handed out (the clock is moved once a piece, not per event)."""
        i = self.count - self._start_count
        if i and not self.clock.paced:
            if self._piece_ts is None:
                self._piece_ts = self._piece.ts_recv()
            return int(self._piece_ts[i - 1])
        return self.clock.now()

    @property
    def behind_ns(self) -> int:
        """How far a paced replay is behind its schedule, in wall-clock ns: how long the
        next event has been due without being taken (a slow consumer), else how late
        the last one was handed out. 0 on schedule, and always for unpaced feeds."""
        clock = self.clock
        if not isinstance(clock, WallClock) or not clock.anchored:
            return 0
        i = self.count - self._start_count
        if i < self._n:
            return max(0, time.monotonic_ns() - self._dues[i])
        return clock.lateness.last_ns

    @property
    def lateness(self) -> Lateness | None:
        """Statistics of how late each event was handed out (paced feeds; else None):
        ``max_ns`` is the most the replay was ever behind."""
        return self.clock.lateness if isinstance(self.clock, WallClock) else None

    async def _paced(self) -> AsyncGenerator[Any, None]:
        clock = self.clock
        assert isinstance(clock, WallClock)
        append = clock.lateness.values.append     # fold() keeps the same array
        unslept = 0     # events handed out since the feed last slept (counted a piece at a time)
        while self.count - self._start_count < self._n or await self._refill():
            dues, take, count = self._dues, self._take, self.count
            first = count - self._start_count
            woke = -1       # where in the piece the feed last slept (before that event)
            for i in range(first, self._n):
                due = dues[i]
                now = _monotonic_ns()
                if now < due:
                    woke = i
                    prev_due = dues[i - 1] if i else self._prev_due
                    if self._ahead is None:
                        self._look_ahead(clock)        # time to spare: not at the boundary
                    while now < due:
                        # Cancelled while sleeping: the event stays next, nothing is lost.
                        await clock.pause(due, prev_due)
                        if self._done and not self._n:
                            return                     # the feed was exited meanwhile
                        now = _monotonic_ns()
                append(now - due)
                ev = take()
                count += 1
                self.count = count
                yield ev
            unslept = self._n - woke if woke >= 0 else unslept + self._n - first
            if unslept >= self._n:      # a piece's worth behind schedule: other tasks run too
                unslept = 0
                await asyncio.sleep(0)
                if self._done and not self._n:
                    return

    async def _unpaced(self) -> AsyncGenerator[Any, None]:
        while self.count - self._start_count < self._n or await self._refill():
            take, count = self._take, self.count
            for _ in range(count - self._start_count, self._n):
                ev = take()
                count += 1
                self.count = count
                yield ev
            # Once a piece: other tasks run. Before the next event: a cancel loses nothing.
            await asyncio.sleep(0)
            if self._done and not self._n:
                return                                 # the feed was exited meanwhile

    # -- reading -----------------------------------------------------------------------
    def _start(self) -> None:
        if self._source is None and not self._done:
            self._source = self.scan.iter_piece_runs(min(PIECE_ROWS, self.scan.chunk_rows))
            self._pending = self._read()

    def _read(self) -> Future[list[Piece] | None]:
        """The next step's pieces: on the reader thread, or read here and now
        (``read_ahead``)."""
        if self._read_ahead:
            return _reader().submit(self._pull)
        done: Future[list[Piece] | None] = Future()
        try:
            done.set_result(self._pull())
        except Exception as exc:  # noqa: BLE001 - raised where a read-ahead raises it
            done.set_exception(exc)
        return done

    def _pull(self) -> list[Piece] | None:
        source = self._source
        return None if source is None else next(source, None)

    def _look_ahead(self, clock: WallClock) -> None:
        """Take the next piece now and work out its deadlines, if it is read (the feed
        is about to sleep: at the piece boundary this would delay events due)."""
        if not self._queued:
            pending = self._pending
            if pending is None or not pending.done() or pending.exception() is not None:
                return                              # not read yet, or _refill raises it
            pieces = pending.result()
            if pieces is None:
                return                              # the end: _refill's
            self._queue(pieces)
            if not self._queued:
                return
        piece = self._queued.popleft()
        self._ahead = piece, clock.deadlines(piece.ts_recv())

    async def _refill(self) -> bool:
        """Take the next piece with rows (True), or find the replay ended (False)."""
        self._start()
        if self._ahead is not None:
            self._use(*self._ahead)
            self._ahead = None
            return True
        while not self._queued:
            if self._done or self._pending is None:
                self._done = True
                return False
            pending = self._pending
            try:
                if not pending.done():      # the worker is behind: the loop waits for it
                    # shield: cancelling the consumer must not cancel the worker's read.
                    await asyncio.shield(asyncio.wrap_future(pending))
                pieces = pending.result()
            except asyncio.CancelledError:
                raise
            except BaseException:
                self._pending = None
                self._done = True
                raise
            if pieces is None:
                self._pending = None
                self._done = True
                return False
            self._queue(pieces)
        piece = self._queued.popleft()
        clock = self.clock
        dues = clock.deadlines(piece.ts_recv()) if isinstance(clock, WallClock) else []
        self._use(piece, dues)
        return True

    def _queue(self, pieces: list[Piece]) -> None:
        """Queue a finished read's pieces and start reading the step after (read ahead)."""
        self._pending = self._read()
        self._queued.extend(pieces)

    def _settle_clock(self) -> None:
        """Unpaced, before the piece handed out goes: move the clock to its last event
        handed out (``now()`` reads it from the piece until then)."""
        if self._n and not self.clock.paced:
            self.clock.advance(self.now())

    def _use(self, piece: Piece, dues: list[int]) -> None:
        """Hand ``piece`` out next (``dues``: its deadlines, paced feeds)."""
        clock = self.clock
        if isinstance(clock, WallClock):
            self._prev_due = self._dues[-1] if self._dues else 0
            self._dues = dues
            clock.lateness.make_room(len(dues))
            # made one cut at a time (each when the last is used up, as RecordMaker
            # wants): a cut's values are gathered at its first event, ~0.2 ms cold
            records: Iterator[Any] = chain.from_iterable(
                map(self._maker.make, piece.split(RECORD_ROWS)))
        else:
            self._settle_clock()
            self._piece, self._piece_ts = piece, None
            records = iter(self._maker.make(piece))
        self._take = records.__next__
        self._start_count, self._n = self.count, len(piece)

    # -- unpaced extras ---------------------------------------------------------------
    def iter_batches(self, columns: Sequence[str] | None = None,
                     batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
        """The same range as sorted Arrow batches, unpaced (``Scan.iter_batches``)."""
        return self.scan.iter_batches(columns, batch_rows)


__all__ = ["RawRow", "ReplayFeed"]
