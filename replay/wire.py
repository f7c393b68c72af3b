"""A WebSocket server that speaks a venue's protocol: shared by the simulator and
``tickrec serve``. It only moves frames; the venue's ``ServerSession`` decides
what a client is owed (authentication, replies, which pushes it subscribed to).

Each client has a bounded outbound queue. A frame source chooses what happens
when a client falls behind: ``Conn.send`` (the simulator: a live market waits for
no one) disconnects it (close 1013, "try again later"); ``await Conn.put`` (wire
replay) waits for room instead, keeping ``REPLY_RESERVE`` places free so the
session's own replies (acks, heartbeats) never overflow the queue. Either way
memory stays bounded and no client delays another. Binds 127.0.0.1 unless told
otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from schemas.venues.base import MAX_FRAME_BYTES, Reply, ServerSession

Meta = Any          # what the owner wants to know once a frame is really sent
REPLY_RESERVE = 64  # queue places ``Conn.put`` leaves free for the session's replies


async def wait_for_room(queue: asyncio.Queue[Any], room: asyncio.Event, limit: int) -> None:
    """Wait until ``queue`` holds fewer than ``limit`` items (``room`` is set on every get)."""
    while queue.qsize() >= limit:
        room.clear()
        await room.wait()


def put_limit(queue: asyncio.Queue[Any]) -> int:
    """How full ``Conn.put`` lets a queue get: its size less the reply reserve."""
    if queue.maxsize <= 0:
        return 1 << 62
    return max(1, queue.maxsize - min(REPLY_RESERVE, queue.maxsize // 2))


async def wait_out_stall(conn: Any) -> None:
    """Return once ``conn`` is not stalled: a half-open connection sends nothing for
    the stall's whole length, not even what was queued before it began."""
    while (left := conn.silent_until - time.monotonic()) > 0:
        await asyncio.sleep(left)


class FanOut:
    """What the simulator does to *all* connections of a server (WebSocket or TCP).

    Subclasses keep ``clients``: connections with ``session``, ``silent_until``,
    ``send(frame, meta)`` and ``abort()``.
    """
    clients: set[Any]

    def stall(self, seconds: float) -> None:
        """Make every open connection half-open for ``seconds``: no frames (not even those
        queued before), no replies. Connections made meanwhile work normally, as after
        a real network fault."""
        until = time.monotonic() + seconds
        for c in self.clients:
            c.silent_until = until

    def push(self, symbol: str, stream: str, frame: bytes | str, meta: Meta = None) -> int:
        """Queue ``frame`` for every client subscribed to (symbol, stream)."""
        n = 0
        now = time.monotonic()
        for c in self.clients:
            if c.silent_until < now and c.session.wants(symbol, stream):
                n += c.send(frame, meta)
        return n

    def broadcast(self, frame: bytes | str, meta: Meta = None) -> None:
        now = time.monotonic()
        for c in self.clients:
            if c.silent_until < now:
                c.send(frame, meta)

    def drop_all(self) -> None:
        """Cut every connection abruptly (no close), as a network failure would."""
        for c in list(self.clients):
            c.abort()


@dataclass(eq=False)
class Conn:
    ws: ServerConnection
    session: ServerSession
    queue: asyncio.Queue[tuple[bytes | str, Meta] | None]
    sent: int = 0
    dropped_slow: bool = False
    silent_until: float = 0.0       # a stalled (half-open) connection sends nothing
    info: dict[str, Any] = field(default_factory=dict)
    room: asyncio.Event = field(default_factory=asyncio.Event)    # set by the writer on each get

    def send(self, frame: bytes | str, meta: Meta = None) -> bool:
        """Queue ``frame`` now; a client whose queue is full is disconnected (1013)."""
        try:
            self.queue.put_nowait((frame, meta))
            return True
        except asyncio.QueueFull:
            if not self.dropped_slow:
                self.dropped_slow = True
                asyncio.ensure_future(self.ws.close(1013, "slow consumer"))
            return False

    async def put(self, frame: bytes | str, meta: Meta = None) -> None:
        """Queue ``frame``, waiting while the queue is full (back-pressure, never a drop)."""
        await wait_for_room(self.queue, self.room, put_limit(self.queue))
        self.queue.put_nowait((frame, meta))

    async def finish(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason`` once every frame queued before is sent."""
        await wait_for_room(self.queue, self.room, self.queue.maxsize or 1 << 62)
        self.info.setdefault("close", (code, reason))
        self.queue.put_nowait(None)

    def abort(self) -> None:
        self.ws.transport.abort()


class WireServer(FanOut):
    def __init__(self, make_session: Callable[[], ServerSession], *, host: str = "127.0.0.1",
                 port: int = 0, path: str = "/", queue_frames: int = 50_000,
                 on_sent: Callable[[Conn, Meta], None] | None = None,
                 on_client: Callable[[Conn], Coroutine[Any, Any, None]] | None = None) -> None:
        self.make_session = make_session
        self.host, self.port, self.path = host, port, path
        self.queue_frames = queue_frames
        self.on_sent = on_sent
        self.on_client = on_client
        self.clients: set[Conn] = set()
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.path}"

    async def start(self) -> str:
        self._server = await serve(self._handler, self.host, self.port, compression=None,
                                   max_size=MAX_FRAME_BYTES, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self, grace: float | None = None) -> None:
        """Close every connection (1001) and wait for them; after ``grace`` seconds
        abort the ones still open (a client that never closes its side of the TCP
        connection would otherwise hold the server for the close timeout, 10 s)."""
        if self._server is not None:
            self._server.close()
            if grace is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._server.wait_closed()), grace)
                except TimeoutError:        # TimeoutError from 3.11 on
                    for c in list(self.clients):
                        c.abort()
            await self._server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        session = self.make_session()
        request = ws.request
        headers = {k: v for k, v in request.headers.raw_items()} if request else {}
        verdict = session.accept(request.path if request else "/", headers)
        if verdict.close is not None:
            for f in verdict.frames:
                await ws.send(f)
            await ws.close(*verdict.close)
            return
        conn = Conn(ws, session, asyncio.Queue(self.queue_frames))
        for f in verdict.frames:
            conn.send(f)
        self.clients.add(conn)
        tasks = [asyncio.create_task(self._writer(conn)), asyncio.create_task(self._idle(conn))]
        if self.on_client is not None:
            tasks.append(asyncio.create_task(self.on_client(conn)))
        try:
            async for msg in ws:
                if conn.silent_until > time.monotonic():
                    continue
                self._apply(conn, session.on_frame(msg, time.monotonic()))
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(conn)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _apply(self, conn: Conn, reply: Reply) -> None:
        for f in reply.frames:
            conn.send(f)
        if reply.close is not None:
            conn.queue.put_nowait(None)
            conn.info["close"] = reply.close

    async def _writer(self, conn: Conn) -> None:
        while True:
            item = await conn.queue.get()
            conn.room.set()
            await wait_out_stall(conn)
            if item is None:
                code, reason = conn.info.get("close", (1000, ""))
                await conn.ws.close(code, reason)
                return
            frame, meta = item
            try:
                await conn.ws.send(frame)
            except ConnectionClosed:
                return
            conn.sent += 1
            if self.on_sent is not None and meta is not None:
                self.on_sent(conn, meta)

    async def _idle(self, conn: Conn) -> None:
        while True:
            await asyncio.sleep(0.5)
            if conn.silent_until > time.monotonic():
                continue
            reply = conn.session.idle(time.monotonic())
            if reply is not None:
                self._apply(conn, reply)
                return
