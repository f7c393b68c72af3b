"""The live side: drive a venue ``Client`` over a real connection and feed the pipeline.

This layer only moves bytes and keeps time: what to send, how to decode and when
to give up are decided by the venue codec (``schemas.venues``); what is stored
is decided by ``Capture``. One ``Recorder`` = one feed = one recorder run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from recorder.backoff import backoff
from recorder.capture import Capture, RecvClock, recover
from recorder.tcp import tcp_connect
from recorder.wsconn import WsConnection, ws_connect
from schemas.errors import ConfigError, PermanentFeedError
from schemas.events import Status
from schemas.venues import get
from schemas.venues.base import MAX_FRAME_BYTES, Outgoing
from schemas.venues.urls import redact_url
from storage.fs import StoreRoot, as_store, is_s3

log = logging.getLogger("tickrec.recorder")
JOURNAL_FLUSH_S = 0.01
JOURNAL_FLUSH_RECORDS = 2048
STORE_RETRY_S = 1.0             # while the store cannot be written, try again this often
GOOD_SESSION_S = 10.0           # a connection that lasted this long resets the back-off
ROWS_PER_FRAME = 8              # at most this many buffered rows come from one frame in
Sink = Callable[[list[Any]], Awaitable[None]]


class Recorder:
    """Capture one feed until ``stop()``; reconnects with the venue's back-off."""

    def __init__(self, venue: str, url: str, symbols: Sequence[str], root: Path | str | StoreRoot, *,
                 feed: str | None = None, credentials: dict[str, str] | None = None,
                 options: dict[str, Any] | None = None, sink: Sink | None = None,
                 flush_seconds: float = 30.0, flush_rows: int = 250_000,
                 idle_timeout: float | None = None, reconnect_min: float | None = None,
                 clock: RecvClock | None = None) -> None:
        self.spec = get(venue)
        self.url = url
        self.symbols = list(symbols)
        # s3:// roots (storage.fs) stay a StoreRoot; local ones stay a Path
        self.root: Path | StoreRoot = (as_store(root) if isinstance(root, StoreRoot) or is_s3(root)
                                       else Path(root))
        self.feed = feed or venue
        self.client = self.spec.client(self.symbols, credentials, options)
        self._check_url(url)
        self.sink = sink
        self.flush_seconds, self.flush_rows = flush_seconds, flush_rows
        self.idle_timeout = idle_timeout or self.client.idle_timeout
        # A floor below the vendor's is allowed only for loopback test servers.
        self.reconnect_min = self.client.reconnect_min if reconnect_min is None else reconnect_min
        self._stop = asyncio.Event()
        self.capture: Capture | None = None
        self._publishing: asyncio.Future[Any] | None = None
        self.fatal: str | None = None
        self.connections = 0
        self.recovery_lines: list[str] = []
        self.on_notice: Callable[[str], None] = lambda _: None
        self.clock = clock          # None: each run anchors its own RecvClock at its start
        # Cleared while the store cannot be written: nothing is read from the venue then.
        self._writable = asyncio.Event()
        self._writable.set()
        # Rows waiting for Parquet are capped: past this the reader waits for a publish.
        self.max_buffered_rows = 2 * flush_rows
        self._room = asyncio.Event()
        self._room.set()
        self._reader_waiting = False

    def _check_url(self, url: str) -> None:
        """ConfigError (naming only the redacted URL) for a URL that cannot be dialled."""
        try:
            shown = repr(redact_url(url))
        except ValueError:
            raise ConfigError("bad url: it cannot be parsed") from None
        if self.client.transport == "ws" and urlsplit(url).scheme not in ("ws", "wss"):
            raise ConfigError(f"{self.spec.name} needs a ws:// or wss:// url, not {shown}")
        try:
            _ = urlsplit(url).port          # a bad port raises ValueError here
            dial = self.client.dial(url)
            if self.client.transport == "ws":
                parse_uri(dial.url)
        except (ValueError, InvalidURI):
            raise ConfigError(f"bad url {shown}") from None

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration: float | None = None) -> None:
        """Recover unfinished runs, then capture until stopped, ``duration`` or a fatal error."""
        self.recovery_lines = (await asyncio.to_thread(recover, self.root, self.feed)).lines()
        for line in self.recovery_lines:
            log.warning("%s", line)
            self.on_notice(line)
        self.capture = Capture(self.root, self.spec.name, self.feed,
                               flush_rows=self.flush_rows, flush_seconds=self.flush_seconds,
                               clock=self.clock, events=self.sink is not None)
        if self.capture.clock.held_back_ns:
            msg = (f"{self.feed}: the wall clock is {self.capture.clock.held_back_ns / 1e9:.3f}s "
                   "behind the feed's last receive time; receive times continue from that")
            log.warning("%s", msg)
            self.on_notice(msg)
        tasks = [asyncio.create_task(self._journal_flusher()),
                 asyncio.create_task(self._publisher()),
                 asyncio.create_task(self._store_retry())]
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, self._stop.set)
        try:
            await self._connection_loop()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._publishing is not None:       # its thread runs on: let it finish first
                await asyncio.gather(self._publishing, return_exceptions=True)
            await asyncio.to_thread(self.capture.close)
        if self.fatal:
            raise PermanentFeedError(self.fatal)

    async def _connection_loop(self) -> None:
        assert self.capture is not None
        delays = backoff(self.reconnect_min)
        while not self._stop.is_set():
            if not self._writable.is_set():     # no new connection while the store is full
                await self._wait_writable()
                continue
            attempt = time.monotonic()
            dial = self.client.dial(self.url)
            code: int | None = None
            reason = ""
            try:
                if self.client.transport == "tcp":     # framed TCP (Futu OpenD)
                    conn: Any = tcp_connect(dial.url, self.client.framer(), open_timeout=10)
                else:
                    conn = ws_connect(dial.url, headers=dict(dial.headers),
                                      max_size=MAX_FRAME_BYTES, open_timeout=10,
                                      ping_interval=20, ping_timeout=20, close_timeout=2)
                async with conn as ws:
                    self.connections += 1
                    self.capture.open_session(dial.redacted_url, self.symbols,
                                              self.client.decoder_options())
                    await self._emit([Status(self.spec.name, "connected", time.time_ns(),
                                             dial.redacted_url)])
                    code, reason = await self._session(ws)
                    if time.monotonic() - attempt >= GOOD_SESSION_S:
                        delays = backoff(self.reconnect_min)  # a good connection resets it
            except InvalidStatus as exc:
                code, reason = exc.response.status_code, f"handshake refused: HTTP {exc.response.status_code}"
                if exc.response.status_code in (401, 403):
                    self.fatal = f"{self.spec.name}: {reason} (check the credentials)"
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                reason = reason.replace(dial.url, dial.redacted_url)
            events = self.capture.close_session(code, reason)
            await self._emit(events + [Status(self.spec.name, "disconnected", time.time_ns(), reason)])
            if self.fatal is None:
                self.fatal = self.client.permanent(code, events)
            if self.fatal:
                await self._emit([Status(self.spec.name, "fatal", time.time_ns(), self.fatal)])
                return
            wait = max(0.0, next(delays) - (time.monotonic() - attempt))
            log.info("%s: disconnected (%s); reconnecting in %.1fs", self.feed, reason, wait)
            try:
                await asyncio.wait_for(self._stop.wait(), wait)
            except TimeoutError:
                pass

    async def _session(self, ws: Any) -> tuple[int | None, str]:
        """Run one connection; returns its close code and reason."""
        assert self.capture is not None
        cap, client = self.capture, self.client
        outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        for out in client.on_open():
            outbox.put_nowait(out)
        last_in = time.monotonic()
        fatal_close: list[str] = []

        async def sender() -> None:
            while True:
                out = await outbox.get()
                cap.frame_out(out.stored, out.kind)
                await ws.send(out.payload)
                if client.request_interval:
                    await asyncio.sleep(client.request_interval)

        async def heartbeats() -> None:
            while True:
                await asyncio.sleep(client.heartbeat_interval)
                hb = client.heartbeat()
                if hb is not None:
                    outbox.put_nowait(hb)

        async def reader() -> None:
            nonlocal last_in
            journal, writable = cap.journal, self._writable
            async for batch in _batches(ws):
                last_in = time.monotonic()
                done = 0
                while done < len(batch):
                    # no more frames at once than the buffered-rows cap has room for
                    room = (self.max_buffered_rows - cap.buffered_rows) // ROWS_PER_FRAME
                    take = max(1, room)
                    events = cap.batch_in(batch[done:done + take])
                    done += take
                    if cap.pending and self.sink is not None:
                        events += cap.decode_pending()      # a live consumer: no waiting
                    if journal.buffered >= JOURNAL_FLUSH_RECORDS and not cap.flush_journal():
                        await self._blocked()
                    if cap.buffered_rows >= self.max_buffered_rows:
                        # Parquet is slower than the venue: wait for the publish in flight
                        # (the socket fills up meanwhile; nothing read is dropped).
                        self._room.clear()
                        await self._reader_pause(self._room)
                        last_in = time.monotonic()
                    if events:
                        await self._emit(events)
                        for out in client.after(events):
                            outbox.put_nowait(out)
                        why = client.permanent(None, events)
                        if why:
                            fatal_close.append(why)
                            return
                    if not writable.is_set():
                        # Back-pressure: not reading makes the socket buffers fill up, so
                        # the venue slows down or drops us; nothing read is ever dropped.
                        await self._reader_pause(writable)
                        last_in = time.monotonic()

        async def watchdog() -> None:
            nonlocal last_in
            while True:
                await asyncio.sleep(min(1.0, self.idle_timeout / 4))
                if self._reader_waiting or not self._writable.is_set():
                    last_in = time.monotonic()      # our own pause is not the venue's silence
                elif time.monotonic() - last_in > self.idle_timeout:
                    return

        tasks = {asyncio.create_task(c) for c in (sender(), heartbeats(), reader(), watchdog())}
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait(tasks | {stop}, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks | {stop}:
            t.cancel()
        await asyncio.gather(*tasks, stop, return_exceptions=True)
        for t in done:
            if t is not stop and not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if not isinstance(exc, ConnectionClosed):
                    cap.error(f"{type(exc).__name__}: {exc}")
        if fatal_close:
            self.fatal = fatal_close[0]
            await ws.close(1000, "tickrec: permanent error")
            return ws.close_code, self.fatal
        if stop in done:
            await ws.close(1000, "recorder stopped")
            return 1000, "recorder stopped"
        if ws.close_code is None:       # the watchdog fired: the server went quiet
            reason = f"watchdog: no frame for {self.idle_timeout:g}s"
            ws.transport.abort()
            return None, reason
        # a connection we failed ourselves (RFC 6455) says so: "closed by tickrec: ..."
        code, reason = ws.close_code, ws.close_reason
        return code, reason or ("connection lost" if code == 1006 else "")

    async def _reader_pause(self, event: asyncio.Event) -> None:
        """The reader waits for ``event``; the watchdog meanwhile does not count silence."""
        self._reader_waiting = True
        try:
            await event.wait()
        finally:
            self._reader_waiting = False

    async def _emit(self, events: list[Any]) -> None:
        if self.sink is not None and events:
            await self.sink(events)

    async def _journal_flusher(self) -> None:
        cap = self.capture
        assert cap is not None
        while True:
            await asyncio.sleep(JOURNAL_FLUSH_S)
            if cap.blocked is None and not cap.flush_journal():
                await self._blocked()
            if self.sink is None and cap.decode_due():
                cap.decode_pending(deliver=False)   # rows keep up with a quiet feed

    async def _publisher(self) -> None:
        cap = self.capture
        assert cap is not None
        while True:
            await asyncio.sleep(0.1)
            if cap.blocked is None and cap.publish_due():
                batch = cap.take()
                if batch is None:           # the journal flush before it failed
                    await self._blocked()
                    continue
                self._room.set()
                # A worker thread cannot be cancelled; run() waits for this future before
                # close() publishes, so two publishes never race on the checkpoint.
                self._publishing = asyncio.ensure_future(asyncio.to_thread(cap.publish, batch))
                try:
                    await asyncio.shield(self._publishing)
                except Exception as exc:  # noqa: BLE001 - ENOSPC above all; any failure
                    cap.publish_failed(batch, exc)      # keeps the rows and pauses reading
                    await self._blocked()

    async def _blocked(self) -> None:
        """The store cannot be written: stop reading, say so once."""
        cap = self.capture
        assert cap is not None and cap.blocked is not None
        if not self._writable.is_set():
            return
        self._writable.clear()
        msg = (f"{self.feed}: {cap.blocked}: stopped reading from the venue (nothing read is "
               f"dropped); retrying every {STORE_RETRY_S:g}s")
        log.error("%s", msg)
        self.on_notice(msg)
        await self._emit([Status(self.spec.name, "error", time.time_ns(), msg)])

    async def _store_retry(self) -> None:
        cap = self.capture
        assert cap is not None
        while True:
            await asyncio.sleep(STORE_RETRY_S)
            if cap.blocked is None or (self._publishing is not None
                                       and not self._publishing.done()):
                continue
            since = cap.blocked_since or 0
            if cap.retry():
                events = cap.resumed()
                msg = (f"{self.feed}: the store is writable again after "
                       f"{(cap.clock.now() - since) / 1e9:.1f}s: reading resumed")
                log.warning("%s", msg)
                self.on_notice(msg)
                self._room.set()
                self._writable.set()
                await self._emit(events + [Status(self.spec.name, "resumed", time.time_ns(),
                                                  msg)])

    async def _wait_writable(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        writable = asyncio.ensure_future(self._writable.wait())
        await asyncio.wait({stop, writable}, return_when=asyncio.FIRST_COMPLETED)
        for t in (stop, writable):
            t.cancel()


async def _batches(ws: Any) -> AsyncIterator[list[tuple[bytes, bool]]]:
    """What a connection has read, as batches of ``(payload, is_text)``: a WebSocket
    connection hands out everything read since the last batch, a framed TCP one a
    packet at a time."""
    if isinstance(ws, WsConnection):
        while (batch := await ws.recv_batch()) is not None:
            yield batch
    else:
        async for packet in ws:
            yield [(packet, False)]


class LiveFeed:
    """The Feed protocol over a live connection (records too when given a root).

    Without a root (None or "") the capture goes to a temporary store removed on exit.
    """

    def __init__(self, venue: str, url: str, symbols: Sequence[str], root: Path | str | None,
                 maxsize: int = 10_000, **kw: Any) -> None:
        import tempfile
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root:
            where: Path | str = root
        else:               # None or "": no root
            self._tmp = tempfile.TemporaryDirectory(prefix="tickrec-live-")
            where = self._tmp.name
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.recorder = Recorder(venue, url, symbols, where, sink=self._put, **kw)
        self._task: asyncio.Task[None] | None = None

    async def _put(self, events: list[Any]) -> None:
        # A bounded queue: a slow consumer slows the reading (TCP back-pressure),
        # it never makes memory grow or events vanish.
        for ev in events:
            if not isinstance(ev, Status):
                await self._queue.put(ev)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.recorder.run())
        self._task.add_done_callback(lambda _: asyncio.ensure_future(self._queue.put(None)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.recorder.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    def now(self) -> int:
        """The feed's current time (Feed protocol): the wall clock, ns since the epoch."""
        return time.time_ns()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev


def connect(venue: str, url: str, symbols: Sequence[str], root: Path | str | None = None,
            **kw: Any) -> LiveFeed:
    """``async with recorder.connect("alltick", url=..., symbols=[...]) as feed``."""
    return LiveFeed(venue, url, symbols, root, **kw)
