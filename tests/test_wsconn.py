"""The recorder's WebSocket connection (recorder/wsconn.py) against a real websockets
server on loopback: messages whole and fragmented, pings both ways, close codes both
ways, the failures RFC 6455 asks of a client, back-pressure, the handshake's refusals,
the open timeout and TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from recorder.wsconn import WsConnection, ws_connect
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)
Handler = Callable[[ServerConnection], Awaitable[None]]


async def everything(conn: WsConnection) -> list[tuple[bytes, bool]]:
    out: list[tuple[bytes, bool]] = []
    while (batch := await conn.recv_batch()) is not None:
        out += batch
    return out


async def run(handler: Handler, client: Callable[[WsConnection], Awaitable[Any]],
              **kw: Any) -> Any:
    async with serve(handler, "127.0.0.1", 0, **kw) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/x?token=t", max_size=1000,
                              headers={"X-Test": "1"}) as conn:
            return await asyncio.wait_for(client(conn), 20)


async def test_messages_whole_and_fragmented_arrive_in_order_and_the_server_close_is_kept() -> None:
    seen: dict[str, object] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["path"], seen["header"] = ws.request.path, ws.request.headers["X-Test"]
        seen["sub"] = await ws.recv()
        await ws.send("héllo")
        await ws.send(["frag", "mé", "nted"])                # one text message, 3 frames
        await ws.send([b"\x00\x01", b"\xff"])                 # one binary message, 2 frames
        await ws.send(b"bin")
        await ws.close(4001, "bye now")

    async def client(conn: WsConnection) -> Any:
        await conn.send('{"sub":1}')
        got = await everything(conn)
        return got, conn.close_code, conn.close_reason

    got, code, reason = await run(handler, client)
    assert got == [("héllo".encode(), True), ("fragménted".encode(), True),
                   (b"\x00\x01\xff", False), (b"bin", False)]
    assert (code, reason) == (4001, "bye now")
    assert seen == {"path": "/x?token=t", "header": "1", "sub": '{"sub":1}'}


async def test_server_pings_are_answered_and_our_close_reaches_the_server() -> None:
    closed: list[tuple[int | None, str | None]] = []

    async def handler(ws: ServerConnection) -> None:
        latency = await asyncio.wait_for(await ws.ping(b"are you there"), 5)
        await ws.send(f"pong after {latency >= 0}")
        await ws.wait_closed()
        closed.append((ws.close_code, ws.close_reason))

    async def client(conn: WsConnection) -> Any:
        batch = await conn.recv_batch()
        await conn.close(1000, "done")
        return batch, conn.close_code

    batch, code = await run(handler, client)
    assert batch == [(b"pong after True", True)] and code == 1000
    await until(lambda: closed, 10, "the server's side of the close")
    assert closed == [(1000, "done")]


async def test_our_keepalive_pings_fail_the_connection_with_1011_when_no_pong_comes() -> None:
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await asyncio.sleep(0.3)
        ws.transport.pause_reading()        # our pings are never read, never answered
        await done.wait()

    async with serve(handler, "127.0.0.1", 0, close_timeout=0.2) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/", max_size=1000, ping_interval=0.2,
                              ping_timeout=0.5, close_timeout=0.5) as conn:
            got = await asyncio.wait_for(everything(conn), 10)
            assert got == [(b"hello", True)]
            assert (conn.close_code, conn.close_reason) == (1011,
                                                            "closed by tickrec: keepalive ping timeout")
        done.set()


async def test_pongs_keep_a_quiet_connection_open() -> None:
    async def handler(ws: ServerConnection) -> None:
        await asyncio.sleep(1.0)
        await ws.send("still here")
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/", max_size=1000, ping_interval=0.1,
                              ping_timeout=0.3) as conn:
            assert await asyncio.wait_for(everything(conn), 10) == [(b"still here", True)]
            assert conn.close_code == 1000


@pytest.mark.parametrize("what", ["utf8", "size"])
async def test_bad_input_fails_the_connection_with_the_rfc_code_and_the_server_hears_it(
        what: str) -> None:
    heard: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("good")
        if what == "utf8":
            await ws.send(b"bad \xff", text=True)
        else:
            await ws.send(b"x" * 1001)
        await ws.send("never read")
        await ws.wait_closed()
        heard.append(ws.close_code)

    async def client(conn: WsConnection) -> Any:
        return await everything(conn), conn.close_code, conn.close_reason

    got, code, reason = await run(handler, client)
    await until(lambda: heard, 10, "the server's side of the close")
    if what == "utf8":
        assert got == [(b"good", True), (b"bad \xff", True)]     # handed out, then refused
        assert code == 1007 and "invalid start byte" in reason
    else:
        assert got == [(b"good", True)]
        assert code == 1009 and "exceeds limit of 1000 bytes" in reason
    assert reason.startswith("closed by tickrec: ") and heard == [code]


async def test_reading_pauses_while_nothing_is_taken_and_nothing_is_lost() -> None:
    n = 5000

    async def handler(ws: ServerConnection) -> None:
        for i in range(n):
            await ws.send(f"{i:0200d}")
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/", max_size=1000) as conn:
            conn.max_queue_bytes = 20_000
            await asyncio.sleep(0.5)                # the server sends; we take nothing
            assert conn.queued_bytes <= 20_000 + 256 * 1024     # + at most one read
            got = await asyncio.wait_for(everything(conn), 20)
    assert [int(p) for p, _ in got] == list(range(n))


async def test_a_refused_handshake_raises_invalid_status_with_the_http_code() -> None:
    def refuse(conn: ServerConnection, request: object) -> Response:
        return Response(401, "Unauthorized", Headers(), b"no")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("not reached")

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(InvalidStatus) as err:
            async with ws_connect(f"ws://127.0.0.1:{port}/", max_size=1000):
                pass
    assert err.value.response.status_code == 401


async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)         # reads nothing, answers nothing

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            async with ws_connect(f"ws://127.0.0.1:{port}/", max_size=1000, open_timeout=0.3):
                pass
    finally:
        # the client may give up before the server's handler ran (a loaded machine): wait
        # for it, or its connection outlives the test and is finalised in a later one
        await until(lambda: accepted, 10, "the server's side of the connection")
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
    assert len(accepted) == 1


async def test_wss_connects_over_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
               "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
               "-keyout", str(key), "-out", str(cert)]
    await asyncio.to_thread(subprocess.run, openssl, check=True, capture_output=True)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        await ws.send("secret")
        await ws.close()

    async with serve(handler, "localhost", 0, ssl=server_tls) as server:
        port = server.sockets[0].getsockname()[1]
        trusting = ssl.create_default_context(cafile=str(cert))
        async with ws_connect(f"wss://localhost:{port}/", max_size=1000,
                              ssl_context=trusting) as conn:
            assert await everything(conn) == [(b"secret", True)]
        with pytest.raises(ssl.SSLCertVerificationError):      # the default trust store
            async with ws_connect(f"wss://localhost:{port}/", max_size=1000):
                pass
