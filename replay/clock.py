"""Pacing clocks: when the replay releases each event, and what ``now()`` is.

Every clock has ``now() -> int`` (ns since the epoch, UTC, in *recorded* time),
``release(ts_ns) -> bool`` (True: the event recorded at ``ts_ns`` is due and is
released now; False: not yet, ``await sleep()`` and ask again) and ``async
wait_until(ts_ns)`` (both, until it is due). The replay server calls
``release`` for every event and sleeps only when it says no, so an event already
due costs one plain call, no coroutine. ``ReplayFeed`` does the same with less:
``WallClock.deadlines`` gives a piece's deadlines in one step, the feed compares
each with one clock reading, appends the lateness itself and sleeps with
``pause(due, prev_due)`` (what ``sleep`` does for ``release``). ``paced`` says
whether a clock can ever say no; the feed skips it for unpaced clocks and calls
``advance(ts_ns)`` instead.

- ``WallClock(speed)``: the first event anchors (``ts0`` ↔ ``time.monotonic``
  at that moment); the event recorded at ``ts`` is released at
  ``anchor + (ts - ts0) / speed``. Lateness never accumulates: a consumer that
  falls behind gets the next events at once until it is back on schedule (the
  recorded spacing is kept on average, the schedule is never shifted). ``now()``
  is ``ts0 + elapsed * speed``. ``lateness`` holds the statistics (how late each
  release was); ``close()`` releases the timer (``ReplayFeed`` does it on exit).
- Default mode: an event not yet due is released at most ``window`` (default
  1.35 ms: a p99 within 1.5 ms, leaving 0.15 ms for the loop to wake) after its
  deadline, so the events falling due in that window go out in
  the same wake-up; when the previous event was at least ``window`` earlier (a
  sparse feed: nothing to share a wake-up with) it is released at its
  deadline. The sleep is a timerfd on the running loop (``replay.timer``),
  which wakes to the microsecond. While events stay dense the timer expires
  every ``window`` on its own (no re-arming per wake-up): a sleep whose
  deadline's window holds the timer's next expiry waits for that expiry, any
  other is armed at ``deadline + window`` (dense) or at the deadline (sparse).
  So an event is released at most ``window`` plus the loop's wake-up latency
  after its deadline, or right after the events before it. Where there is no
  timerfd (not Linux, a loop without ``add_reader``) or two tasks wait on one
  clock at once, the clock sleeps with ``asyncio.sleep``, whose timers wake on
  whole milliseconds (up to ~1 ms late).
- ``precise=True``: sleeps (``asyncio.sleep``) until ``spin`` seconds before
  the deadline and then spins, yielding to the loop (``asyncio.sleep(0)``)
  until it is due, which costs CPU but brings lateness down to tens of
  microseconds.
- ``VirtualClock``: never sleeps; ``now()`` is the ``ts_recv`` of the event
  being released (backtests; also what ``speed="max"`` uses).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Sequence
from typing import Protocol

import numpy as np

from replay.timer import TimerFd
from schemas.errors import ConfigError

SPIN_S = 0.001
WINDOW_S = 0.00135
LATENESS_WINDOW = 65_536
_NEVER_NS = 1 << 62               # later than any monotonic time (146 years of uptime)
_INT64_SAFE = 1 << 62             # |(ts - ts0) * mul| and div below this fit numpy's int64
_monotonic_ns = time.monotonic_ns     # bound once: release() reads it for every event


class Clock(Protocol):
    paced: bool

    def now(self) -> int: ...

    def advance(self, ts_ns: int) -> None: ...

    def release(self, ts_ns: int) -> bool: ...

    def sleep(self) -> Awaitable[None]: ...

    async def wait_until(self, ts_ns: int) -> None: ...

    def close(self) -> None: ...


class Lateness:
    """How late releases were: exact count/mean/max, p50/p99 over the last 65,536.

    Values are nanoseconds (``int``) of monotonic time after the deadline.
    ``values`` holds the recent ones, oldest first (between ``window`` and twice
    as many once that many were added; older ones are folded into the totals).
    ``WallClock`` and ``ReplayFeed`` append to it directly (after ``make_room``),
    ``add`` is the same with its checks.
    """

    def __init__(self, window: int = LATENESS_WINDOW) -> None:
        self.window = window
        self.values = array("q")
        self.full = 2 * window         # fold() when ``values`` reaches this length
        self._folded = 0               # how many values fold() took out of ``values``
        self._folded_total = 0
        self._folded_max = 0

    def add(self, late_ns: int) -> None:
        values = self.values
        values.append(max(0, late_ns))                    # early counts as on time
        if len(values) >= self.full:
            self.fold()

    def make_room(self, n: int) -> None:
        """Fold first if ``n`` more values, appended to ``values`` directly, would reach
        ``full`` (so ``values`` stays under ``full`` for ``n`` up to ``window``)."""
        if len(self.values) + n >= self.full:
            self.fold()

    def fold(self) -> None:
        """Keep the last ``window`` values; count the older ones into the totals (numpy
        over the array's buffer: a Python ``sum`` and ``max`` of 65,536 values took
        ~80 ns an event, once every 65,536 events)."""
        values = self.values
        cut = len(values) - self.window
        if cut <= 0:
            return
        old = np.frombuffer(values, dtype=np.int64, count=cut)
        most = int(old.max())
        # exact: int64 cannot overflow while cut * most < 2^63 (hours of lateness each)
        total = int(old.sum()) if most < _INT64_SAFE // cut else sum(old.tolist())
        del old                         # the array cannot shrink while its buffer is lent
        self._folded += cut
        self._folded_total += total
        self._folded_max = max(self._folded_max, most)
        del values[:cut]

    @property
    def count(self) -> int:
        return self._folded + len(self.values)

    @property
    def total_ns(self) -> int:
        return self._folded_total + sum(self.values)

    @property
    def max_ns(self) -> int:
        return max(self._folded_max, max(self.values, default=0))

    @property
    def last_ns(self) -> int:
        """The latest release's lateness (0 before any)."""
        return self.values[-1] if self.values else 0

    def percentile(self, q: float) -> int:
        """The ``q`` quantile (0..1, nearest rank) of the recent window; 0 when empty."""
        data = sorted(self.values[-self.window:])
        if not data:
            return 0
        return data[min(len(data) - 1, max(0, round(q * (len(data) - 1))))]

    @property
    def p50_ns(self) -> int:
        return self.percentile(0.5)

    @property
    def p99_ns(self) -> int:
        return self.percentile(0.99)

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.count if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """Milliseconds, for a report line."""
        return {"count": self.count, "p50_ms": self.p50_ns / 1e6, "p99_ms": self.p99_ns / 1e6,
                "max_ms": self.max_ns / 1e6, "mean_ms": self.mean_ns / 1e6}


