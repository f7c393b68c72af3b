"""Finazon simulator adapter: a clock of virtual seconds → bar updates.

One market step is one virtual second. At every step each symbol's open bar
moves (seeded random walk) and is re-sent to the clients that asked for it:
``1s`` subscribers every step, ``10s`` every tenth, ``1m`` once, when the bar
closes. A bar lasts ``bar_seconds`` steps (60: a real minute; tests use a few so
they need not wait) and the next bar starts "on the minute": bar open times
``t`` are whole minutes, one minute apart, whatever ``bar_seconds`` is. With
``bar_seconds=60`` and ``rate=1`` (the default) the simulator runs in real time
with bars aligned to the wall-clock minute.

Fault steps are virtual seconds: ``skip@N`` drops second N's updates of every
symbol, ``dup@N`` sends them twice. Some updates carry only ``p`` (older
servers) and some ``aggr:" 1m"`` with the stray space the docs show.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field

from replay.sim.market import Market, Tick
from schemas.errors import ConfigError
from schemas.venues.finazon import FinazonServer, encode_bar

OHLCV = tuple[int, float, float, float, float, float]     # t, open, high, low, close, volume


@dataclass(slots=True)
class BarTick(Tick):
    vsec: int = 0                                  # virtual second of this step (from 0)
    closes: bool = False                           # the bar ends with this second
    bars: dict[str, OHLCV] = field(default_factory=dict)


class BarMarket(Market):
    """Open bars of every symbol, one virtual second per ``next()``; same seed, same bars."""

    def __init__(self, symbols: list[str], seed: int = 1, bar_seconds: int = 60,
                 start: float | None = None) -> None:
        super().__init__(symbols, seed)
        if bar_seconds < 1:
            raise ConfigError("bar_seconds must be at least 1")
        t0 = int(start if start is not None else time.time())
        self.minute0 = t0 - t0 % 60
        self.phase = t0 % 60 if bar_seconds == 60 else 0     # real time: align to the minute
        self.bar_seconds = bar_seconds
        self.open: dict[str, list[float]] = {}
        self.bar_t: dict[str, int] = {}

    def next(self) -> BarTick:
        rng, s = self.rng, self.step
        self.step += 1
        k, pos = divmod(s + self.phase, self.bar_seconds)
        t = self.minute0 + 60 * k
        bars: dict[str, OHLCV] = {}
        for sym in self.symbols:
            move = rng.choice((-0.02, 0.0, 0.01, 0.02))
            mid = self.mid[sym] = max(1.0, round(self.mid[sym] + move, 2))
            if self.bar_t.get(sym) != t:
                self.bar_t[sym] = t
                self.open[sym] = [mid, mid, mid, mid, 0.0]
            o = self.open[sym]
            o[1], o[2], o[3] = max(o[1], mid), min(o[2], mid), mid
            o[4] += float(rng.randint(0, 40) * 10)
            bars[sym] = (t, o[0], o[1], o[2], o[3], o[4])
        first = self.symbols[s % len(self.symbols)]
        return BarTick(self.step, first, "bars", self.step, self.mid[first], 0.0, 0,
                       vsec=s, closes=pos == self.bar_seconds - 1, bars=bars)


def due(frequency: str, tick: BarTick) -> bool:
    """Whether a ``frequency`` subscriber gets this second's update."""
    if frequency == "1s":
        return True
    if frequency == "10s":
        return (tick.vsec + 1) % 10 == 0
    return tick.closes


class Adapter:
    path = "/v1"
    default_rate = 1.0          # virtual seconds per real second

    def __init__(self, bar_seconds: int = 60) -> None:
        self.bar_seconds = bar_seconds
        self.tickers: list[str] = []
        self._sessions: weakref.WeakSet[FinazonServer] = weakref.WeakSet()

    def market(self, symbols: list[str], seed: int) -> BarMarket:
        self.tickers = list(symbols)
        return BarMarket(symbols, seed, self.bar_seconds)

    def session(self, token: str | None, idle_timeout: float) -> FinazonServer:
        # The vendor documents no idle rule (its own example relies on WebSocket pings).
        s = FinazonServer(token, tickers=self.tickers)
        self._sessions.add(s)
        return s

    def render(self, tick: Tick) -> list[tuple[str, str, bytes | str]]:
        assert isinstance(tick, BarTick)
        wanted: set[tuple[str, str]] = set()
        for s in list(self._sessions):
            wanted |= s.variants()
        out: list[tuple[str, str, bytes | str]] = []
        for dataset, freq in sorted(wanted):
            if not due(freq, tick):
                continue
            for sym, (t, o, h, lo, c, v) in tick.bars.items():
                frame = encode_bar(dataset, sym, freq, t, o, h, lo, c, v,
                                   publisher_only=tick.vsec % 7 == 3,
                                   aggr=" 1m" if tick.vsec % 5 == 1 else "1m")
                out.append((sym, f"{dataset}|{freq}", frame))
        return out

    def subscribed(self, session: FinazonServer, symbol: str) -> bool:
        """The ticker in some dataset, at some frequency."""
        return any(ticker == symbol for _, ticker in session.subs)

    def malformed(self) -> str:
        return '{"d":"sim","ch":"bars","f":"1s","s":"AAPL","t":'
