"""Bad input on a real connection: a text frame that is not UTF-8, a frame over the size
limit. The recorder keeps what it could read, says why the connection ended, reconnects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from recorder.live import Recorder
from schemas.venues.alltick import encode_trade
from schemas.venues.base import MAX_FRAME_BYTES
from tests.faults.support import scaled, wait_for
from tests.helpers import read_table
from tickrec.verify import verify

pytestmark = pytest.mark.timeout(scaled(40, 1800))
BAD_UTF8 = b'{"cmd_id":22998,"data":{"code":"AAPL.US\xff\xfe","seq":"2"}}'


async def test_a_text_frame_that_is_not_utf8_is_kept_and_rejected_and_oversize_is_refused(
        tmp_path: Path) -> None:
    connections: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        n = len(connections)
        connections.append(n)
        await ws.send(encode_trade("AAPL.US", 3 * n + 1, 1700000000000, 10.0, 1.0, 1))
        if n == 0:
            await ws.send(BAD_UTF8, text=True)      # RFC 6455: the client must fail with 1007
        elif n == 1:
            await ws.send("x" * (MAX_FRAME_BYTES + 10))     # over max_size: 1009
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        rec = Recorder("alltick", f"ws://127.0.0.1:{port}/", ["AAPL.US"], tmp_path,
                       reconnect_min=0.1, flush_seconds=0.5)
        task = asyncio.create_task(rec.run())
        try:
            assert await wait_for(lambda: len(connections) >= 3, 15)
            assert await wait_for(lambda: rec.capture is not None and rec.capture.frames_in >= 4,
                                  5)
        finally:
            rec.stop()
            await asyncio.wait_for(task, 15)

    raw = [r for r in read_table(tmp_path, "raw") if r["direction"] == "in"]
    bad = [r for r in raw if r["payload"] == BAD_UTF8]
    assert len(bad) == 1 and bad[0]["kind"] == "text"          # kept byte for byte
    [rejected] = [g for g in read_table(tmp_path, "gaps") if g["kind"] == "rejected"]
    assert (rejected["session"], rejected["frame"]) == (bad[0]["session"], bad[0]["frame"])
    sessions = read_table(tmp_path, "sessions")
    codes = [s["close_code"] for s in sessions]
    assert codes[:2] == [1007, 1009], [(s["close_code"], s["close_reason"]) for s in sessions]
    assert "invalid start byte" in sessions[0]["close_reason"]
    assert "exceeds limit" in sessions[1]["close_reason"]
    assert not any(len(r["payload"]) > MAX_FRAME_BYTES for r in raw)   # refused, not stored
    assert len(read_table(tmp_path, "trades")) == 3                 # one good trade each time
    assert verify(tmp_path).ok
