"""A framed TCP connection with the surface ``Recorder._session`` drives (Futu OpenD).

``tcp_connect(url, framer)`` opens ``tcp://host:port`` and yields a
``TcpConnection``: ``async for packet in conn`` gives one whole packet (bytes)
per iteration, cut by the venue's framer (``feed(bytes) -> list[bytes]``,
``rest() -> bytes``); ``send(bytes)``, ``close(code, reason)``, ``close_code``,
``close_reason`` and ``transport.abort()`` behave like those of a websockets
connection, so the recorder's loop is the same for both transports.

TCP has no close handshake, so the codes are WebSocket's, for one meaning
across transports: 1000 we closed, 1006 the peer closed or the connection
broke, 1002 the stream could not be framed (bad signature, oversize). In the
last case the unframeable bytes (at most 1 MiB) are handed out as a final
"packet" first, so they are journaled and counted as a rejected frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from schemas.errors import ConfigError, ProtocolError
from schemas.venues.base import Framer

READ_CHUNK = 64 * 1024
JUNK_LIMIT = 1 << 20


class TcpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 framer: Framer) -> None:
        self._reader = reader
        self._writer = writer
        self._framer = framer
        self.transport = writer.transport
        self.close_code: int | None = None
        self.close_reason = ""

    def _closed(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._packets()

    async def _packets(self) -> AsyncIterator[bytes]:
        while self.close_code is None:
            try:
                data = await self._reader.read(READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                self._closed(1006, f"connection lost: {type(exc).__name__}")
                return
            if not data:
                self._closed(1006, "connection closed by the server")
                return
            while True:     # a framer hands out good packets before an error in line
                try:
                    packets = self._framer.feed(data)
                except ProtocolError as exc:
                    junk = self._framer.rest()[:JUNK_LIMIT]
                    self._closed(1002, f"stream cannot be framed: {exc}"[:200])
                    self.transport.abort()
                    if junk:
                        yield junk
                    return
                if not packets:
                    break
                data = b""
                for p in packets:
                    yield p

    async def send(self, data: bytes | str) -> None:
        if self.close_code is not None:
            raise ConnectionResetError(f"connection closed ({self.close_code})")
        self._writer.write(data.encode() if isinstance(data, str) else data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._closed(1006, f"connection lost: {type(exc).__name__}")
            raise

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed(code, reason)
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 2)


def parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ConfigError(f"expected tcp://HOST:PORT, not {url!r}")
    return parts.hostname, port


@contextlib.asynccontextmanager
async def tcp_connect(url: str, framer: Framer, *,
                      open_timeout: float = 10.0) -> AsyncIterator[TcpConnection]:
    """Connect (raises ``OSError``/``TimeoutError``) and close on the way out."""
    host, port = parse_url(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=READ_CHUNK * 2), open_timeout)
    conn = TcpConnection(reader, writer, framer)
    try:
        yield conn
    finally:
        if conn.close_code is None:
            await conn.close(1000, "")
        else:
            writer.transport.abort()
