"""The simulator: a deterministic market behind a venue's own wire protocol.

The market and the fault plan are venue-neutral (``market.py``); a small
adapter per venue turns ticks into that venue's frames (the same encoders the
codec tests use). Statistics of what was *really sent* (counted after the
socket write, so frames lost in a dropped connection are not counted) are kept
per symbol for accounting tests.

The market starts when it has an audience, as a vendor's stream starts for a
client when it subscribes: step 1 is played once every symbol of ``audience``
(default: all) is subscribed, on every stream the venue has, by some client. So
what a recorder receives, and where a fault lands in it, depends on the seed and
not on how fast the client connected. A client that subscribes to less (a single
stream, a subset of the symbols) starts the market ``START_GRACE_S`` after the
first connection instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from replay.sim.market import Fault, Market, Tick, parse_faults
from replay.wire import Conn, WireServer
from schemas.venues.base import ServerSession

CATCH_UP_S = 0.05       # at most this much market time emitted per turn of the loop
START_GRACE_S = 10.0    # the market starts this long after the first connection at the latest
AUDIENCE_POLL_S = 0.005


class VenueAdapter(Protocol):
    """What a venue brings to the simulator. Optional extras, looked up with getattr:
    ``market(symbols, seed) -> Market`` (ticks that fit the venue: bars, snapshots)
    and ``default_rate`` (steps per second when none is given; else 100)."""
    path: str

    def session(self, token: str | None, idle_timeout: float) -> ServerSession: ...
    def render(self, tick: Tick) -> list[tuple[str, str, bytes | str]]: ...
    def malformed(self) -> bytes | str: ...

    def subscribed(self, session: Any, symbol: str) -> bool:
        """Whether ``session`` (one of this adapter's) receives every stream of ``symbol``."""
        ...


@dataclass
class SymbolStats:
    first_seq: int | None = None
    last_seq: int | None = None
    delivered: int = 0
    duplicates: int = 0
    skipped: list[int] = field(default_factory=list)


class Simulator:
    def __init__(self, adapter: VenueAdapter, symbols: list[str], *, rate: float | None = None,
                 seed: int = 1, faults: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, token: str | None = None, idle_timeout: float = 30.0,
                 steps: int | None = None, market: Market | None = None,
                 audience: Iterable[str] | None = None) -> None:
        self.adapter = adapter
        make_market = getattr(adapter, "market", None)
        self.market = market or (make_market(symbols, seed) if make_market else Market(symbols, seed))
        self.rate = rate if rate is not None else float(getattr(adapter, "default_rate", 100.0))
        self.steps = steps
        self.plan = parse_faults(faults)
        self.audience = set(symbols if audience is None else audience)
        self.started = asyncio.Event()      # set when step 1 is played
        self.step = 0                       # the last step played
        self.stats: dict[str, SymbolStats] = {s: SymbolStats() for s in symbols}
        self.malformed_sent = 0
        self.faults_fired: list[Fault] = []
        self.server = WireServer(lambda: adapter.session(token, idle_timeout), host=host,
                                 port=port, path=adapter.path, on_sent=self._sent)
        self._task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    @property
    def url(self) -> str:
        return self.server.url

    def _sent(self, conn: Conn, meta: Any) -> None:
        if meta == "malformed":
            self.malformed_sent += 1
            return
        symbol, seq, dup = meta
        st = self.stats[symbol]
        st.delivered += 1
        st.duplicates += dup
        if st.first_seq is None:
            st.first_seq = seq
        st.last_seq = seq if st.last_seq is None else max(st.last_seq, seq)

    async def start(self) -> str:
        url = await self.server.start()
        self._task = asyncio.create_task(self._run())
        return url

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _emit(self, tick: Tick, dup: int = 0) -> None:
        for symbol, stream, frame in self.adapter.render(tick):
            self.server.push(symbol, stream, frame, (symbol, tick.seq, dup))

    def _has_audience(self) -> bool:
        clients = list(self.server.clients)
        return all(any(self.adapter.subscribed(c.session, s) for c in clients)
                   for s in self.audience)

    async def _wait_for_audience(self) -> None:
        """Return once every symbol of the audience is subscribed (``_has_audience``), or
        ``START_GRACE_S`` after the first client connected, whichever comes first."""
        first_client: float | None = None
        while not self._has_audience():
            if first_client is None and self.server.clients:
                first_client = time.monotonic()
            if first_client is not None and time.monotonic() - first_client >= START_GRACE_S:
                return
            await asyncio.sleep(AUDIENCE_POLL_S)

    async def _run(self) -> None:
        await self._wait_for_audience()
        self.started.set()
        t0 = time.monotonic()
        n = 0
        while self.steps is None or n < self.steps:
            due = int((time.monotonic() - t0) * self.rate) + 1
            if self.steps is not None:
                due = min(due, self.steps)
            # behind (starved of CPU): catch up 50 ms of steps per turn of the loop, so
            # connections, pings and a stop are still served between the turns
            due = min(due, n + max(1, int(self.rate * CATCH_UP_S)))
            while n < due:
                tick = self.market.next()
                n = self.step = n + 1
                faults = self.plan.get(n, [])
                kinds = {f.kind for f in faults}
                self.faults_fired += faults
                if "dropupdate" in kinds:
                    # the venue's state moves on, the frames are lost (a stateful adapter's
                    # next partial update then omits what changed here)
                    self.adapter.render(tick)
                    self.stats[tick.symbol].skipped.append(tick.seq)
                elif "skip" in kinds:
                    self.stats[tick.symbol].skipped.append(tick.seq)
                else:
                    self._emit(tick)
                    if "dup" in kinds:
                        self._emit(tick, dup=1)
                if "malformed" in kinds:
                    self.server.broadcast(self.adapter.malformed(), "malformed")
                if "disconnect" in kinds:
                    await asyncio.sleep(0.05)       # let queued frames reach the socket first
                    self.server.drop_all()
                for f in faults:
                    if f.kind == "stall":
                        self.server.stall(f.arg)
            await asyncio.sleep(0.002)
        self.done.set()


def make_adapter(venue: str, **options: Any) -> VenueAdapter:
    from importlib import import_module

    from schemas.errors import ConfigError
    try:
        mod = import_module(f"replay.sim.{venue}")
    except ModuleNotFoundError:
        raise ConfigError(f"no simulator for venue {venue!r}") from None
    factory: Callable[..., VenueAdapter] = mod.Adapter
    return factory(**options)
