"""The Feed protocol: what a strategy holds, live or replayed.

    async with <feed> as feed:
        async for event in feed:      # schemas.events records (Trade, Book, ...)
            ... feed.now() ...

Implemented by ``recorder.live.LiveFeed`` (``recorder.connect``) and
``replay.feed.ReplayFeed`` (``replay.open``), so swapping live for replay is a
one-line change. ``now()`` is the feed's own notion of the current time in int
nanoseconds since the epoch, UTC: the wall clock for a live feed, the replay
clock for a replay (recorded time scaled by the speed, or the current event's
``ts_recv`` on a virtual clock). Strategies that ask ``feed.now()`` instead of
``time.time_ns()`` behave the same in a backtest as live.

``runtime_checkable`` makes ``isinstance(x, Feed)`` check that the four members
exist (not their signatures).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Feed(Protocol):
    async def __aenter__(self) -> Any:
        """Start the feed (connect / open the store); returns the feed."""

    async def __aexit__(self, *exc: object) -> Any:
        """Stop the feed and release everything it holds."""

    def __aiter__(self) -> AsyncIterator[Any]:
        """The events, in order, until the feed ends."""

    def now(self) -> int:
        """The feed's current time, int ns since the epoch (UTC)."""


__all__ = ["Feed"]
