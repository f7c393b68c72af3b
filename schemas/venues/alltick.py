"""AllTick: trades (22998) and depth (22999) over WebSocket, JSON frames.

PROTOCOLS.md, AllTick section. Requests are ``{cmd_id, seq_id, trace, data}``;
replies add ``ret`` (200 = ok) and ``msg``; pushes carry ``{cmd_id, data}``. A
subscribe replaces that interface's list. ``seq`` is one counter per symbol
shared by trades and depth, so a jump is a loss only when both streams of the
symbol are subscribed on the connection; a repeat or a decrease always counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from schemas.errors import ProtocolError
from schemas.events import Book, Event, RawRecord, Status, Trade
from schemas.venues import alltick_fast as fast
from schemas.venues.base import (
    Client,
    Decoder,
    Dial,
    FastRun,
    FrameContext,
    Outgoing,
    Reply,
    ServerSession,
    check_storable,
    reject,
)
from schemas.venues.urls import redact_url, with_query
from schemas.venues.values import epoch_ns, integer, json_object, num

VENUE = "alltick"
HEARTBEAT, HEARTBEAT_REPLY = 22000, 22001
SUB_DEPTH, SUB_DEPTH_REPLY = 22002, 22003
SUB_TRADES, SUB_TRADES_REPLY = 22004, 22005
CANCEL, CANCEL_REPLY = 22006, 22007
PUSH_TRADE, PUSH_DEPTH = 22998, 22999
REPLY_OF = {HEARTBEAT: HEARTBEAT_REPLY, SUB_DEPTH: SUB_DEPTH_REPLY, SUB_TRADES: SUB_TRADES_REPLY,
            CANCEL: CANCEL_REPLY}
ERRORS = {400: "bad request", 401: "bad token", 429: "rate limit", 600: "unknown code",
          603: "plan too low", 604: "code not authorised", 605: "rate limit",
          606: "too many requests"}
FATAL = {401}
SIDES = {1: "buy", 2: "sell"}
FAST_MIN = 512          # smaller batches go through ``feed``: the bulk path has a fixed cost



def _levels(side: Any, name: str) -> tuple[list[float], list[float]]:
    if side is None:
        return [], []
    if not isinstance(side, list):
        raise ProtocolError(f"{name} is not a list")
    try:        # fast path: well-formed levels (finite: NaN and inf take the slow path)
        px, sz = [float(lvl["price"]) for lvl in side], [float(lvl["volume"]) for lvl in side]
        total = sum(px) + sum(sz)
        if total - total == 0.0:
            return px, sz
    except (TypeError, ValueError, KeyError):
        pass
    px, sz = [], []
    for lvl in side:
        if not isinstance(lvl, dict):
            raise ProtocolError(f"{name} level is not an object")
        p = num(lvl.get("price"), f"{name}.price")
        if p is None:
            continue
        px.append(p)
        sz.append(num(lvl.get("volume"), f"{name}.volume") or 0.0)
    return px, sz


class AllTickDecoder(Decoder):
    venue = VENUE

    def __init__(self, session: str = "") -> None:
        super().__init__(session)
        self.depth_subs: set[str] = set()
        self.trade_subs: set[str] = set()
        # Requests sent but not yet in force: the server applies a subscription when it
        # answers it (ret 200), or at the latest when a push of that stream arrives.
        self.pending: dict[int, tuple[int, set[str]]] = {}

    def on_outgoing(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        cmd = obj.get("cmd_id")
        data = obj.get("data") or {}
        if cmd in (SUB_DEPTH, SUB_TRADES):
            codes = {str(s.get("code")) for s in data.get("symbol_list") or []
                     if isinstance(s, dict)}
            self.pending[REPLY_OF[cmd]] = (integer(obj.get("seq_id"), "seq_id") or 0, codes)
        elif cmd == CANCEL:
            kind = integer(data.get("cancel_type"), "cancel_type") or 0
            if kind in (0, 1):
                self.depth_subs = set()
                self.pending.pop(SUB_DEPTH_REPLY, None)
            if kind in (0, 2):
                self.trade_subs = set()
                self.pending.pop(SUB_TRADES_REPLY, None)

    def _apply(self, reply_cmd: int) -> None:
        _, codes = self.pending.pop(reply_cmd)
        if reply_cmd == SUB_DEPTH_REPLY:
            self.depth_subs = codes
        else:
            self.trade_subs = codes

    def batchable(self, rec: RawRecord) -> bool:
        return rec.direction == "in" and rec.payload.startswith(fast.PREFIXES)

    def feed_batch(self, recs: Sequence[RawRecord]) -> list[FastRun | list[Event | Status]]:
        """The reference path's rows and state, with pushes in canonical form decoded in
        bulk (``alltick_fast``). A push whose tracking gives a gap, and every other
        frame, is decoded on its own (``feed``, or the same steps), in order."""
        if len(recs) < FAST_MIN or not all(r.direction == "in" for r in recs):
            return super().feed_batch(recs)
        p = fast.parse(recs, self.session)
        reply_of = {fast.TRADE: SUB_TRADES_REPLY, fast.DEPTH: SUB_DEPTH_REPLY}
        observe = self.tracker.observe
        out: list[FastRun | list[Event | Status]] = []
        start = -1                                  # first record of the open run
        pending, dsubs, tsubs = self.pending, self.depth_subs, self.trade_subs
        for i, (kind, code, seq, rec) in enumerate(zip(p.kinds, p.symbols, p.seqs, recs)):
            if kind:
                assert code is not None and seq is not None     # a qualifying push has both
                if pending and reply_of[kind] in pending and code in pending[reply_of[kind]][1]:
                    self._apply(reply_of[kind])
                    pending, dsubs, tsubs = self.pending, self.depth_subs, self.trade_subs
                gaps = observe(code, code, seq, rec.ts_recv,
                               contiguous=code in dsubs and code in tsubs)
                if not gaps:
                    if start < 0:
                        start = i
                    continue
            if start >= 0:
                out.append(self._run(p, recs, start, i))
                start = -1
            out.append(self._with_gaps(p, rec, kind, p.row[i], gaps) if kind else self.feed(rec))
            pending, dsubs, tsubs = self.pending, self.depth_subs, self.trade_subs
        if start >= 0:
            out.append(self._run(p, recs, start, len(recs)))
        return out

    def _with_gaps(self, p: fast.Pushes, rec: RawRecord, kind: int, j: int,
                   gaps: list[Any]) -> list[Event | Status]:
        """A qualifying push whose tracking gave gaps: the events ``feed`` makes of it."""
        ctx = FrameContext(self.venue, self.session, rec)
        try:
            ctx.gaps(gaps)
            ctx.add(fast.CLASSES[kind], **p.event_fields(kind, j))
            check_storable(ctx.events)
        except Exception as exc:  # noqa: BLE001 - as in feed
            reject(ctx, exc)
        return ctx.events

    def _run(self, p: fast.Pushes, recs: Sequence[RawRecord], start: int, end: int) -> FastRun:
        """Records ``start:end``, all qualifying and without gaps."""
        kinds = p.kinds[start:end]
        tables = {}
        for kind, name in ((fast.TRADE, "trades"), (fast.DEPTH, "book")):
            n = kinds.count(kind)
            if n:
                first = p.row[start + kinds.index(kind)]
                tables[name] = p.table(kind).slice(first, n)

        def events() -> list[Event]:
            return [fast.CLASSES[kind](venue=self.venue, ts_recv=rec.ts_recv, session=self.session,
                                       frame=rec.frame, pos=0, **p.event_fields(kind, j))
                    for rec, kind, j in zip(recs[start:end], kinds, p.row[start:end])]
        return FastRun(tables, events)

    def on_incoming(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        cmd = integer(obj.get("cmd_id"), "cmd_id")
        if cmd in (PUSH_TRADE, PUSH_DEPTH):
            data = obj.get("data")
            if not isinstance(data, dict):
                raise ProtocolError(f"push {cmd} without a data object")
            code = data.get("code")
            if not isinstance(code, str) or not code:
                raise ProtocolError(f"push {cmd} without a code")
            seq = integer(data.get("seq"), "seq")
            ts_event = epoch_ns(data.get("tick_time"), "tick_time")
            reply_cmd = SUB_TRADES_REPLY if cmd == PUSH_TRADE else SUB_DEPTH_REPLY
            if reply_cmd in self.pending and code in self.pending[reply_cmd][1]:
                self._apply(reply_cmd)
            if cmd == PUSH_TRADE:
                event: dict[str, Any] = dict(
                    price=num(data.get("price"), "price"), size=num(data.get("volume"), "volume"),
                    turnover=num(data.get("turnover"), "turnover"),
                    side=SIDES.get(integer(data.get("trade_direction"), "trade_direction") or 0,
                                   "unknown"))
                cls: type = Trade
            else:
                bid_px, bid_sz = _levels(data.get("bids"), "bids")
                ask_px, ask_sz = _levels(data.get("asks"), "asks")
                event = dict(depth=max(len(bid_px), len(ask_px)), bid_px=bid_px, bid_sz=bid_sz,
                             ask_px=ask_px, ask_sz=ask_sz)
                cls = Book
            both = code in self.depth_subs and code in self.trade_subs
            ctx.gaps(self.tracker.observe(code, code, seq, rec.ts_recv, contiguous=both))
            ctx.add(cls, symbol=code, ts_event=ts_event, seq=seq, **event)
        elif cmd is not None and cmd in REPLY_OF.values():
            ret = integer(obj.get("ret"), "ret")
            if ret is not None and ret != 200:
                what = ERRORS.get(ret, "error")
                kind = "fatal" if ret in FATAL else "error"
                ctx.status(kind, f"AllTick {cmd}: ret {ret} ({what}) {str(obj.get('msg', ''))[:80]}")
                self.pending.pop(cmd, None)
            elif cmd != HEARTBEAT_REPLY:
                if cmd in self.pending:
                    self._apply(cmd)
                ctx.status("subscribed", f"AllTick {cmd} ok")
        elif obj.get("ret") is not None:
            ret = integer(obj.get("ret"), "ret")
            if ret != 200:
                ctx.status("fatal" if ret in FATAL else "error",
                           f"AllTick: ret {ret} ({ERRORS.get(ret or 0, 'error')})")
        else:
            raise ProtocolError(f"unknown cmd_id {cmd}")


class AllTickClient(Client):
    venue = VENUE
    heartbeat_interval = 10.0
    idle_timeout = 30.0
    reconnect_min = 3.0
    request_interval = 1.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._seq_id = 0
        self.streams = tuple(self.options.get("streams", ("depth", "trades")))
        self.depth_level = int(self.options.get("depth_level", 5))

    def _request(self, cmd: int, data: dict[str, Any]) -> Outgoing:
        self._seq_id += 1
        return Outgoing.text({"cmd_id": cmd, "seq_id": self._seq_id,
                              "trace": f"tickrec-{self._seq_id}", "data": data})

    def dial(self, url: str) -> Dial:
        token = self.credentials.get("token")
        full = with_query(url, token=token) if token else url
        return Dial(full, redact_url(full))

    def on_open(self) -> list[Outgoing]:
        out = []
        if "depth" in self.streams:
            out.append(self._request(SUB_DEPTH, {"symbol_list": [
                {"code": s, "depth_level": self.depth_level} for s in self.symbols]}))
        if "trades" in self.streams:
            out.append(self._request(SUB_TRADES, {"symbol_list": [{"code": s} for s in self.symbols]}))
        return out

    def heartbeat(self) -> Outgoing:
        return self._request(HEARTBEAT, {})

    def permanent(self, close_code: int | None,
                  events: Sequence[Event | Status] = ()) -> str | None:
        for ev in events:
            if isinstance(ev, Status) and ev.kind == "fatal":
                return ev.detail
        return super().permanent(close_code)


# --- server side (simulator and wire replay) ------------------------------------------

def encode_trade(code: str, seq: int, tick_time_ms: int, price: float, volume: float,
                 direction: int, strings: bool = True) -> str:
    turnover = round(price * volume, 6)
    v: Any = (lambda x: str(x)) if strings else (lambda x: x)
    return json.dumps({"cmd_id": PUSH_TRADE, "data": {
        "code": code, "seq": v(seq), "tick_time": v(tick_time_ms), "price": v(price),
        "volume": v(volume), "turnover": v(turnover), "trade_direction": direction}},
        separators=(",", ":"))


def encode_depth(code: str, seq: int, tick_time_ms: int, bids: list[tuple[float, float]],
                 asks: list[tuple[float, float]], strings: bool = True) -> str:
    v: Any = (lambda x: str(x)) if strings else (lambda x: x)
    return json.dumps({"cmd_id": PUSH_DEPTH, "data": {
        "code": code, "seq": v(seq), "tick_time": v(tick_time_ms),
        "bids": [{"price": v(p), "volume": v(q)} for p, q in bids],
        "asks": [{"price": v(p), "volume": v(q)} for p, q in asks]}}, separators=(",", ":"))


def route(payload: bytes | str) -> tuple[str, str] | None:
    """(symbol, stream) of a push, for the server to decide who gets it."""
    try:
        obj = json.loads(payload)
        cmd = obj.get("cmd_id")
        if cmd in (PUSH_TRADE, PUSH_DEPTH):
            return str(obj["data"]["code"]), "trades" if cmd == PUSH_TRADE else "depth"
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


class AllTickServer(ServerSession):
    """Server side of one AllTick connection."""

    def __init__(self, token: str | None = None, *, idle_timeout: float = 30.0,
                 request_interval: float = 1.0) -> None:
        super().__init__(token)
        self.depth: set[str] = set()
        self.trades: set[str] = set()
        self.idle_timeout = idle_timeout
        self.request_interval = request_interval
        self.last_heard: float | None = None
        self.last_request: float | None = None

    @staticmethod
    def _reply(cmd: int, seq_id: Any, trace: Any, ret: int = 200, msg: str = "ok") -> str:
        return json.dumps({"cmd_id": cmd, "seq_id": seq_id, "trace": trace, "ret": ret,
                           "msg": msg, "data": {}}, separators=(",", ":"))

    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        token = dict(parse_qsl(urlsplit(path).query)).get("token")
        if self.token is not None and token != self.token:
            return Reply([json.dumps({"ret": 401, "msg": "token invalid"})], close=(1008, "token invalid"))
        return Reply()

    def on_frame(self, data: bytes | str, now: float) -> Reply:
        if self.last_heard is None:
            self.last_heard = now
        self.last_heard = now
        try:
            obj = json.loads(data)
            cmd = int(obj["cmd_id"])
            body = obj.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return Reply([json.dumps({"ret": 400, "msg": "bad request"})])
        seq_id, trace = obj.get("seq_id"), obj.get("trace")
        if cmd not in REPLY_OF:
            return Reply([json.dumps({"ret": 400, "msg": f"unknown cmd_id {cmd}"})])
        too_fast = (self.last_request is not None and cmd != HEARTBEAT
                    and now - self.last_request < self.request_interval * 0.9)
        if cmd != HEARTBEAT:
            self.last_request = now
        if too_fast:
            return Reply([self._reply(REPLY_OF[cmd], seq_id, trace, 605, "rate limit")])
        if cmd in (SUB_DEPTH, SUB_TRADES):
            codes = {str(s.get("code")) for s in body.get("symbol_list") or []
                     if isinstance(s, dict)}
            if cmd == SUB_DEPTH:
                self.depth = codes
            else:
                self.trades = codes
        elif cmd == CANCEL:
            kind = int(body.get("cancel_type") or 0)
            if kind in (0, 1):
                self.depth = set()
            if kind in (0, 2):
                self.trades = set()
        return Reply([self._reply(REPLY_OF[cmd], seq_id, trace)])

    def wants(self, symbol: str, stream: str) -> bool:
        return symbol in (self.trades if stream == "trades" else self.depth)

    def idle(self, now: float) -> Reply | None:
        if self.last_heard is None:
            self.last_heard = now
        if now - self.last_heard > self.idle_timeout:
            return Reply(close=(1000, f"no heartbeat for {self.idle_timeout:g}s"))
        return None


from schemas.venues import VenueSpec  # last: the registry imports this module lazily

SPEC = VenueSpec(VENUE, AllTickDecoder, AllTickClient, AllTickServer, route,
                 {"token": "TICKREC_ALLTICK_TOKEN"})
