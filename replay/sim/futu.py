"""A simulated Futu OpenD: the deterministic market behind OpenD's TCP protocol.

Good enough for the official Python SDK (``OpenQuoteContext``, ``TickerHandlerBase``,
``subscribe([...], [SubType.TICKER])``) and for our recorder:

- every market step is a trade (``Market(trade_share=1)``), pushed as one
  Qot_UpdateTicker (3011) packet to the connections subscribed to the symbol;
- ``sequence`` is unique and increasing per symbol but not contiguous, its high
  32 bits an epoch second, as OpenD's are;
- a subscribe is followed by OpenD's cached first push (pushDataType 3): the
  symbol's last ``cache_ticks`` ticks, most of them usually already seen by a
  client that reconnects. The market starts when it is subscribed (see
  ``replay.sim.server``), so the first subscriber's cache holds the session's
  earlier trading: ``cache_ticks`` × symbols steps played into the history, sent
  to no one, before step 1;
- the fault ``upstream@N:K`` (besides the market's generic faults) plays an
  outage of OpenD's own connection to its quote server: the K steps after step
  N (counted from step 1, after that earlier trading) are not pushed, then each
  symbol that traded meanwhile gets one refill push (pushDataType 2) of its
  most recent min(50, missed + ``refill_overlap``) ticks;
  ``disconnect@N`` drops the clients' TCP connections instead.

What was really written to a socket is logged, in order, for accounting tests:
``deliveries`` (symbol, sequence, pushDataType) per tick and ``pushes``
(symbol, pushDataType, sequences) per packet.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from replay.sim.market import Market, Tick
from replay.sim.server import Simulator
from replay.tcp_server import TcpConn, TcpWireServer
from schemas.errors import ConfigError
from schemas.venues import futu_frame as ff
from schemas.venues.futu import (
    MARKET_CODES,
    PUSH_REALTIME,
    PUSH_REFILL,
    REFILL_LIMIT,
    ZONES,
    PacketSplitter,
    split_symbol,
)
from schemas.venues.futu_server import FutuServer, TickerData, encode_ticker_push

BASE_EPOCH = 1_700_000_000          # sequences: (BASE_EPOCH + n // 16) << 32 | n * 7
HISTORY = max(REFILL_LIMIT, 256)


def sequence(market_seq: int) -> int:
    """The Futu-like sequence of a symbol's ``market_seq``-th tick: increasing, with holes."""
    return ((BASE_EPOCH + market_seq // 16) << 32) | (market_seq * 7)


class Adapter:
    """Ticks → 3011 packets; keeps each symbol's recent ticks for cache and refill pushes."""
    path = ""

    def __init__(self, cache_ticks: int = 10, refill_overlap: int = 2,
                 keep_alive_interval: int = 10) -> None:
        self.cache_ticks = cache_ticks
        self.refill_overlap = refill_overlap
        self.keep_alive_interval = keep_alive_interval
        self.history: dict[str, deque[TickerData]] = {}
        self.known: set[str] | None = None
        self._conn_ids = itertools.count(7_000_000_001)
        self._push_serial = itertools.count(1)
        self._zones: dict[str, ZoneInfo] = {}

    @property
    def simulator(self) -> type[FutuSimulator]:
        return FutuSimulator

    def session(self, token: str | None, idle_timeout: float) -> FutuServer:
        return FutuServer(token, idle_timeout=idle_timeout, conn_id=next(self._conn_ids),
                          known=self.known, cache=self, cache_ticks=self.cache_ticks,
                          keep_alive_interval=self.keep_alive_interval)

    def last(self, symbol: str, n: int) -> list[TickerData]:
        hist = self.history.get(symbol)
        return list(hist)[-n:] if hist and n > 0 else []

    def _local_time(self, symbol: str, now: datetime) -> str:
        zone = ZONES.get(symbol.partition(".")[0], "UTC")
        tz = self._zones.setdefault(zone, ZoneInfo(zone))
        return now.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    def ticker(self, tick: Tick) -> TickerData:
        """The tick as OpenD would carry it; recorded in the history once per step."""
        hist = self.history.setdefault(tick.symbol, deque(maxlen=HISTORY))
        seq = sequence(tick.seq)
        if hist and hist[-1].sequence == seq:
            return hist[-1]                  # the same step again (a dup fault)
        now = datetime.now(UTC)
        ts = round(now.timestamp(), 3)
        volume = int(tick.size)
        t = TickerData(seq, self._local_time(tick.symbol, now), tick.price, volume,
                       round(tick.price * volume, 4), {0: 3, 1: 1, 2: 2}[tick.side], 1, 32,
                       ts, ts, PUSH_REALTIME)
        hist.append(t)
        return t

    def render(self, tick: Tick) -> list[tuple[str, str, bytes | str]]:
        t = self.ticker(tick)
        market, code = split_symbol(tick.symbol)
        return [(tick.symbol, "ticker",
                 encode_ticker_push(market, code, [t], next(self._push_serial)))]

    def subscribed(self, session: FutuServer, symbol: str) -> bool:
        """Ticker pushes of the symbol registered (Qot_Sub with isRegOrUnRegPush)."""
        return session.push and symbol in session.subs

    def refill(self, symbol: str, missed: int) -> tuple[bytes, list[int]] | None:
        ticks = self.last(symbol, min(REFILL_LIMIT, missed + self.refill_overlap))
        if not ticks:
            return None
        prefix, _, code = symbol.partition(".")
        return (encode_ticker_push(MARKET_CODES[prefix], code, ticks, next(self._push_serial),
                                   push=PUSH_REFILL), [t.sequence for t in ticks])

    def malformed(self) -> bytes:
        """A 3011 packet whose body does not match its SHA1 (framing stays intact)."""
        good = encode_ticker_push(1, "00700", [TickerData(1, "2024-01-02 10:00:00", 1.0, 1, 1.0)])
        return good[:ff.HEADER_SIZE] + bytes(b ^ 0xFF for b in good[ff.HEADER_SIZE:])


def split_faults(spec: str | None) -> tuple[str, dict[int, int]]:
    """Take ``upstream@N:K`` out of a fault spec; the rest is the market's."""
    rest, upstream = [], {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        if not part.startswith("upstream@"):
            rest.append(part)
            continue
        try:
            step, _, k = part.removeprefix("upstream@").partition(":")
            upstream[int(step)] = int(k)
        except ValueError:
            raise ConfigError(f"bad fault {part!r}: expected upstream@STEP:STEPS") from None
        if upstream[int(step)] <= 0:
            raise ConfigError(f"bad fault {part!r}: the outage needs a number of steps")
    return ",".join(rest), upstream


class FutuSimulator(Simulator):
    """The generic simulator over ``TcpWireServer``, with OpenD's cache and refill pushes."""

    def __init__(self, adapter: Adapter, symbols: list[str], *, rate: float = 100.0,
                 seed: int = 1, faults: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, token: str | None = None, idle_timeout: float = 30.0,
                 steps: int | None = None, market: Market | None = None,
                 audience: Iterable[str] | None = None) -> None:
        for s in symbols:
            split_symbol(s)
        generic, self.upstream = split_faults(faults)
        super().__init__(adapter, symbols, rate=rate, seed=seed, faults=generic, host=host,
                         port=port, token=token, idle_timeout=idle_timeout, steps=steps,
                         market=market or Market(symbols, seed, trade_share=1.0),
                         audience=audience)
        adapter.known = set(symbols)
        self.futu = adapter
        for _ in range(adapter.cache_ticks * len(symbols)):     # the trading before step 1
            adapter.ticker(self.market.next())
        tcp = TcpWireServer(lambda: adapter.session(token, idle_timeout), PacketSplitter,
                            host=host, port=port, on_sent=self._sent)
        self.server = tcp       # type: ignore[assignment]  # same surface as WireServer
        self.deliveries: list[tuple[str, int, int]] = []
        self.pushes: list[tuple[str, int, list[int]]] = []     # one per packet sent
        self.outages: list[tuple[int, int]] = []       # (first withheld step, last)
        self._outage_end: int | None = None
        self._missed: dict[str, int] = {}

    # TcpWireServer calls it with its TcpConn, the WireServer of the base with a Conn
    def _sent(self, conn: TcpConn, meta: Any) -> None:   # type: ignore[override]
        if meta == "malformed":
            self.malformed_sent += 1
            return
        symbol, seqs, push, dup = meta
        self.pushes.append((symbol, push, list(seqs)))
        st = self.stats[symbol]
        for seq in seqs:
            self.deliveries.append((symbol, seq, push))
            st.delivered += 1
            st.first_seq = seq if st.first_seq is None else min(st.first_seq, seq)
            st.last_seq = seq if st.last_seq is None else max(st.last_seq, seq)
        st.duplicates += dup

    def _emit(self, tick: Tick, dup: int = 0) -> None:
        if self._outage_end is not None and self.step > self._outage_end:
            self._end_outage()
        if self._outage_end is not None:
            self.futu.ticker(tick)           # OpenD's upstream has it; no client gets it
            self._missed[tick.symbol] = self._missed.get(tick.symbol, 0) + (not dup)
            return
        for symbol, stream, frame in self.futu.render(tick):
            self.server.push(symbol, stream, frame,
                             (symbol, [sequence(tick.seq)], PUSH_REALTIME, dup))
        if self.step in self.upstream and not dup:
            self._outage_end = self.step + self.upstream[self.step]
            self.outages.append((self.step + 1, self._outage_end))

    def _end_outage(self) -> None:
        self._outage_end = None
        for symbol in sorted(self._missed):
            out = self.futu.refill(symbol, self._missed[symbol])
            if out is not None:
                frame, seqs = out
                self.server.push(symbol, "ticker", frame, (symbol, seqs, PUSH_REFILL, 0))
        self._missed.clear()
