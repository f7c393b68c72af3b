"""The stream digest: one sha256 over what a replay yields, to prove two replays equal.

``digest(events)`` = sha256 hex of the events' canonical JSON lines
(``event.to_json()``: sorted keys, no spaces, NaN as ``NaN``) joined with
``"\\n"`` (no trailing newline), UTF-8. The empty stream hashes the empty string.
It depends on the events only, never on the pacing: ``tickrec replay --digest``
at any speed, or twice, prints the same value.

``replay_sync`` is the unpaced, synchronous replay (CLI ``--digest``, parse
verification, notebooks).

``replay.digest`` (the package attribute) is the *function*; import this
module's other names with ``from replay.digest import ...``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from typing import Any

from replay.scan import CHUNK_ROWS, Scan


class Digest:
    """Incremental form of ``digest``."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def add(self, event: Any) -> None:
        if self.count:
            self._h.update(b"\n")
        self._h.update(event.to_json().encode("utf-8"))
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def digest(events: Iterable[Any]) -> str:
    d = Digest()
    for ev in events:
        d.add(ev)
    return d.hexdigest()


async def adigest(feed: AsyncIterable[Any]) -> str:
    """``digest`` of an async stream (an entered feed: ``async with`` is the caller's)."""
    d = Digest()
    async for ev in feed:
        d.add(ev)
    return d.hexdigest()


def replay_sync(root: str | os.PathLike[str], venue: str, *,
                symbols: str | Sequence[str] | None = None, start: Any = None, end: Any = None,
                kind: str = "events", tables: str | Sequence[str] | None = None,
                chunk_rows: int = CHUNK_ROWS) -> Iterator[Any]:
    """The replay stream with no pacing, as a plain iterator (same order and filters
    as ``replay.open``). Arguments are checked when this is called (``ConfigError``)."""
    scan = Scan(root, venue, symbols=symbols, start=start, end=end, tables=tables, kind=kind,
                chunk_rows=chunk_rows)
    return iter(scan)


__all__ = ["Digest", "adigest", "digest", "replay_sync"]
