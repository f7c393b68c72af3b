"""A deterministic market for the simulators, and the fault plan.

``Market(symbols, seed)`` yields ``Tick``s: for each step one symbol, a trade
or a depth update, its per-symbol sequence number (one counter per symbol
shared by all its streams, as AllTick's ``seq``) and prices from a seeded random
walk. The same seed gives the same ticks in the same order; only wall-clock
timestamps differ between runs.

Faults: ``kind@N[:arg]`` joined by commas, N being the market step at which the
fault fires:

    disconnect@N     drop every client connection abruptly after step N
    skip@N           step N consumes a sequence number but is never sent
    dup@N            step N is sent twice
    malformed@N      a frame that is not valid JSON is sent after step N
    stall@N:S        after step N the server goes silent for S seconds (half-open)
    dropupdate@N     (Noren) step N's partial update is never sent
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from schemas.errors import ConfigError

FAULT_KINDS = ("disconnect", "skip", "dup", "malformed", "stall", "dropupdate")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    step: int
    arg: float = 0.0


def parse_faults(spec: str | None) -> dict[int, list[Fault]]:
    plan: dict[int, list[Fault]] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        try:
            kind, _, rest = part.partition("@")
            step_s, _, arg_s = rest.partition(":")
            fault = Fault(kind, int(step_s), float(arg_s) if arg_s else 0.0)
        except ValueError:
            raise ConfigError(f"bad fault {part!r}: expected kind@STEP[:ARG]") from None
        if kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if kind == "stall" and fault.arg <= 0:
            raise ConfigError(f"stall needs seconds: stall@{step_s}:SECONDS")
        plan.setdefault(fault.step, []).append(fault)
    return plan


@dataclass(slots=True)
class Tick:
    step: int
    symbol: str
    stream: str                  # "trades" | "depth"
    seq: int
    price: float
    size: float
    side: int                    # 0 neutral, 1 buy, 2 sell
    bids: list[tuple[float, float]] = field(default_factory=list)
    asks: list[tuple[float, float]] = field(default_factory=list)
    strings: bool = True         # encode values as JSON strings (else numbers)


class Market:
    def __init__(self, symbols: list[str], seed: int = 1, depth: int = 5,
                 trade_share: float = 0.6) -> None:
        if not symbols:
            raise ConfigError("the simulator needs at least one symbol")
        self.symbols = symbols
        self.rng = random.Random(seed)
        self.depth = depth
        self.trade_share = trade_share
        self.seq = {s: 0 for s in symbols}
        self.mid = {s: 100.0 + 10 * i for i, s in enumerate(symbols)}
        self.step = 0

    def next(self) -> Tick:
        rng = self.rng
        sym = self.symbols[rng.randrange(len(self.symbols))]
        self.seq[sym] += 1
        mid = self.mid[sym] = max(1.0, round(self.mid[sym] + rng.choice((-0.01, 0.0, 0.01)), 2))
        self.step += 1
        strings = rng.random() < 0.5
        if rng.random() < self.trade_share:
            side = rng.choice((0, 1, 2))
            price = round(mid + (0.01 if side == 1 else -0.01 if side == 2 else 0.0), 2)
            return Tick(self.step, sym, "trades", self.seq[sym], price,
                        float(rng.randint(1, 50) * 100), side, strings=strings)
        bids = [(round(mid - 0.01 * (i + 1), 2), float(rng.randint(1, 99) * 100))
                for i in range(self.depth)]
        asks = [(round(mid + 0.01 * (i + 1), 2), float(rng.randint(1, 99) * 100))
                for i in range(self.depth)]
        return Tick(self.step, sym, "depth", self.seq[sym], mid, 0.0, 0, bids, asks, strings)
