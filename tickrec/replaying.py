"""``tickrec replay``: a replay feed to JSON lines or to its digest.

Lines are written in blocks, UTF-8 (the bytes the digest hashes, whatever the
locale), and flushed whenever the feed lets the event loop run: before a paced
feed sleeps until its next event is due, so each line is out when its event is
due, and once a piece (4,096 events) when it does not wait. A write and a flush
per line cost more than making the line (``click.echo``: 4.5 µs a line here).
"""

from __future__ import annotations

import asyncio
from typing import Any, BinaryIO

from replay.digest import Digest

BLOCK_LINES = 4096      # lines written at most in one write


class LineOut:
    """Lines to ``out``, a block at a time: written when the loop next runs a
    callback, or when ``BLOCK_LINES`` are waiting. A write error in that callback
    (a reader gone: ``BrokenPipeError``) is raised by the next ``add`` or ``flush``."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lines: list[str] = []
        self.scheduled = False
        self.error: BaseException | None = None
        self.loop = asyncio.get_running_loop()

    def add(self, line: str) -> None:
        lines = self.lines
        lines.append(line)
        if not self.scheduled:
            if self.error is not None:
                raise self.error
            self.scheduled = True
            self.loop.call_soon(self._flush_soon)
        elif len(lines) >= BLOCK_LINES:
            self.flush()

    def _flush_soon(self) -> None:
        self.scheduled = False
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the consumer's next add raises it
            self.error = exc

    def flush(self) -> None:
        if self.error is not None:
            raise self.error
        lines = self.lines
        if lines:
            lines.append("")                    # a newline after the last line too
            block = "\n".join(lines).encode("utf-8")
            lines.clear()
            self.out.write(block)
        self.out.flush()


async def replay_to(feed: Any, out: BinaryIO, digest_only: bool) -> str | None:
    """Stream ``feed`` to ``out`` as JSON lines (``event.to_json()``); with
    ``digest_only`` return ``"<sha256>  <n> events"`` instead (``replay.digest``)."""
    if digest_only:
        digest = Digest()
        async with feed:
            async for ev in feed:
                digest.add(ev)
        return f"{digest.hexdigest()}  {digest.count} events"
    lines = LineOut(out)
    add = lines.add
    async with feed:
        async for ev in feed:
            add(ev.to_json())
    lines.flush()
    return None
