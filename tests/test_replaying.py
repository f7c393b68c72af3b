"""``tickrec replay``'s output (tickrec.replaying): the events as JSON lines, written
in blocks, each line out when its event is due, and a reader that left stops it."""

from __future__ import annotations

import asyncio
import io
import random
import time
from pathlib import Path
from typing import Any, Self

import pytest

import replay
from replay.feed import ReplayFeed
from replay.scan import Scan
from tests.test_replay import VENUE, make_events, make_raw, order_key, write_store
from tickrec.replaying import BLOCK_LINES, replay_to


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    root = tmp_path_factory.mktemp("store")
    events = make_events()
    write_store(root, events, random.Random(7), files=2, raw=make_raw())
    return root, sorted(events, key=order_key)


class Out(io.BytesIO):
    """Keeps each write and when it came; ``broken`` makes writes fail as a closed pipe."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        self.writes: list[tuple[float, bytes]] = []
        self.broken = broken

    def write(self, data: Any) -> int:
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")
        self.writes.append((time.monotonic(), bytes(data)))
        return super().write(data)


def lines_of(events: list[Any]) -> bytes:
    return b"".join(e.to_json().encode("utf-8") + b"\n" for e in events)


async def test_unpaced_lines_are_the_events_written_in_blocks(
        store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    out = Out()
    assert await replay_to(ReplayFeed(root, VENUE, speed="max", chunk_rows=4), out,
                           False) is None
    assert out.getvalue() == lines_of(expected)
    # a write per piece (of at most 4 events: the feed lets the loop run once a piece)
    pieces = sum(1 for _ in Scan(root, VENUE).iter_pieces(4))
    assert len(out.writes) <= pieces + 1 < len(expected) // 2


async def test_a_paced_line_is_out_while_the_next_event_is_not_due(
        store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    out = Out()
    # the first ts_recv holds 6 events; at this speed the 7th is hours away
    task = asyncio.create_task(replay_to(replay.open(root, VENUE, speed=0.001), out, False))
    for _ in range(500):
        if out.writes:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not task.done()
    assert out.getvalue() == lines_of(expected[:6])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_reader_gone_stops_the_replay(store: tuple[Path, list[Any]]) -> None:
    root, expected = store
    out = Out(broken=True)
    feed = ReplayFeed(root, VENUE, speed="max", chunk_rows=2)
    with pytest.raises(BrokenPipeError):
        await replay_to(feed, out, False)
    assert feed.count <= 4 < len(expected)     # it stopped at the first block's write


async def test_a_block_is_written_when_full_even_if_the_loop_never_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Never:
        """A feed that hands out events without ever letting the loop run."""
        count = 0

        async def __aenter__(self) -> Self:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

        def __aiter__(self) -> Self:
            return self

        async def __anext__(self) -> Any:
            if self.count == BLOCK_LINES * 2 + 1:
                raise StopAsyncIteration
            self.count += 1
            return self

        def to_json(self) -> str:
            return str(self.count)

    out = Out()
    await replay_to(Never(), out, False)
    assert [len(w.splitlines()) for _, w in out.writes] == [BLOCK_LINES, BLOCK_LINES, 1]
    assert out.getvalue().splitlines()[-1] == str(BLOCK_LINES * 2 + 1).encode()


async def test_the_digest_is_of_the_lines(store: tuple[Path, list[Any]]) -> None:
    import hashlib
    root, expected = store
    line = await replay_to(replay.open(root, VENUE, clock="virtual"), Out(), True)
    want = hashlib.sha256(lines_of(expected).rstrip(b"\n")).hexdigest()
    assert line == f"{want}  {len(expected)} events"
