"""HedgeTech simulator adapter: full snapshots, one symbol per step, round-robin.

Each step advances one symbol's state (seeded random walk of a Rial price,
trades into the day's aggregate, a 3-level IME book whose third level is
sometimes empty, i.e. zeros, a 5-level TSE best-limit with order counts, an
order book, the last minute's OHLCV, open interest, institutional/individual
flow, fund NAV) and sends it to every client that asked for that symbol: IME
clients get one ``IME Stream`` snapshot, TSE/IFB clients one message per
subscribed channel. The rate (steps per second) is the snapshot rate.

Timestamps are naive Tehran local time with microseconds, as in the vendor's
examples. The server side (``HedgeTechServer``) checks the ``Authorization``
header and the query, and closes with 1008 on a bad token, an unknown
contract/symbol or an unknown channel.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from replay.sim.market import Market, Tick
from schemas.schedule import zone
from schemas.venues.hedgetech import IME_CHANNEL, TEHRAN, HedgeTechServer, encode

IME_PATH = "/data-engine/ime/live/data/websocket/contract/name"
TSE_PATH = "/data-engine/tse-ifb/live/data/websocket/symbol/name"
TICK = 10.0             # price step in Rial
BAR_STEPS = 30          # rounds per "last minute" bar of a symbol


@dataclass(slots=True)
class SnapshotTick(Tick):
    ime: dict[str, Any] = field(default_factory=dict)            # IME Stream data
    tse: dict[str, dict[str, Any]] = field(default_factory=dict)  # TSE/IFB channel → data


@dataclass
class _State:
    mid: float
    trades: int = 0
    volume: int = 0
    value: float = 0.0
    first: float = 0.0
    high: float = 0.0
    low: float = 0.0
    last: float = 0.0
    bar: list[float] = field(default_factory=list)       # open, high, low, close, volume
    bar_rounds: int = 0
    open_interest: int = 1000
    oi_change: int = 0
    flow: dict[str, int] = field(default_factory=dict)


FLOW_KEYS = tuple(f"{side}_{what}_{who}" for side in ("buy", "sell") for what in ("count", "volume")
                  for who in ("individual", "institution"))


class SnapshotMarket(Market):
    def __init__(self, symbols: list[str], seed: int = 1) -> None:
        super().__init__(symbols, seed)
        self.state = {s: _State(mid=1_000_000.0 + 250_000.0 * i, flow=dict.fromkeys(FLOW_KEYS, 0))
                      for i, s in enumerate(symbols)}

    def next(self) -> SnapshotTick:
        rng = self.rng
        sym = self.symbols[self.step % len(self.symbols)]
        self.step += 1
        st = self.state[sym]
        st.mid = max(TICK * 10, st.mid + TICK * rng.choice((-2, -1, 0, 1, 2)))
        for _ in range(rng.randint(0, 3)):
            price, qty = st.mid + TICK * rng.choice((-1, 0, 1)), rng.randint(1, 20) * 10
            st.first = st.first or price
            st.high, st.low = max(st.high, price), min(st.low or price, price)
            st.trades, st.volume, st.last = st.trades + 1, st.volume + qty, price
            st.value += price * qty
            if not st.bar or st.bar_rounds >= BAR_STEPS:
                st.bar, st.bar_rounds = [price, price, price, price, 0.0], 0
            b = st.bar
            b[1], b[2], b[3], b[4] = max(b[1], price), min(b[2], price), price, b[4] + qty
            who = rng.choice(("individual", "institution"))
            for side in ("buy", "sell"):
                st.flow[f"{side}_count_{who}"] += 1
                st.flow[f"{side}_volume_{who}"] += qty
        st.bar_rounds += 1
        st.oi_change = rng.randint(-3, 4)
        st.open_interest = max(0, st.open_interest + st.oi_change)
        levels = [(st.mid - TICK * (i + 1), st.mid + TICK * (i + 1), rng.randint(1, 50) * 10,
                   rng.randint(1, 50) * 10, rng.randint(1, 9), rng.randint(1, 9)) for i in range(5)]
        empty_third = rng.random() < 0.25
        aggregate = {"date": "", "time": "", "trade_count": st.trades, "total_volume": st.volume,
                     "total_value": round(st.value), "closing_price": st.last,
                     "last_price": st.last, "low_price": st.low, "high_price": st.high,
                     "open_price": st.first, "previous_close": 1_000_000.0}
        ime_book = {}
        for i, (bp, ap, bq, aq, _, _) in enumerate(levels[:3]):
            if i == 2 and empty_third:
                bp = ap = bq = aq = 0
            ime_book[str(i + 1)] = {"buy_quantity": bq, "buy_price": bp,
                                    "sell_quantity": aq, "sell_price": ap}
        ime = {"BestLimit": ime_book, "Aggregate": aggregate,
               "AllowedPriceRange": {"minAllowedPrice": st.mid * 0.95,
                                     "maxAllowedPrice": st.mid * 1.05},
               "ContractInfo": {"open_interest": st.open_interest,
                                "open_interest_changes": st.oi_change}}
        best = {str(i + 1): {"buy_order_count": bn, "buy_quantity": bq, "buy_price": bp,
                             "sell_order_count": an, "sell_quantity": aq, "sell_price": ap}
                for i, (bp, ap, bq, aq, bn, an) in enumerate(levels)}
        book = {"Buy": [{"price": p, "quantity": q, "count": n} for p, _, q, _, n, _ in levels],
                "Sell": [{"price": p, "quantity": q, "count": n} for _, p, _, q, _, n in levels]}
        bar = st.bar or [st.mid] * 4 + [0.0]
        tse: dict[str, dict[str, Any]] = {
            "best-limit": best, "order-book": book, "aggregate": aggregate,
            "ohlcv-last-1m": dict(zip(("open", "high", "low", "close", "volume"), bar,
                                      strict=True)),
            "institutional-vs-individual": dict(st.flow),
            "contract-info": {"open_interest": st.open_interest, "initial_margin": 50_000,
                              "required_margin": 40_000},
            "fund-info": {"nav": round(st.mid * 0.99, 1), "units": 1_000_000,
                          "marketCap": round(st.mid * 1_000_000), "as_of": ""}}
        return SnapshotTick(self.step, sym, "snapshot", self.step, st.mid, 0.0, 0, ime=ime, tse=tse)


def tehran_now() -> str:
    """Naive Tehran local time with microseconds, as the Data Engine writes it."""
    return datetime.now(zone(TEHRAN)).replace(tzinfo=None).isoformat(timespec="microseconds")


class Adapter:
    path = IME_PATH
    default_rate = 20.0

    def __init__(self, path: str | None = None) -> None:
        if path is not None:
            self.path = path
        self.symbols: list[str] = []
        self._sessions: weakref.WeakSet[HedgeTechServer] = weakref.WeakSet()

    def market(self, symbols: list[str], seed: int) -> SnapshotMarket:
        self.symbols = list(symbols)
        return SnapshotMarket(symbols, seed)

    def session(self, token: str | None, idle_timeout: float) -> HedgeTechServer:
        s = HedgeTechServer(token, symbols=self.symbols)
        self._sessions.add(s)
        return s

    def render(self, tick: Tick) -> list[tuple[str, str, bytes | str]]:
        assert isinstance(tick, SnapshotTick)
        wanted: set[str] = set()
        for s in list(self._sessions):
            if s.sub is not None and tick.symbol in s.sub.symbols:
                wanted |= s.streams
        stamp = tehran_now()
        out: list[tuple[str, str, bytes | str]] = []
        for stream in sorted(wanted):
            market, id_field, channel = (stream.split(":", 2) + [IME_CHANNEL])[:3]
            data = tick.ime if market == "ime" else tick.tse[channel]
            out.append((tick.symbol, stream, encode(channel, id_field, tick.symbol, stamp, data)))
        return out

    def subscribed(self, session: HedgeTechServer, symbol: str) -> bool:
        """The handshake named the symbol (its query string is the whole subscription)."""
        return session.sub is not None and symbol in session.sub.symbols

    def malformed(self) -> str:
        return ('{"channel":"IME Stream","contractName":"x","timestamp":"2025-11-14T12:00:00",'
                '"data":{')
