"""``tickrec record``: one feed from the command line, with signals and progress."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from recorder.live import Recorder
from schemas.venues import get

PROGRESS_EVERY_S = 10.0


def credentials_from_env(venue: str) -> dict[str, str]:
    """The venue's credentials from their TICKREC_<VENUE>_* environment variables."""
    return {key: os.environ[env] for key, env in get(venue).credentials.items()
            if os.environ.get(env)}


def progress_line(rec: Recorder, started: float) -> str:
    cap = rec.capture
    if cap is None:
        return f"{rec.feed}: starting"
    n = cap.norm
    return (f"{rec.feed}: {time.monotonic() - started:.0f}s, {cap.frames_in} frames in, "
            f"{n.rows} rows, {n.gaps} gaps ({n.rejected} rejected), "
            f"{rec.connections} connection(s)")


def record_feed(venue: str, url: str, symbols: list[str], root: Path, *,
                duration: float | None = None, feed: str | None = None,
                flush_seconds: float = 30.0,
                progress: Callable[[str], None] = lambda _: None) -> str:
    """Record until SIGINT/SIGTERM, ``duration`` or a permanent error; returns a summary."""
    rec = Recorder(venue, url, symbols, root, feed=feed, credentials=credentials_from_env(venue),
                   flush_seconds=flush_seconds)
    started = time.monotonic()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, rec.stop)

        async def reporter() -> None:
            while True:
                await asyncio.sleep(PROGRESS_EVERY_S)
                progress(progress_line(rec, started))

        task = asyncio.create_task(reporter())
        try:
            await rec.run(duration)
        finally:
            task.cancel()

    rec.on_notice = progress
    asyncio.run(main())
    return "recorded " + progress_line(rec, started).split(": ", 1)[1]
