"""A WebSocket client connection that only moves bytes: what ``Recorder._session`` drives.

``ws_connect(url, ...)`` (an async context manager) opens ``ws://`` or ``wss://``,
does the opening handshake with the sans-I/O ``websockets.client.ClientProtocol``
(request, response checks: ``InvalidStatus`` for a refusal, ``InvalidHandshake``
otherwise) and yields a ``WsConnection``. From then on the server's frames are
parsed in bulk by ``recorder.wsframe`` straight from ``data_received``: one read
of the socket (up to 64 KB, hundreds of frames under load) becomes one batch.

``await conn.recv_batch()`` returns every data message read since the last call,
as ``(payload: bytes, text: bool)``, in order; ``None`` once the connection is
closed and everything has been handed out. Reading pauses (TCP back-pressure)
while more than ``max_queue_bytes`` wait to be taken: nothing read is dropped.

The connection answers pings, sends its own every ``ping_interval`` and fails
with 1011 when a pong is ``ping_timeout`` late (not counted while reading is
paused by back-pressure: our pause is not the server's silence), echoes the
server's close, and fails the connection itself (RFC 6455) with 1002, 1007 or
1009 on a malformed frame, a text message that is not UTF-8 (handed out first:
the recorder keeps it) or a message over ``max_size``. ``close_code`` and
``close_reason`` then say how it ended: the server's close frame, 1006 when the
link broke without one, or the code we failed it with and
``"closed by tickrec: ..."``; ``None`` while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidMessage
from websockets.http11 import USER_AGENT, Response
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from recorder.wsframe import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameError,
    MessageReader,
    client_frame,
    close_payload,
    parse_close,
)

# Frames read but not taken are Python objects (~1.4x their payload) in the recorder's
# resident set; past this the kernel's socket buffer holds the rest (not resident here).
# A batch of 1 MB is ~3,500 blast frames, most of a decode batch (recorder.capture).
MAX_QUEUE_BYTES = 1 << 20


class WsConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, max_size: int, *, ping_interval: float | None = 20.0,
                 ping_timeout: float = 20.0, close_timeout: float = 2.0,
                 max_queue_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.transport: asyncio.Transport     # set by connection_made, before any other call
        self.close_code: int | None = None
        self.close_reason = ""
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.close_timeout = close_timeout
        self.max_queue_bytes = max_queue_bytes
        self._frames = MessageReader(max_size)
        self._http: StreamReader | None = StreamReader()     # None once open
        self._response: Any = None
        self._opened: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._queue: list[tuple[bytes, bool]] = []
        self._queued_bytes = 0
        self._ready = asyncio.Event()           # set: something to take, or closed
        self._paused = False                    # reading paused by back-pressure
        self._close_sent = False
        self._lost = asyncio.get_running_loop().create_future()     # TCP gone
        self._pong: asyncio.Future[None] | None = None
        self._pong_payload = b""
        self._keepalive: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None     # waits for TCP to close

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio.Protocol declares BaseTransport; a stream connection gets a Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._http is not None:
            self._handshake_data(data)
            return
        messages = self._frames.feed(data)
        queue = self._queue
        for opcode, payload in messages:
            if opcode == TEXT or opcode == BINARY:
                queue.append((payload, opcode == TEXT))
                self._queued_bytes += len(payload)
            elif opcode == PING:
                if not self._close_sent:
                    self.transport.write(client_frame(PONG, payload))
            elif opcode == PONG:
                pong = self._pong
                if pong is not None and not pong.done() and payload == self._pong_payload:
                    pong.set_result(None)
            elif opcode == CLOSE:
                self._server_closed(payload)
        if queue:
            self._ready.set()
            if self._queued_bytes > self.max_queue_bytes and not self._paused:
                self._paused = True
                self.transport.pause_reading()
        if self._frames.error is not None:
            self.fail(self._frames.error)

    def eof_received(self) -> bool | None:
        if self._http is not None:      # a refusal's body may end at EOF
            self._http.feed_eof()
            self._handshake_data(b"")
        self._end(1006, "")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(1006, "")
        if not self._opened.done():
            err = InvalidMessage("did not receive a valid HTTP response")
            err.__cause__ = exc or EOFError("connection closed while reading the response")
            self._opened.set_exception(err)
        if not self._lost.done():
            self._lost.set_result(None)
        if self._pong is not None and not self._pong.done():
            self._pong.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()

    # -- the handshake ------------------------------------------------------------------
    def _handshake_data(self, data: bytes) -> None:
        assert self._http is not None
        if data:
            self._http.feed_data(data)
        try:
            next(self._response)
        except StopIteration as done:
            rest = bytes(self._http.buffer)
            self._http = None
            if not self._opened.done():
                self._opened.set_result(done.value)
            if rest:
                self.data_received(rest)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad response
            self._http = None
            if not self._opened.done():
                err = InvalidMessage("did not receive a valid HTTP response")
                err.__cause__ = exc
                self._opened.set_exception(err)
            self.transport.abort()

    async def handshake(self, protocol: ClientProtocol, headers: Mapping[str, str]) -> None:
        """Send the opening request and check the response (raises ``InvalidHandshake``)."""
        request = protocol.connect()
        request.headers.update(headers)
        request.headers.setdefault("User-Agent", USER_AGENT)
        assert self._http is not None
        self._response = Response.parse(self._http.read_line, self._http.read_exact,
                                        self._http.read_to_eof)
        next(self._response)
        self.transport.write(request.serialize())
        response = await self._opened
        protocol.process_response(response)     # InvalidStatus / InvalidHandshake
        if self.ping_interval:
            self._keepalive = asyncio.ensure_future(self._keep_alive(self.ping_interval))

    # -- what the recorder calls ---------------------------------------------------------
    @property
    def queued_bytes(self) -> int:
        """Payload bytes read but not taken yet (reading pauses above ``max_queue_bytes``)."""
        return self._queued_bytes

    async def recv_batch(self) -> list[tuple[bytes, bool]] | None:
        """The data messages read so far, oldest first; ``None`` when closed and drained."""
        while not self._queue:
            if self.close_code is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        batch, self._queue, self._queued_bytes = self._queue, [], 0
        if self._paused and self.close_code is None:
            self._paused = False
            self.transport.resume_reading()
        return batch

    async def send(self, message: str | bytes) -> None:
        """One message (``str``: text, ``bytes``: binary), masked."""
        if self.close_code is not None or self._close_sent:
            raise ConnectionClosedError(None, None)
        if isinstance(message, str):
            self.transport.write(client_frame(TEXT, message.encode("utf-8")))
        else:
            self.transport.write(client_frame(BINARY, message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake: send our close, wait up to ``close_timeout`` for the
        server's and for it to close TCP, then drop the connection."""
        self._send_close(code, reason)
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        await self._wait_lost()

    async def release(self) -> None:
        """Close (1000) if still open, wait for TCP to go (or drop it), stop the pings."""
        if self.close_code is None:
            await self.close(1000, "")
        else:
            await self._wait_lost()
        if self._keepalive is not None:
            self._keepalive.cancel()

    def fail(self, error: FrameError) -> None:
        """Fail the connection (RFC 6455 7.1.7) with ``error``'s code and reason."""
        self._send_close(error.code, error.reason)
        self._end(error.code, f"closed by tickrec: {error.reason}")
        self._closing = self._closing or asyncio.ensure_future(self._wait_lost())

    # -- internals ----------------------------------------------------------------------
    def _send_close(self, code: int, reason: str) -> None:
        if not self._close_sent and not self._lost.done():
            self._close_sent = True
            self.transport.write(client_frame(CLOSE, close_payload(code, reason)))

    def _server_closed(self, payload: bytes) -> None:
        code, reason = parse_close(payload)
        if self._close_sent:        # the answer to ours: keep what we said
            self._end(code, reason)
        else:
            self._send_close(code if code != 1005 else 1000, "")
            self._end(code, reason)
        self._closing = self._closing or asyncio.ensure_future(self._wait_lost())

    def _end(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._ready.set()

    async def _wait_lost(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._lost), self.close_timeout)
        if not self._lost.done():
            self.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), self.close_timeout)

    async def _keep_alive(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while self.close_code is None:
            await asyncio.sleep(interval)
            if self.close_code is not None or self._close_sent:
                return
            self._pong_payload = os.urandom(4)
            self._pong = loop.create_future()
            self.transport.write(client_frame(PING, self._pong_payload))
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._pong), self.ping_timeout)
                if self._pong.done() or not self._paused:
                    break
            if not self._pong.done():
                self.fail(FrameError(1011, "keepalive ping timeout"))
                return


@contextlib.asynccontextmanager
async def ws_connect(url: str, *, headers: Mapping[str, str] | None = None,
                     max_size: int, open_timeout: float = 10.0, ping_interval: float | None = 20.0,
                     ping_timeout: float = 20.0, close_timeout: float = 2.0,
                     ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[WsConnection]:
    """Connect and handshake within ``open_timeout`` (``TimeoutError``, ``OSError``,
    ``InvalidHandshake``); closes (1000) on the way out if still open."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_size)
    loop = asyncio.get_running_loop()
    tls: Any = None
    if uri.secure:
        tls = ssl_context or ssl.create_default_context()
    conn: WsConnection | None = None
    try:
        async with asyncio.timeout(open_timeout):
            _, conn = await loop.create_connection(
                lambda: WsConnection(max_size, ping_interval=ping_interval,
                                     ping_timeout=ping_timeout, close_timeout=close_timeout),
                uri.host, uri.port, ssl=tls, server_hostname=uri.host if tls else None)
            await conn.handshake(protocol, headers or {})
    except BaseException:
        if conn is not None:
            conn.transport.abort()
        raise
    try:
        yield conn
    finally:
        await conn.release()

