"""AllTick simulator adapter: ticks → 22998 / 22999 pushes."""

from __future__ import annotations

import time

from replay.sim.market import Tick
from schemas.venues.alltick import AllTickServer, encode_depth, encode_trade


class Adapter:
    path = "/quote-stock-b-ws-api"

    def __init__(self, request_interval: float = 1.0) -> None:
        self.request_interval = request_interval

    def session(self, token: str | None, idle_timeout: float) -> AllTickServer:
        return AllTickServer(token, idle_timeout=idle_timeout,
                             request_interval=self.request_interval)

    def render(self, tick: Tick) -> list[tuple[str, str, bytes | str]]:
        now_ms = time.time_ns() // 1_000_000
        if tick.stream == "trades":
            frame = encode_trade(tick.symbol, tick.seq, now_ms, tick.price, tick.size, tick.side,
                                 tick.strings)
        else:
            frame = encode_depth(tick.symbol, tick.seq, now_ms, tick.bids, tick.asks, tick.strings)
        return [(tick.symbol, tick.stream, frame)]

    def subscribed(self, session: AllTickServer, symbol: str) -> bool:
        """Both of the symbol's streams (the merged ``seq`` is whole only then)."""
        return symbol in session.trades and symbol in session.depth

    def malformed(self) -> str:
        return '{"cmd_id":22998,"data":{"code":"AAPL.US","seq":'
