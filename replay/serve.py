"""Wire replay: the store's recorded frames served in the venue's own protocol.

    async with ReplayServer(root, "alltick", speed=10) as server:
        print(server.url)            # ws://127.0.0.1:PORT/quote-stock-b-ws-api
        ...                          # unmodified vendor clients connect here

The server is the simulator's server (``replay.wire.WireServer``, or
``replay.tcp_server.TcpWireServer`` for Futu) with another frame source: instead
of a market, each client has its own replay of the store.

- **Protocol.** The venue's own ``ServerSession`` answers the client: handshake
  and token, heartbeats and keep-alives, subscribe / unsubscribe / cancel, idle
  timeout. Recorded replies and acks are never replayed; only incoming data
  frames are (``raw`` rows with direction ``in`` that the venue's ``route()``
  maps to a (symbol, stream)), and only to a client whose session ``wants`` that
  (symbol, stream) when the frame is due. ``symbols`` narrows the range further.
- **Bytes.** A frame goes out exactly as recorded: text frames as the same
  UTF-8 text, binary frames (Futu: whole packets, header included) as the same
  bytes.
- **Clock.** Each client has its own clock, started by its first subscribe (for
  HedgeTech, whose subscription is the handshake's query string, by the
  handshake): replay time ``start`` (else the range's first row) is that
  moment, and a frame is due ``(ts_recv - start) / speed`` later; ``speed``
  None ("max") sends as fast as the client reads.
- **End.** When the range is exhausted the connection is closed as the venue's
  server closes one (``replay.serve_venues``), after every queued frame is sent.
- **Back-pressure.** Each client's reader is a lazy scan of the store
  (``ReplayFeed`` over ``kind="raw"``: sorted a window at a time, a window read
  ahead on a worker thread) feeding a bounded queue (``queue_frames``). When the
  client reads slowly the queue fills and its replay *waits*; it is never
  disconnected for it (this is a replay: late is better than lost) and it never
  delays another client. Frames that fell behind go out as soon as there is
  room, so the client catches up at its own speed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from replay.clock import WallClock
from replay.feed import RECORD_ROWS, ReplayFeed
from replay.params import parse_speed, parse_symbols
from replay.rows import RawRow
from replay.scan import CHUNK_ROWS, Scan
from replay.serve_venues import ServeVenue, serve_venue
from replay.tcp_server import TcpWireServer
from replay.wire import WireServer, wait_for_room
from schemas.errors import TickrecError
from schemas.venues.base import Reply, ServerSession

log = logging.getLogger("tickrec.serve")
QUEUE_FRAMES = 4096
STOP_GRACE = 1.0


class GatedSession(ServerSession):
    """The venue's session, plus ``started``: set the first time the client has subscribed."""

    def __init__(self, venue: ServeVenue, inner: ServerSession) -> None:
        super().__init__(None)
        self.venue = venue
        self.inner = inner
        self.started = asyncio.Event()

    def _check(self) -> None:
        if not self.started.is_set() and self.venue.subscribed(self.inner):
            self.started.set()

    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        reply = self.inner.accept(path, headers)
        if reply.close is None:
            self._check()
        return reply

    def on_frame(self, data: bytes | str, now: float) -> Reply:
        reply = self.inner.on_frame(data, now)
        self._check()
        return reply

    def wants(self, symbol: str, stream: str) -> bool:
        return self.inner.wants(symbol, stream)

    def idle(self, now: float) -> Reply | None:
        return self.inner.idle(now)


@dataclass
class ServeStats:
    connected: int = 0          # connections accepted (handshake passed)
    started: int = 0            # replays started (first subscribe)
    finished: int = 0           # replays that reached the end of the range
    frames: int = 0             # data frames queued to clients
    per_client: list[int] = field(default_factory=list)    # frames of each started replay


def wire_frame(row: RawRow, transport: str) -> bytes | str:
    """The recorded frame as it goes on the wire: text as text, binary as bytes."""
    if transport == "ws" and row.kind == "text":
        try:
            return row.payload.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return bytes(row.payload)


