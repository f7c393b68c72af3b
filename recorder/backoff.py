"""Reconnect policy, pure: how long to wait before the next connection attempt."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(floor: float, ceiling: float = 60.0, factor: float = 2.0,
            jitter: float = 0.1, rng: random.Random | None = None) -> Iterator[float]:
    """Delays between connection *attempts*: never below the venue's ``floor``.

    Starts at ``floor`` and doubles up to ``ceiling``; jitter only ever adds,
    so the vendor's minimum spacing holds even with jitter.
    """
    rng = rng or random.Random()
    delay = floor
    while True:
        yield delay + delay * jitter * rng.random()
        delay = min(ceiling, max(floor, delay * factor))
