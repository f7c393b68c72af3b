"""A sub-millisecond sleep for one event loop: a Linux timerfd watched by ``add_reader``.

asyncio's own timers wake on whole milliseconds (the selector rounds the epoll
timeout up), so a sleep toward a deadline 20 µs away lasts about 1.05 ms. A
timerfd armed at an absolute ``CLOCK_MONOTONIC`` time (the clock of
``time.monotonic_ns`` on Linux) becomes readable at that time to the microsecond,
and it is registered with the loop once, so each sleep costs one
``timerfd_settime`` call, one ``read`` and one future (about what an
``asyncio.sleep`` costs: docs/benchmarks.md, "Pacing").

``TimerFd.open(loop)`` returns None where this is not available: not Linux, no
``timerfd_create`` in the C library, or a loop without ``add_reader`` (the
Proactor loop on Windows); callers then sleep with ``asyncio.sleep``.
``sleep_until`` never returns before its deadline. ``close()`` releases the
descriptor; a timer dropped without ``close()`` is closed when it is collected.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
import weakref
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1


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


class TimerFd:
    """One timerfd registered with one loop; one sleeper at a time (see module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 settime: Callable[..., int]) -> None:
        self.loop = loop
        self.fd = fd
        self._settime = settime
        self._spec = _Itimerspec()            # this timer's own: settime releases the GIL
        self._waiter: asyncio.Future[None] | None = None
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
        return self._waiter is not None

    async def sleep_until(self, when_ns: int) -> None:
        """Return at monotonic ``when_ns`` or after, never before."""
        try:
            while time.monotonic_ns() < when_ns:
                fut = self._waiter = self.loop.create_future()
                self._arm(when_ns)
                await fut
        finally:
            self._waiter = None

    def _arm(self, when_ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(when_ns, 1_000_000_000)
        if self._settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)             # clears the expiry; re-arming clears it too
        except BlockingIOError:
            return                          # re-armed since epoll saw it: not yet due
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

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