class ReplayServer:
    """``tickrec serve``: see the module docstring. Constructing it checks the
    arguments (``ConfigError``); ``start()`` binds and returns the URL.

    ``token``: the one token clients must present (None: any); ``queue_frames``:
    frames queued per client before its replay waits; ``options``: settings of the
    venue's sessions (``idle_timeout``; AllTick's ``request_interval``) and of the end
    (``linger``: seconds from the last frame sent to the close; Futu 1, others 0)."""

    def __init__(self, root: str | os.PathLike[str], venue: str, *, host: str = "127.0.0.1",
                 port: int = 0, speed: float | str = 1.0, start: Any = None, end: Any = None,
                 symbols: str | Sequence[str] | None = None, token: str | None = None,
                 queue_frames: int = QUEUE_FRAMES,
                 options: Mapping[str, Any] | None = None) -> None:
        self.venue = serve_venue(venue, options)
        probe = Scan(root, venue, kind="raw", start=start, end=end)   # checks root, times
        self.root = root
        self.start_ns, self.end_ns = probe.start, probe.end
        self.speed = parse_speed(speed)
        wanted = parse_symbols(symbols)
        self.symbols = set(wanted) if wanted is not None else None
        self._token = token
        self.stats = ServeStats()
        self.server: WireServer | TcpWireServer
        if self.venue.transport == "tcp":
            self.server = TcpWireServer(self._session, self.venue.framer, host=host, port=port,
                                        queue_frames=queue_frames, on_client=self._client)
        else:
            self.server = WireServer(self._session, host=host, port=port, path=self.venue.path,
                                     queue_frames=queue_frames, on_client=self._client)
        self.empty = not probe.dates()

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> str:
        if self.venue.needs_prepare and self.start_ns is not None:
            await asyncio.to_thread(self._prepare)
        return await self.server.start()

    async def stop(self) -> None:
        """Close every connection and stop listening (at most ``STOP_GRACE`` s of waiting)."""
        if isinstance(self.server, WireServer):
            await self.server.stop(STOP_GRACE)
        else:
            await self.server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _prepare(self) -> None:
        """Run the frames before the start through the venue (Noren: the state to snapshot)."""
        before = Scan(self.root, self.venue.name, kind="raw", end=self.start_ns)
        self.venue.prepare(iter(before), self.symbols)

    def _session(self) -> ServerSession:
        return GatedSession(self.venue, self.venue.session(self._token))

    async def _client(self, conn: Any) -> None:
        gate: GatedSession = conn.session
        self.stats.connected += 1
        await gate.started.wait()
        self.stats.started += 1
        index = len(self.stats.per_client)
        self.stats.per_client.append(0)
        log.info("serve %s: a client subscribed; its replay starts", self.venue.name)
        try:
            await self._replay(conn, gate.inner, index)
        except (TickrecError, OSError) as exc:      # e.g. a file of the store is unreadable
            log.warning("serve %s: a client's replay failed: %s", self.venue.name, exc)
            await conn.finish(1011, "replay failed")
            return
        self.stats.finished += 1
        log.info("serve %s: a client's replay ended after %d frames", self.venue.name,
                 self.stats.per_client[index])
        if self.venue.linger:
            await wait_for_room(conn.queue, conn.room, 1)      # all handed to the socket
            await asyncio.sleep(self.venue.linger)
        await conn.finish(*self.venue.end)

    async def _replay(self, conn: Any, session: ServerSession, index: int) -> None:
        clock = WallClock(self.speed) if self.speed is not None else None
        if clock is not None and self.start_ns is not None:
            clock.anchor(self.start_ns)          # replay time `start` is now, this subscribe
        venue, symbols, stats = self.venue, self.symbols, self.stats
        route, observe, transport = venue.route, venue.observe, venue.transport
        # the feed only reads and orders (its own clock never waits); paced clients take
        # small pieces, so building one never holds the loop long enough to delay others
        feed = ReplayFeed(self.root, venue.name, start=self.start_ns, end=self.end_ns,
                          kind="raw", clock="virtual",
                          chunk_rows=RECORD_ROWS if clock is not None else CHUNK_ROWS)
        try:
            async with feed:
                async for row in feed:
                    if clock is not None and not clock.anchored:
                        clock.anchor(row.ts_recv)    # no --start: the range's first row is now
                    if row.direction != "in":
                        continue
                    rt = route(row.payload)
                    if rt is None or (symbols is not None and rt[0] not in symbols):
                        continue
                    if clock is not None:
                        while not clock.release(row.ts_recv):     # one call when due
                            await clock.sleep()
                    observe(session, rt[0], rt[1], row.payload)
                    if session.wants(rt[0], rt[1]):      # decided when due, not when read
                        await conn.put(wire_frame(row, transport))
                        stats.frames += 1
                        stats.per_client[index] += 1
        finally:
            if clock is not None:
                clock.close()          # its timer (replay.timer)
