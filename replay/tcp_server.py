"""A framed TCP server that speaks a venue's protocol (Futu OpenD): the TCP twin of
``replay.wire.WireServer``, with the same surface (``url``, ``start``, ``stop``,
``push``, ``broadcast``, ``drop_all``, ``stall``) so the simulator drives either.

A *framer* (``framer()`` → object with ``feed(bytes) -> list[bytes]``, raising a
``ProtocolError`` when the stream cannot be framed) cuts each client's byte
stream into packets; the venue's ``ServerSession`` answers each packet. Each
client has a bounded outbound queue: ``TcpConn.send`` cuts off a client that falls
too far behind (the simulator), ``await TcpConn.put`` waits for room instead
(wire replay: back-pressure), as ``replay.wire.Conn`` does. ``on_client(conn)``
runs alongside each connection, as in ``WireServer``. Binds 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from replay.wire import FanOut, put_limit, wait_for_room, wait_out_stall
from schemas.errors import ProtocolError
from schemas.venues.base import Reply, ServerSession

Meta = Any
READ_CHUNK = 64 * 1024
# Loop turns from an accepted socket to its handler's first step: the accept's own
# task makes the transport, connection_made is called soon after, it creates the
# handler task, which then runs (asyncio 3.11 has no hook for "accepted, not yet
# handled"; tests/test_tcp_server_stop.py checks that this many suffice).
ACCEPT_TURNS = 4
STOP_GRACE_S = 2.0        # how long stop() lets an aborted connection's handler end


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...


@dataclass(eq=False)
class TcpConn:
    writer: asyncio.StreamWriter
    session: ServerSession
    queue: asyncio.Queue[tuple[bytes, Meta] | None]
    sent: int = 0
    dropped_slow: bool = False
    silent_until: float = 0.0       # a stalled (half-open) connection sends nothing
    info: dict[str, Any] = field(default_factory=dict)
    room: asyncio.Event = field(default_factory=asyncio.Event)    # set by the writer on each get

    def send(self, frame: bytes | str, meta: Meta = None) -> bool:
        """Queue ``frame`` now; a client whose queue is full is cut off."""
        data = frame.encode() if isinstance(frame, str) else frame
        try:
            self.queue.put_nowait((data, meta))
            return True
        except asyncio.QueueFull:
            if not self.dropped_slow:
                self.dropped_slow = True
                self.writer.transport.abort()
            return False

    async def put(self, frame: bytes | str, meta: Meta = None) -> None:
        """Queue ``frame``, waiting while the queue is full (back-pressure, never a drop)."""
        await wait_for_room(self.queue, self.room, put_limit(self.queue))
        self.queue.put_nowait((frame.encode() if isinstance(frame, str) else frame, meta))

    async def finish(self, code: int, reason: str) -> None:
        """Close the connection (FIN) once every packet queued before is sent."""
        await wait_for_room(self.queue, self.room, self.queue.maxsize or 1 << 62)
        self.info.setdefault("close", (code, reason))
        self.queue.put_nowait(None)

    def abort(self) -> None:
        self.writer.transport.abort()


class TcpWireServer(FanOut):
    def __init__(self, make_session: Callable[[], ServerSession], framer: Callable[[], Framer], *,
                 host: str = "127.0.0.1", port: int = 0, queue_frames: int = 50_000,
                 on_sent: Callable[[TcpConn, Meta], None] | None = None,
                 on_client: Callable[[TcpConn], Coroutine[Any, Any, None]] | None = None) -> None:
        self.make_session = make_session
        self.framer = framer
        self.host, self.port = host, port
        self.queue_frames = queue_frames
        self.on_sent = on_sent
        self.on_client = on_client
        self.clients: set[TcpConn] = set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handler, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        """Close the listening socket and every connection. A connection accepted just
        before, whose handler task has not run yet, gets the loop turns it needs to
        start (``ACCEPT_TURNS``) and is then cut like the others: cancelled before its
        first step, the task would never close its socket, and a closing loop would
        find it open. Each connection is aborted and its handler left to end on the
        EOF (a cancelled handler makes asyncio log "Exception in callback"); one still
        running after ``STOP_GRACE_S`` is cancelled."""
        if self._server is not None:
            self._server.close()
            for _ in range(ACCEPT_TURNS):
                await asyncio.sleep(0)
            for c in list(self.clients):
                c.abort()               # its handler reads EOF and ends on its own
            handlers = list(self._handlers)
            if handlers:
                _, stuck = await asyncio.wait(handlers, timeout=STOP_GRACE_S)
                for t in stuck:         # cancelled only if the abort did not end it
                    t.cancel()
                await asyncio.gather(*stuck, return_exceptions=True)
            await self._server.wait_closed()

    async def _handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        session = self.make_session()
        conn = TcpConn(writer, session, asyncio.Queue(self.queue_frames))
        self._apply(conn, session.accept("", {}))
        self.clients.add(conn)
        framer = self.framer()
        tasks = [asyncio.create_task(self._writer(conn)), asyncio.create_task(self._idle(conn))]
        if self.on_client is not None:
            tasks.append(asyncio.create_task(self.on_client(conn)))
        try:
            while "close" not in conn.info:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                if conn.silent_until > time.monotonic():
                    continue
                if not self._packets(conn, framer, data):
                    break
            if "close" in conn.info:
                await asyncio.wait_for(asyncio.shield(tasks[0]), 2)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients.discard(conn)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.transport.abort()
            if task is not None:
                self._handlers.discard(task)

    def _packets(self, conn: TcpConn, framer: Framer, data: bytes) -> bool:
        """Answer every packet ``data`` completes; False once the stream cannot be framed."""
        while True:     # a framer hands out good packets before an error in line
            try:
                packets = framer.feed(data)
            except ProtocolError as exc:
                self._apply(conn, Reply(close=(1002, str(exc)[:100])))
                return False
            if not packets:
                return True
            data = b""
            for p in packets:
                self._apply(conn, conn.session.on_frame(p, time.monotonic()))

    def _apply(self, conn: TcpConn, reply: Reply) -> None:
        metas = getattr(reply, "metas", None) or []
        for i, f in enumerate(reply.frames):
            conn.send(f, metas[i] if i < len(metas) else None)
        if reply.close is not None and "close" not in conn.info:
            conn.info["close"] = reply.close
            with contextlib.suppress(asyncio.QueueFull):
                conn.queue.put_nowait(None)

    async def _writer(self, conn: TcpConn) -> None:
        while True:
            item = await conn.queue.get()
            conn.room.set()
            await wait_out_stall(conn)
            if item is None:
                with contextlib.suppress(ConnectionError, OSError):
                    await conn.writer.drain()
                    conn.writer.close()
                return
            frame, meta = item
            if conn.writer.transport.is_closing():
                return
            conn.writer.write(frame)
            try:
                await conn.writer.drain()
            except (ConnectionError, OSError):
                return
            conn.sent += 1
            if self.on_sent is not None and meta is not None:
                self.on_sent(conn, meta)

    async def _idle(self, conn: TcpConn) -> None:
        while True:
            await asyncio.sleep(0.5)
            if conn.silent_until > time.monotonic():
                continue
            reply = conn.session.idle(time.monotonic())
            if reply is not None:
                self._apply(conn, reply)
                return
