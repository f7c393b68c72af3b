"""Noren simulator adapter: market ticks → one instrument state per ``e|tk``, sent as
``tk``/``dk`` snapshots on subscribe and ``tf``/``df`` partial updates afterwards.

Each tick changes the instrument's full state (a trade moves ``lp``, ``v``,
``h``/``l``, ``ap``, ``ltt``…; a depth tick the five levels and ``tbq``/``tsq``).
``render`` returns, per stream, a frame holding only the fields that changed
since that stream's last render, so a client that merges every frame onto its
snapshot holds the server's state. ``dropupdate@N`` (the Simulator renders the
tick and discards the frames) moves the server's state without telling anyone:
exactly a lost partial update, undetectable on the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from replay.sim.market import Tick
from schemas.venues.noren import NorenServer, encode
from schemas.venues.noren_fields import DEPTH, LEVELS, TOUCHLINE

TOUCHLINE_FIELDS = ("e", "tk", "ts", "pp", "ls", "ti", "c", "lp", "pc", "o", "h", "l", "ap",
                    "v", "oi", "ft", "ltq", "ltt", "bp1", "sp1", "bq1", "sq1")
PP = {"CDS": 4}                  # currency derivatives quote four decimals


@dataclass
class Instrument:
    e: str
    tk: str
    pp: int
    state: dict[str, str] = field(default_factory=dict)
    last: dict[str, dict[str, str]] = field(default_factory=dict)   # per stream, at last render
    traded: float = 0.0
    value: float = 0.0

    @classmethod
    def new(cls, key: str) -> Instrument:
        e, _, tk = key.partition("|")
        inst = cls(e, tk, PP.get(e, 2))
        inst.state = {"e": e, "tk": tk, "ts": f"SIM{tk}-EQ" if e == "NSE" else f"SIM{tk}",
                      "pp": str(inst.pp), "ls": "1" if e == "NSE" else "50", "ml": "1",
                      "ti": f"{0.05:.{inst.pp}f}", "c": "NA", "lp": "NA", "pc": "NA",
                      "o": "NA", "h": "NA", "l": "NA", "ap": "NA", "v": "0",
                      "oi": "NA" if e in ("NSE", "BSE") else "100000",
                      "ft": str(int(time.time())), "ltq": "0", "ltt": "NA"}
        for i in range(1, LEVELS + 1):           # Noren shows an empty level as zeros
            for side in "bs":
                inst.state.update({f"{side}p{i}": inst.fmt(0.0), f"{side}q{i}": "0",
                                   f"{side}o{i}": "0"})
        inst.last = {TOUCHLINE: inst.view(TOUCHLINE), DEPTH: inst.view(DEPTH)}
        return inst

    def fmt(self, x: float) -> str:
        return f"{x:.{self.pp}f}"

    def view(self, stream: str) -> dict[str, str]:
        if stream == DEPTH:
            return dict(self.state)
        return {k: self.state[k] for k in TOUCHLINE_FIELDS if k in self.state}

    def apply(self, tick: Tick) -> None:
        s = self.state
        now = time.time()
        s["ft"] = str(int(now))
        if tick.stream == "trades":
            px = tick.price
            if s["c"] == "NA":               # the first trade fixes the "previous close"
                s["c"] = self.fmt(px)
                s["uc"], s["lc"] = self.fmt(px * 1.2), self.fmt(px * 0.8)
                s["o"] = s["h"] = s["l"] = self.fmt(px)
            prev = float(s["c"])
            s["lp"] = self.fmt(px)
            s["h"] = self.fmt(max(float(s["h"]), px))
            s["l"] = self.fmt(min(float(s["l"]), px))
            s["pc"] = f"{(px - prev) / prev * 100:.2f}"
            s["ltq"] = str(int(tick.size))
            self.traded += tick.size
            self.value += tick.size * px
            s["v"] = str(int(self.traded))
            s["ap"] = self.fmt(self.value / self.traded)
            if s["oi"] != "NA":
                s["oi"] = str(int(s["oi"]) + int(tick.size) // 100 * (1 if tick.side == 1 else -1))
            ist = time.gmtime(now + 19_800)          # exchange time, IST
            s["ltt"] = (time.strftime("%H:%M:%S", ist) if self.e == "NSE"
                        else time.strftime("%d-%m-%Y %H:%M:%S", ist))
        else:
            for side, levels in (("b", tick.bids), ("s", tick.asks)):
                for i, (px, qty) in enumerate(levels[:LEVELS], start=1):
                    s[f"{side}p{i}"] = self.fmt(px)
                    s[f"{side}q{i}"] = str(int(qty))
                    s[f"{side}o{i}"] = str(1 + int(qty) // 700)
            s["tbq"] = str(int(sum(q for _, q in tick.bids)))
            s["tsq"] = str(int(sum(q for _, q in tick.asks)))

    def changes(self, stream: str) -> dict[str, str]:
        """Fields of ``stream`` that changed since its last render (and remember them)."""
        now = self.view(stream)
        before = self.last[stream]
        self.last[stream] = now
        return {k: v for k, v in now.items() if before.get(k) != v}


class Adapter:
    """``on_fail`` (notok|close), ``ack`` (ck|cf) and ``jainam`` shape the login check."""

    path = "/NorenWSTP/"

    def __init__(self, on_fail: str = "notok", ack: str = "ck", jainam: bool = False) -> None:
        self.on_fail, self.ack, self.jainam = on_fail, ack, jainam
        self.instruments: dict[str, Instrument] = {}

    def _inst(self, key: str) -> Instrument:
        inst = self.instruments.get(key)
        if inst is None:
            inst = self.instruments[key] = Instrument.new(key)
        return inst

    def session(self, token: str | None, idle_timeout: float) -> NorenServer:
        return NorenServer(token, snapshot=self.snapshot, idle_timeout=max(idle_timeout, 60.0),
                           on_fail=self.on_fail, ack=self.ack, jainam=self.jainam)

    def snapshot(self, key: str, stream: str) -> str | None:
        e, sep, tk = key.partition("|")
        if not sep or not e or not tk:
            return None
        inst = self._inst(key)
        return encode("tk" if stream == TOUCHLINE else "dk", e, tk, inst.last[stream])

    def render(self, tick: Tick) -> list[tuple[str, str, bytes | str]]:
        inst = self._inst(tick.symbol)
        inst.apply(tick)
        out: list[tuple[str, str, bytes | str]] = []
        for stream, t in ((TOUCHLINE, "tf"), (DEPTH, "df")):
            changed = inst.changes(stream)
            if changed:
                out.append((tick.symbol, stream, encode(t, inst.e, inst.tk, changed)))
        return out

    def subscribed(self, session: NorenServer, symbol: str) -> bool:
        """Logged in, with the symbol's touchline and its depth."""
        return session.logged_in and all(symbol in session.subs[s] for s in (TOUCHLINE, DEPTH))

    def malformed(self) -> str:
        return '{"t":"tf","e":"NSE","tk":"22","lp":'
