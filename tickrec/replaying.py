"""``tickrec replay``: a replay feed to JSON lines or to its digest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from replay.digest import Digest


async def replay_to(feed: Any, emit: Callable[[str], None], digest_only: bool) -> str | None:
    """Stream ``feed`` to ``emit`` as JSON lines; with ``digest_only`` return
    ``"<sha256>  <n> events"`` instead (the digest of ``replay.digest``)."""
    digest = Digest()
    async with feed:
        async for ev in feed:
            if digest_only:
                digest.add(ev)
            else:
                emit(ev.to_json())
    return f"{digest.hexdigest()}  {digest.count} events" if digest_only else None