class VirtualClock:
    """No sleeping; ``now()`` is the current event's ``ts_recv`` (``start`` before any)."""

    paced = False

    def __init__(self, start: int | None = None) -> None:
        self._now = start if start is not None else 0

    def now(self) -> int:
        return self._now

    def advance(self, ts_ns: int) -> None:
        self._now = ts_ns

    def release(self, ts_ns: int) -> bool:
        self._now = ts_ns
        return True                     # always due: sleep() is never needed

    def sleep(self) -> Awaitable[None]:
        return asyncio.sleep(0)

    async def wait_until(self, ts_ns: int) -> None:
        self._now = ts_ns

    def close(self) -> None:
        """Nothing to release."""


class WallClock:
    """Release recorded times at ``speed`` × their recorded spacing (see module doc)."""

    paced = True

    def __init__(self, speed: float = 1.0, *, precise: bool = False, spin: float = SPIN_S,
                 window: float = WINDOW_S, start: int | None = None) -> None:
        if not speed > 0 or speed == float("inf"):
            raise ConfigError(f"bad speed {speed!r}: expected a positive finite number")
        if not 0 <= window < 1:
            raise ConfigError(f"bad window {window!r}: expected seconds in [0, 1)")
        self.speed = float(speed)
        # wall ns = recorded ns * _mul // _div, exactly (speed = _div / _mul): integer
        # arithmetic is cheaper per event than int(x / speed)
        self._div, self._mul = self.speed.as_integer_ratio()
        self.precise = precise
        self.spin_ns = int(spin * 1e9)
        self.window_ns = int(window * 1e9)
        self.lateness = Lateness()
        self._late = self.lateness.values
        self.wakeups = 0          # sleeps taken (each costs one or more event-loop passes)
        self._start = start if start is not None else 0
        self._ts0: int | None = None
        self._wall0 = 0           # monotonic ns at the anchor
        # see anchor(); until then every deadline lies past any monotonic time, so the
        # first release() takes its "not yet" branch, which anchors (no check per event)
        self._offset = _NEVER_NS * self._div
        self._prev_due = 0        # the previous event's deadline (monotonic ns)
        self._due = 0             # the deadline release() last refused (monotonic ns)
        self._full = self.lateness.full
        self._timer: TimerFd | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None   # the loop _timer is for

    @property
    def anchored(self) -> bool:
        return self._ts0 is not None

    def anchor(self, ts_ns: int) -> None:
        """Make ``ts_ns`` correspond to this instant (done by the first event)."""
        self._ts0 = ts_ns
        self._wall0 = self._prev_due = time.monotonic_ns()
        # deadline = wall0 + (ts - ts0) * mul // div = (ts * mul + _offset) // div, exactly
        self._offset = self._wall0 * self._div - ts_ns * self._mul

    def now(self) -> int:
        """Replay time: ``ts0 + elapsed * speed`` (``start`` before the first event)."""
        if self._ts0 is None:
            return self._start
        return self._ts0 + int((time.monotonic_ns() - self._wall0) * self.speed)

    def deadline(self, ts_ns: int) -> int:
        """The monotonic ns at which ``ts_ns`` is due."""
        assert self._ts0 is not None
        return (ts_ns * self._mul + self._offset) // self._div

    def deadlines(self, ts_ns: np.ndarray | Sequence[int]) -> list[int]:
        """``deadline`` of each of ``ts_ns`` (best an int64 array: a piece's
        ``ts_recv``), in one step; the first call anchors the clock at ``ts_ns[0]``
        if no event has. The caller releases an event once ``monotonic_ns() >= its
        deadline``, appends ``monotonic_ns() - deadline`` to ``lateness.values``
        (``lateness.make_room`` first) and, while it is not due, ``await pause(deadline,
        the previous event's deadline)``. The feed calls it on the event loop for every
        piece, often right after a wake-up (cold caches): one numpy expression."""
        if not len(ts_ns):
            return []
        if self._ts0 is None:
            self.anchor(int(ts_ns[0]))
        assert self._ts0 is not None
        since = np.asarray(ts_ns, dtype=np.int64) - self._ts0
        mul, div = self._mul, self._div
        if max(div, mul) < _INT64_SAFE and (mul == 1 or mul * int(np.abs(since).max()) < _INT64_SAFE):
            # wall0 + floor((ts - ts0) * mul / div) = deadline(ts), exactly (numpy floors).
            # An integer speed (mul 1) cannot overflow: no reduction to check it.
            deadlines: list[int] = ((since * mul if mul != 1 else since) // div
                                    + self._wall0).tolist()
            return deadlines
        offset = self._offset                   # a speed like 0.3: ratios of big ints
        return [(int(ts) * mul + offset) // div for ts in ts_ns]

    def advance(self, ts_ns: int) -> None:      # pragma: no cover - the feed awaits instead
        if self._ts0 is None:
            self.anchor(ts_ns)

    def release(self, ts_ns: int) -> bool:
        """True if the event recorded at ``ts_ns`` is due: it is released now and its
        lateness recorded. False if not yet (never early): ``await sleep()``, ask again."""
        # Called for every paced event: attribute loads and calls are kept to the least.
        due = (ts_ns * self._mul + self._offset) // self._div          # = deadline(ts_ns)
        now = _monotonic_ns()
        if now < due:
            if self._ts0 is None:       # the first event: not anchored yet (see __init__)
                self.anchor(ts_ns)
                self.lateness.add(0)
                return True
            self._due = due
            return False
        self._prev_due = due
        late = self._late               # lateness.add inlined: now >= due here
        late.append(now - due)
        if len(late) >= self._full:
            self.lateness.fold()
        return True

    def sleep(self) -> Awaitable[None]:
        """Sleep toward the deadline of the event ``release`` last refused (``pause``)."""
        return self.pause(self._due, self._prev_due)

    def pause(self, due: int, prev_due: int) -> Awaitable[None]:
        """Sleep toward ``due`` (monotonic ns), the deadline of an event not yet due
        whose predecessor's deadline was ``prev_due`` (dense or sparse: see the module
        doc for how long). May end before it in precise mode or on ``asyncio.sleep``:
        the caller reads the clock again."""
        self.wakeups += 1
        if not self.precise:
            timer = self._loop_timer()
            if timer is not None and not timer.busy:
                window = self.window_ns
                latest = due + window if due - prev_due < window else due
                try:
                    return timer.wake(due, latest, window)
                except OSError:         # timerfd_settime refused: asyncio.sleep from now on
                    self.close()
        left = due - time.monotonic_ns()
        spin = self.spin_ns if self.precise else 0
        return asyncio.sleep((left - spin) / 1e9 if left > spin else 0)

    async def wait_until(self, ts_ns: int) -> None:
        """Return once ``ts_ns`` is due (``release`` and ``sleep`` until it is)."""
        while not self.release(ts_ns):
            await self.sleep()

    def close(self) -> None:
        """Release the timer (the clock still works: it opens another if it sleeps again)."""
        timer, self._timer, self._timer_loop = self._timer, None, None
        if timer is not None:
            timer.close()

    def _loop_timer(self) -> TimerFd | None:
        """The timerfd on the running loop (opened on first use), or None if there is none."""
        loop = asyncio.get_running_loop()
        if loop is not self._timer_loop:
            self.close()
            self._timer, self._timer_loop = TimerFd.open(loop), loop
        return self._timer


def make_clock(clock: str, speed: float | None, precise: bool = False,
               start: int | None = None, window: float = WINDOW_S) -> VirtualClock | WallClock:
    """``clock`` is "wall" or "virtual"; ``speed`` None means "max" (never waits)."""
    if clock not in ("wall", "virtual"):
        raise ConfigError(f"bad clock {clock!r}: expected 'wall' or 'virtual'")
    if clock == "virtual" or speed is None:
        return VirtualClock(start)
    return WallClock(speed, precise=precise, start=start, window=window)
