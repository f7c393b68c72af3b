"""``TcpWireServer.stop()`` cuts a connection the loop accepted just before it."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from asyncio import selector_events
from typing import Any

import pytest

from replay.tcp_server import TcpWireServer
from schemas.venues.base import Reply


class _Session:
    def accept(self, path: str, headers: dict[str, str]) -> Reply:
        return Reply()

    def on_frame(self, data: bytes, now: float) -> Reply:
        return Reply()

    def idle(self, now: float) -> None:
        return None


class _Framer:
    def feed(self, data: bytes) -> list[bytes]:
        return []

    def rest(self) -> bytes:
        return b""


def test_a_connection_accepted_just_before_stop_is_cut_by_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    accepted: list[asyncio.Future[None]] = []
    accept = selector_events.BaseSelectorEventLoop._accept_connection

    def accept_and_tell(self: Any, *args: Any, **kwargs: Any) -> None:
        accept(self, *args, **kwargs)          # the socket is accepted, no handler yet
        if accepted and not accepted[0].done():
            accepted[0].set_result(None)

    monkeypatch.setattr(selector_events.BaseSelectorEventLoop, "_accept_connection",
                        accept_and_tell)

    async def run() -> tuple[socket.socket, int]:
        accepted.append(asyncio.get_running_loop().create_future())
        server = TcpWireServer(_Session, _Framer)  # type: ignore[arg-type]
        await server.start()
        client = socket.create_connection(("127.0.0.1", server.port))
        await accepted[0]
        await server.stop()                    # right away: the handler has not run
        return client, len(server._handlers) + len(server.clients)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        client, left = asyncio.run(run())
        gc.collect()                           # an unclosed server socket would warn here
    with client:
        client.settimeout(5)
        try:
            end = client.recv(1)
        except ConnectionResetError:
            end = b""
    assert end == b""                          # the server closed its side
    assert left == 0
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]
