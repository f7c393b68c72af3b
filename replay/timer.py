"""A sub-millisecond sleep for one event loop: a Linux timerfd watched by ``add_reader``.

asyncio's own timers wake on whole milliseconds (the selector rounds the epoll
timeout up), so a sleep toward a deadline 20 µs away lasts about 1.05 ms. A
timerfd armed at an absolute ``CLOCK_MONOTONIC`` time (the clock of
``time.monotonic_ns`` on Linux) becomes readable at that time to the microsecond,
and it is registered with the loop once.

A wake-up is what pacing spends its CPU on (docs/benchmarks.md, "Pacing"), so
this one is kept to one loop pass and no system call beyond the ``read``:

- ``wake(earliest, latest, period)`` returns an awaitable done at the timer's
  next expiry, which is in ``[earliest, latest]``: a timer already due to
  expire in that range is left as it is (no ``timerfd_settime``), otherwise it
  is armed at ``latest``. With a ``period`` it then keeps expiring every
  ``period`` ns (a paced feed dense enough to wait again within a period
  needs no re-arming); an expiry that finds nobody waiting disarms it.
- The awaitable, a ``Wake``, hands the task a future-like object whose
  completion, in the reader callback, runs the waiting task's step there and
  then, where a ``Future`` would schedule it for the loop's next pass (one more
  ``epoll_wait`` and loop pass per wake-up).

``TimerFd.open(loop)`` returns None where this is not available: not Linux, no
``timerfd_create`` in the C library, or a loop without ``add_reader`` (the
Proactor loop on Windows); callers then sleep with ``asyncio.sleep``. A wake
is never done before ``earliest``. One task waits on a timer at a time
(``busy``). ``close()`` releases the descriptor; a timer dropped without
``close()`` is closed when it is collected.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import os
import sys
import weakref
from collections.abc import Callable, Generator
from typing import Any

CLOCK_MONOTONIC = 1
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1
NS = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc_timerfd() -> tuple[Callable[[], int], Callable[..., int]] | None:
    """``(create, settime)`` through ctypes, or None where the C library has no timerfd."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create_fd, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None

    def create() -> int:
        fd = create_fd(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        return int(fd)

    return create, settime


_TIMERFD = _libc_timerfd()


class Wake:
    """What a task awaits to sleep on a ``TimerFd`` (``await timer.wake(...)``).

    It hands the task a future-like ``_Waiter`` (asyncio's tasks accept any object
    with ``_asyncio_future_blocking``) whose ``fire()`` runs the waiting task's step
    at once, in the caller. A ``Wake`` itself is a plain awaitable, so
    ``asyncio.ensure_future`` and the like wrap it in a task as any awaitable.
    """

    __slots__ = ("_waiter",)

    def __init__(self, waiter: _Waiter) -> None:
        self._waiter = waiter

    def __await__(self) -> Generator[_Waiter, None, None]:
        waiter = self._waiter
        waiter._asyncio_future_blocking = True
        yield waiter                    # the task registers its wake-up, fire() calls it


class _Waiter:
    """The future-like side of a ``Wake``, reused for every sleep of its timer. A
    cancelled wait ends through a cancelled ``Future`` of its own, so the waiter is
    free again at once."""

    _asyncio_future_blocking = False

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callback: Callable[[Any], object] | None = None   # the waiting task's wake-up
        self._context: contextvars.Context | None = None

    @property
    def waiting(self) -> bool:
        return self._callback is not None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(self, fn: Callable[[Any], object], *,
                          context: contextvars.Context | None = None) -> None:
        self._callback, self._context = fn, context

    def result(self) -> None:
        """Done without a value (the task calls this in its wake-up)."""

    def cancel(self, msg: Any = None) -> bool:
        """The task is cancelled: wake it with a cancelled future on the next loop pass."""
        callback, self._callback = self._callback, None
        if callback is None:
            return False
        cancelled = self._loop.create_future()
        cancelled.cancel(msg)
        cancelled.add_done_callback(callback, context=self._context)
        return True

    def fire(self) -> bool:
        """Resume the waiting task now; False when nobody waits."""
        callback, self._callback = self._callback, None
        if callback is None:
            return False
        context = self._context
        if context is None:
            callback(self)
        else:
            context.run(callback, self)
        return True


class TimerFd:
    """One timerfd registered with one loop; one sleeper at a time (see module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 settime: Callable[..., int]) -> None:
        self.loop = loop
        self.fd = fd
        self.armed = 0              # times timerfd_settime was called
        self._settime = settime
        self._spec = _Itimerspec()            # this timer's own: settime releases the GIL
        self._next = 0              # the next expiry, monotonic ns (0: disarmed)
        self._period = 0            # ns between expiries (0: one expiry)
        self._waiter = _Waiter(loop)
        self._wake = Wake(self._waiter)
        self._finalizer = weakref.finalize(self, _release, loop, fd)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop) -> TimerFd | None:
        """A timer on ``loop``, or None where there is none to be had (see module doc)."""
        if _TIMERFD is None:
            return None
        create, settime = _TIMERFD
        try:
            fd = create()
        except OSError:
            return None
        timer = cls(loop, fd, settime)
        try:
            loop.add_reader(fd, _on_readable, weakref.ref(timer))
        except (NotImplementedError, AttributeError, RuntimeError):
            timer._finalizer.detach()
            os.close(fd)
            return None
        return timer

    @property
    def busy(self) -> bool:
        """Someone is sleeping on this timer (a second sleeper must use another way)."""
        return self._waiter.waiting

    def wake(self, earliest_ns: int, latest_ns: int, period_ns: int = 0) -> Wake:
        """Await the result: done at the next expiry, in ``[earliest_ns, latest_ns]``
        (monotonic ns; see module doc). Raises OSError if the timer cannot be armed."""
        if not earliest_ns <= self._next <= latest_ns or period_ns != self._period:
            self._arm(latest_ns, period_ns)
        return self._wake

    def _arm(self, when_ns: int, period_ns: int) -> None:
        """Expire at ``when_ns`` and then every ``period_ns``; ``when_ns`` 0 disarms."""
        spec = self._spec
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(when_ns, NS)
        spec.it_interval.tv_sec, spec.it_interval.tv_nsec = divmod(period_ns, NS)
        self._next, self._period = 0, 0           # unknown until settime succeeds
        self.armed += 1
        if self._settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._next, self._period = when_ns, period_ns

    def _fired(self) -> None:
        try:
            expiries = os.read(self.fd, 8)  # how many since the last read; clears the fd
        except BlockingIOError:
            return                          # re-armed since epoll saw it: not yet due
        if self._period:
            self._next += int.from_bytes(expiries, sys.byteorder) * self._period
        else:
            self._next = 0
        if not self._waiter.fire() and self._period:
            try:
                self._arm(0, 0)             # nobody waits: stop the period
            except OSError:
                pass                        # the next wake() re-arms it (or falls back)

    def close(self) -> None:
        self._finalizer()


def _on_readable(ref: weakref.ref[TimerFd]) -> None:
    timer = ref()
    if timer is not None:
        timer._fired()


def _release(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Unregister ``fd`` from ``loop`` (at once, or on the loop's thread) and close it."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not loop and loop.is_running():
        try:
            loop.call_soon_threadsafe(_release, loop, fd)
            return
        except RuntimeError:                # closed meanwhile
            pass
    if not loop.is_closed():
        loop.remove_reader(fd)
    os.close(fd)
