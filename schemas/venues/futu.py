"""Futu / moomoo OpenD: tick-by-tick (Qot_UpdateTicker, 3011) over OpenD's TCP protocol.

PROTOCOLS.md, Futu section, and ``vendor-docs/moomoo-ticker.md``. Packets are
framed by ``futu_frame`` (44-byte header, SHA1 of the body; OpenD's WebSocket
header is read too) and their bodies are the protobuf messages of the official
``futu-api`` package (``futu_pb``). A raw frame is one whole packet.

Flow of a connection: InitConnect (1001) → its reply gives keepAliveInterval →
KeepAlive (1004) every 4/5 of it → Qot_Sub (3001) for SubType_Ticker with push
registration → pushes 3011. An error reply (retType != 0) becomes a status;
on InitConnect or Qot_Sub it stops the feed unless it is a timeout or a
disconnect (retType -100 / -200).

Sequence accounting, per stream = symbol ("HK.00700", market prefix + code):

- ``sequence`` is unique and increasing but not contiguous, so loss inside a
  connection cannot be counted (``contiguous=False``: no ``sequence`` gaps).
- A tick already seen — OpenD's cached first push (pushDataType 3) after every
  subscribe, its refill (2) after it reconnects to its own quote server — is
  not stored again: each repeat is one ``duplicate`` gap row (missing 0). The
  memory of seen sequences is the last ``RECENT_PER_STREAM`` per stream, carried
  across reconnects and recorder runs in the tracker state.
- A realtime tick below the latest is a ``regression`` (stored). A refilled or
  cached tick below the latest that was not seen before fills in a hole: stored,
  not a regression.
- The ``disconnect`` gap of our own connection says in ``detail`` how many ticks
  of the outage the cache push after the resubscribe filled in; ``missing`` is 0
  when that push reaches back to a tick seen before the outage (OpenD sends its
  most recent ticks in an unbroken run, so nothing is missing), else unknown.
- A refill push (2) while our connection stayed up reveals an outage of OpenD's
  own upstream: one ``disconnect`` gap row for the stream, with the same count
  and the same ``missing`` rule (OpenD refills at most 50 ticks).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from schemas.errors import ConfigError, ProtocolError
from schemas.events import Event, RawRecord, Status, Trade
from schemas.gaps import GapSpec, SequenceTracker
from schemas.venues import futu_frame as ff
from schemas.venues.base import Client, Decoder, Dial, FrameContext, Outgoing
from schemas.venues.futu_pb import (
    Common_pb2,
    GetGlobalState_pb2,
    InitConnect_pb2,
    KeepAlive_pb2,
    Notify_pb2,
    Qot_Common_pb2,
    Qot_RegQotPush_pb2,
    Qot_Sub_pb2,
    Qot_UpdateTicker_pb2,
)

VENUE = "futu"
INIT_CONNECT, GET_GLOBAL_STATE, NOTIFY, KEEP_ALIVE = 1001, 1002, 1003, 1004
QOT_SUB, QOT_REG_PUSH, QOT_UPDATE_TICKER = 3001, 3002, 3011
WS_INIT, WS_OPEND_DISCONNECTED = 1, 2
SUBTYPE_TICKER = Qot_Common_pb2.SubType_Ticker                      # 4
RET_OK, RET_FAILED, RET_TIMEOUT, RET_DISCONNECT = 0, -1, -100, -200
RETRYABLE = frozenset((RET_TIMEOUT, RET_DISCONNECT))
PUSH_REALTIME, PUSH_REFILL, PUSH_CACHE = 1, 2, 3
PUSH_NAMES = {0: "unknown", PUSH_REALTIME: "realtime", PUSH_REFILL: "refill", PUSH_CACHE: "cache"}
REFILL_LIMIT = 50                      # OpenD refills at most this many ticks
RECENT_PER_STREAM = 256                # sequences remembered per stream for de-duplication
RECENT_KEY = "futu:recent"             # their place in the tracker state (no stream has ':')
SIDES = {1: "buy", 2: "sell"}
RESPONSES: dict[int, Any] = {
    INIT_CONNECT: InitConnect_pb2.Response, GET_GLOBAL_STATE: GetGlobalState_pb2.Response,
    NOTIFY: Notify_pb2.Response, KEEP_ALIVE: KeepAlive_pb2.Response,
    QOT_SUB: Qot_Sub_pb2.Response, QOT_REG_PUSH: Qot_RegQotPush_pb2.Response,
    QOT_UPDATE_TICKER: Qot_UpdateTicker_pb2.Response}
REQUESTS: dict[int, Any] = {
    INIT_CONNECT: InitConnect_pb2.Request, GET_GLOBAL_STATE: GetGlobalState_pb2.Request,
    KEEP_ALIVE: KeepAlive_pb2.Request, QOT_SUB: Qot_Sub_pb2.Request,
    QOT_REG_PUSH: Qot_RegQotPush_pb2.Request}
NAMES = {INIT_CONNECT: "InitConnect", GET_GLOBAL_STATE: "GetGlobalState", NOTIFY: "Notify",
         KEEP_ALIVE: "KeepAlive", QOT_SUB: "Qot_Sub", QOT_REG_PUSH: "Qot_RegQotPush",
         QOT_UPDATE_TICKER: "Qot_UpdateTicker"}
# QotMarket → the SDK's code prefix ("HK.00700"), and the exchange's zone for ``time``.
MARKETS = {1: "HK", 2: "HK_FUTURE", 11: "US", 21: "SH", 22: "SZ", 31: "SG", 41: "JP",
           51: "AU", 61: "MY", 71: "CA", 81: "FX", 91: "CC", 101: "EC"}
MARKET_CODES = {v: k for k, v in MARKETS.items()}
ZONES = {"HK": "Asia/Shanghai", "HK_FUTURE": "Asia/Shanghai", "SH": "Asia/Shanghai",
         "SZ": "Asia/Shanghai", "US": "America/New_York"}
STATUS_CONNECTED = "OpenD InitConnect ok"          # the prefix the client reads back
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.:](\d{1,9}))?")


def split_symbol(symbol: str) -> tuple[int, str]:
    """"HK.00700" → (1, "00700"); raises ConfigError for an unknown market or no code."""
    prefix, dot, code = symbol.partition(".")
    if not dot or not code or prefix not in MARKET_CODES:
        raise ConfigError(f"futu symbol {symbol!r} is not MARKET.CODE with MARKET one of "
                          f"{', '.join(MARKET_CODES)} (e.g. HK.00700, US.AAPL)")
    return MARKET_CODES[prefix], code


def join_symbol(market: int, code: str) -> str:
    return f"{MARKETS.get(market, f'M{market}')}.{code}"


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_time_ns(text: str, zone: str) -> int | None:
    """Exchange-local "yyyy-MM-dd HH:mm:ss[.:fff]" in ``zone`` → epoch ns (None: no zone data)."""
    m = _TIME.fullmatch(text.strip())
    if m is None:
        raise ProtocolError(f"time {text[:40]!r} is not yyyy-MM-dd HH:mm:ss[.fff]")
    tz = _zone(zone)
    if tz is None:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
    except ValueError as exc:
        raise ProtocolError(f"time {text[:40]!r}: {exc}") from None
    return int(dt.timestamp()) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def epoch_seconds_ns(value: float, name: str) -> int:
    if not math.isfinite(value) or value < 0 or value > 4e9:
        raise ProtocolError(f"{name} out of range: {value!r}")
    return round(value * 1e6) * 1000          # doubles hold microseconds exactly enough


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- packets -------------------------------------------------------------------------

class Unpacked(NamedTuple):
    proto_id: int
    serial: int
    fmt: int
    body: bytes
    ws_error: int | None = None
    ws_message: str | None = None


def unpack_frame(payload: bytes, from_server: bool) -> Unpacked:
    """A raw frame (a TCP packet, or an OpenD WebSocket message) → its header fields + body.

    Raises a ``FramingError`` (a ``ProtocolError``) for anything but one whole packet,
    including a TCP body that does not match its SHA1.
    """
    if payload[:1] == b"f":
        ws = ff.unpack_ws(payload, from_server=from_server)
        return Unpacked(ws.cmd, ws.req_id, ff.FMT_PROTOBUF, ws.body, ws.error, ws.message)
    pkt = ff.unpack(payload)
    return Unpacked(pkt.proto_id, pkt.serial, pkt.fmt, pkt.body)


def parse_body(cls: Any, body: bytes, fmt: int, what: str) -> Any:
    """A protobuf message of ``cls`` from a body in protobuf (0) or JSON (1) format."""
    msg = cls()
    try:
        if fmt == ff.FMT_JSON:
            json_format.Parse(body.decode("utf-8"), msg, ignore_unknown_fields=True)
        elif fmt == ff.FMT_PROTOBUF:
            msg.ParseFromString(body)
        else:
            raise ProtocolError(f"{what}: unknown body format {fmt}")
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"{what}: body is not a {cls.DESCRIPTOR.full_name}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else ''}") from None
    if not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors()[:4])
        raise ProtocolError(f"{what}: required fields missing: {missing}")
    return msg


# --- sequence memory -----------------------------------------------------------------

class FutuTracker(SequenceTracker):
    """The shared tracker plus a bounded memory of recent sequences per stream.

    The memory travels in ``state()`` under ``RECENT_KEY``, so the next session
    (its open record's ``resume``) and the next recorder run (``carry.json``)
    recognise repeats of ticks stored before.
    """

    def __init__(self, keep: int = RECENT_PER_STREAM) -> None:
        super().__init__()
        self.keep = keep
        self._recent: dict[str, tuple[deque[int], set[int]]] = {}

    def seen(self, stream: str, seq: int) -> bool:
        mem = self._recent.get(stream)
        return mem is not None and seq in mem[1]

    def remember(self, stream: str, seq: int) -> None:
        order, members = self._recent.setdefault(stream, (deque(), set()))
        if seq in members:
            return
        order.append(seq)
        members.add(seq)
        while len(order) > self.keep:
            members.discard(order.popleft())

    def last_seq(self, stream: str) -> int | None:
        st = self._streams.get(stream)
        return None if st is None else st.last_seq

    def last_ts(self, stream: str) -> int | None:
        st = self._streams.get(stream)
        return None if st is None else st.last_ts

    def down(self, stream: str) -> bool:
        """Whether our connection closed since the stream's last frame."""
        st = self._streams.get(stream)
        return st is not None and st.down_since is not None

    def state(self) -> dict[str, Any]:
        out = super().state()
        out[RECENT_KEY] = {k: list(order) for k, (order, _) in self._recent.items()}
        return out

    def load(self, state: dict[str, Any]) -> None:
        state = dict(state)
        recent = state.pop(RECENT_KEY, None) or {}
        super().load(state)
        for stream, seqs in recent.items():
            for seq in seqs:
                if isinstance(seq, int):
                    self.remember(stream, seq)


# --- decoder -------------------------------------------------------------------------

class _Tick(NamedTuple):
    seq: int
    ts_event: int | None
    price: float | None
    size: float | None
    turnover: float | None
    side: str
    trade_type: str | None
    push: int
    extras: str


def _ticker_type(value: int) -> str:
    try:
        return str(Qot_Common_pb2.TickerType.Name(value)).removeprefix("TickerType_")
    except ValueError:
        return str(value)


def _tick(t: Any, market: str) -> _Tick:
    ts_event = None
    if t.HasField("timestamp") and t.timestamp != 0:
        ts_event = epoch_seconds_ns(t.timestamp, "timestamp")
    elif market in ZONES:
        ts_event = local_time_ns(t.time, ZONES[market])
    extras: dict[str, Any] = {"dir": t.dir, "time": t.time}
    for name in ("recvTime", "typeSign", "pushDataType", "hpVolume"):
        if t.HasField(name):
            value = getattr(t, name)
            extras[name] = value if not isinstance(value, float) or math.isfinite(value) else None
    size = t.hpVolume if t.HasField("hpVolume") else float(t.volume)
    return _Tick(t.sequence, ts_event, _finite(t.price), _finite(size), _finite(t.turnover),
                 SIDES.get(t.dir, "unknown"), _ticker_type(t.type) if t.HasField("type") else None,
                 t.pushDataType if t.HasField("pushDataType") else 0,
                 json.dumps(extras, sort_keys=True, separators=(",", ":"), allow_nan=False))


def _error_status(proto_id: int, msg: Any) -> tuple[str, str]:
    """(status kind, detail) of a reply with retType != 0."""
    fatal = proto_id in (INIT_CONNECT, QOT_SUB, QOT_REG_PUSH) and msg.retType not in RETRYABLE
    err = f" errCode {msg.errCode}" if msg.HasField("errCode") else ""
    return ("fatal" if fatal else "error",
            (f"OpenD {NAMES.get(proto_id, proto_id)} ({proto_id}): retType {msg.retType}{err}: "
             f"{msg.retMsg[:160]}"))


class FutuDecoder(Decoder):
    venue = VENUE

    def __init__(self, session: str = "") -> None:
        super().__init__(session)
        self.tracker: FutuTracker = FutuTracker()
        self.pending: dict[int, tuple[int, list[str]]] = {}   # serial → (proto, symbols)
        self.subscribed: set[str] = set()
        # streams whose outage a cache push already showed complete (it brought only repeats)
        self.reached_back: set[str] = set()

    def on_outgoing(self, rec: RawRecord, ctx: FrameContext) -> None:
        u = unpack_frame(rec.payload, from_server=False)
        if u.proto_id in (QOT_SUB, QOT_REG_PUSH):
            req = parse_body(REQUESTS[u.proto_id], u.body, u.fmt, NAMES[u.proto_id])
            syms = [join_symbol(s.market, s.code) for s in req.c2s.securityList]
            self.pending[u.serial] = (u.proto_id, syms)
            while len(self.pending) > 64:
                self.pending.pop(next(iter(self.pending)))

    def on_incoming(self, rec: RawRecord, ctx: FrameContext) -> None:
        u = unpack_frame(rec.payload, from_server=True)
        if u.ws_error:
            ctx.status("error", f"OpenD WebSocket {u.proto_id}: error {u.ws_error}: "
                                f"{(u.ws_message or '')[:80]}")
            return
        if u.proto_id == WS_OPEND_DISCONNECTED and u.ws_error is not None:
            ctx.status("error", "OpenD WebSocket: OpenD lost its connection (cmd 2)")
            return
        cls = RESPONSES.get(u.proto_id)
        if cls is None:
            return          # another protocol's packet: kept raw, nothing to normalize
        what = f"{NAMES[u.proto_id]} ({u.proto_id})"
        msg = parse_body(cls, u.body, u.fmt, what)
        if msg.retType != RET_OK:
            kind, detail = _error_status(u.proto_id, msg)
            ctx.status(kind, detail)
            self.pending.pop(u.serial, None)
            return
        if u.proto_id == QOT_UPDATE_TICKER:
            self._tickers(msg, rec, ctx)
        elif u.proto_id == INIT_CONNECT:
            s2c = msg.s2c
            ctx.status("connected", f"{STATUS_CONNECTED}: connID={s2c.connID} "
                                    f"serverVer={s2c.serverVer} "
                                    f"keepAliveInterval={s2c.keepAliveInterval}")
        elif u.proto_id in (QOT_SUB, QOT_REG_PUSH):
            _, syms = self.pending.pop(u.serial, (u.proto_id, []))
            self.subscribed.update(syms)
            ctx.status("subscribed", f"OpenD {NAMES[u.proto_id]} ok: {','.join(syms)}")
        elif u.proto_id == NOTIFY and msg.HasField("s2c"):
            self._notify(msg.s2c, ctx)

    @staticmethod
    def _notify(s2c: Any, ctx: FrameContext) -> None:
        if s2c.HasField("event") and s2c.event.eventType != 0:
            ctx.status("error", f"OpenD event {s2c.event.eventType}: {s2c.event.desc[:120]}")
        elif s2c.HasField("connectStatus") and not s2c.connectStatus.qotLogined:
            ctx.status("error", "OpenD is not logged in to its quote server")

    def _tickers(self, msg: Any, rec: RawRecord, ctx: FrameContext) -> None:
        if not msg.HasField("s2c"):
            raise ProtocolError("Qot_UpdateTicker push without s2c")
        s2c, ts, tr = msg.s2c, rec.ts_recv, self.tracker
        if not s2c.security.code:
            raise ProtocolError("Qot_UpdateTicker push without a security code")
        market = MARKETS.get(s2c.security.market, "")
        symbol = stream = join_symbol(s2c.security.market, s2c.security.code)
        ticks = [_tick(t, market) for t in s2c.tickerList]       # all checked before any state
        last_before, ts_before, closing = tr.last_seq(stream), tr.last_ts(stream), tr.down(stream)
        fresh: list[bool] = []
        in_packet: set[int] = set()
        for t in ticks:
            fresh.append(not tr.seen(stream, t.seq) and t.seq not in in_packet)
            in_packet.add(t.seq)
        filled = [t.seq for t, f in zip(ticks, fresh) if f and t.push in (PUSH_REFILL, PUSH_CACHE)
                  and (last_before is None or t.seq > last_before)]
        # the push reaches back to a tick we had: the outage it covers is complete
        overlap = any(not f and t.push in (PUSH_REFILL, PUSH_CACHE) and last_before is not None
                      and t.seq <= last_before for t, f in zip(ticks, fresh))
        if closing and overlap:
            self.reached_back.add(stream)
        if not closing and filled and any(t.push == PUSH_REFILL for t in ticks):
            ctx.gaps([GapSpec(stream, symbol, "disconnect", ts_before, ts, min(filled), max(filled),
                              0 if overlap else None,
                              "OpenD reconnected to its quote server: " + _refill_note(
                                  filled, overlap, len(ticks)))])
        for t, is_new in zip(ticks, fresh):
            if not is_new:
                ctx.gaps([GapSpec(stream, symbol, "duplicate", ts, ts, t.seq, t.seq, 0,
                                  f"seq {t.seq} repeated by a {PUSH_NAMES.get(t.push, t.push)} "
                                  "push; stored once")])
                continue
            latest = tr.last_seq(stream)
            if latest is not None and t.seq < latest and t.push in (PUSH_REFILL, PUSH_CACHE):
                pass        # fills in behind newer ticks: not a regression
            else:
                specs = tr.observe(stream, symbol, t.seq, ts, contiguous=False)
                complete = overlap or stream in self.reached_back
                ctx.gaps([_amend(s, filled, complete, len(ticks)) if s.kind == "disconnect"
                          else s for s in specs])
                self.reached_back.discard(stream)
            tr.remember(stream, t.seq)
            ctx.add(Trade, symbol=symbol, ts_event=t.ts_event, seq=t.seq, price=t.price,
                    size=t.size, turnover=t.turnover, side=t.side, trade_type=t.trade_type,
                    extras=t.extras)


def _refill_note(filled: list[int], overlap: bool, pushed: int) -> str:
    what = (f"{len(filled)} tick(s) of the outage refilled (seq {min(filled)}..{max(filled)})"
            if filled else "nothing of the outage refilled")
    if overlap:
        return what + "; OpenD's push reaches back to ticks seen before, so none is missing"
    if pushed >= REFILL_LIMIT:
        return what + f"; the push was full ({pushed} ticks): earlier ticks may be lost"
    return what + "; ticks before it may be lost"


def _amend(spec: GapSpec, filled: list[int], overlap: bool, pushed: int) -> GapSpec:
    """Our own disconnect gap, with what OpenD's cache push after the resubscribe filled."""
    reason = f"{spec.detail}; " if spec.detail else ""
    return GapSpec(spec.stream, spec.symbol, spec.kind, spec.ts_start, spec.ts_end, spec.seq_from,
                   spec.seq_to, 0 if overlap else spec.missing,
                   reason + _refill_note(filled, overlap, pushed))


# --- client --------------------------------------------------------------------------

def packet(proto_id: int, serial: int, msg: Message) -> bytes:
    return ff.pack(proto_id, serial, msg.SerializeToString())


class PacketSplitter:
    """What ``recorder.tcp`` reads a stream with: bytes in, whole packets (bytes) out."""

    def __init__(self, max_body: int = ff.MAX_BODY) -> None:
        # bodies are not checked here: the decoder rejects a bad one and keeps it raw
        self.reader = ff.PacketReader(verify=False, max_body=max_body)

    def feed(self, data: bytes) -> list[bytes]:
        return [p.raw for p in self.reader.feed(data)]

    def rest(self) -> bytes:
        return self.reader.take_buffer()


class FutuClient(Client):
    """OpenD client over TCP (``tcp://host:port``; OpenD's default port is 11111).

    Options: ``client_id`` (InitConnect clientID), ``clock`` (seconds, for KeepAlive),
    ``sub_retries`` (re-sends of a Qot_Sub answered with a timeout, default 3).
    """
    venue = VENUE
    transport = "tcp"
    heartbeat_interval = 8.0     # 4/5 of OpenD's default keepAliveInterval, until it says
    idle_timeout = 30.0          # keepalive replies arrive every 8 s even when no one trades
    reconnect_min = 3.0
    request_interval = 0.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.securities = [split_symbol(s) for s in self.symbols]
        self.client_id = str(self.options.get("client_id", "tickrec"))
        self.clock: Callable[[], float] = self.options.get("clock", time.time)
        self.sub_retries = int(self.options.get("sub_retries", 3))
        self._serial = 0
        self._ready = False
        self._retries = 0

    def framer(self) -> PacketSplitter:
        return PacketSplitter()

    def _send(self, proto_id: int, msg: Message) -> Outgoing:
        self._serial += 1
        data = packet(proto_id, self._serial, msg)
        return Outgoing(data, data)

    def dial(self, url: str) -> Dial:
        parts = urlsplit(url)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            raise ConfigError(f"futu needs a tcp://HOST:PORT url (OpenD's API port), not {url!r}")
        return Dial(url, url)

    def on_open(self) -> list[Outgoing]:
        self._serial, self._ready, self._retries = 0, False, 0
        req = InitConnect_pb2.Request()
        c2s = req.c2s
        c2s.clientVer, c2s.clientID, c2s.recvNotify = 300, self.client_id, True
        c2s.packetEncAlgo = Common_pb2.PacketEncAlgo_None
        c2s.pushProtoFmt = ff.FMT_PROTOBUF
        c2s.programmingLanguage = "Python"
        return [self._send(INIT_CONNECT, req)]

    def subscribe(self) -> Outgoing:
        req = Qot_Sub_pb2.Request()
        for market, code in self.securities:
            sec = req.c2s.securityList.add()
            sec.market, sec.code = market, code
        req.c2s.subTypeList.append(SUBTYPE_TICKER)
        req.c2s.isSubOrUnSub = True
        req.c2s.isRegOrUnRegPush = True
        req.c2s.isFirstPush = True
        return self._send(QOT_SUB, req)

    def after(self, events: Sequence[Any]) -> list[Outgoing]:
        out = []
        for ev in events:
            if not isinstance(ev, Status):
                continue
            if ev.kind == "connected" and ev.detail.startswith(STATUS_CONNECTED):
                m = re.search(r"keepAliveInterval=(\d+)", ev.detail)
                if m and int(m.group(1)) > 0:
                    # at most a third of the watchdog's silence, so a quiet market never trips it
                    self.heartbeat_interval = max(1.0, min(int(m.group(1)) * 4 / 5,
                                                           self.idle_timeout / 3))
                self._ready = True
                out.append(self.subscribe())
            elif (ev.kind == "error" and ev.detail.startswith("OpenD Qot_Sub")
                  and self._retries < self.sub_retries):
                self._retries += 1
                out.append(self.subscribe())
        return out

    def heartbeat(self) -> Outgoing | None:
        if not self._ready:
            return None
        req = KeepAlive_pb2.Request()
        req.c2s.time = int(self.clock())
        return self._send(KEEP_ALIVE, req)

    def permanent(self, close_code: int | None,
                  events: Sequence[Event | Status] = ()) -> str | None:
        for ev in events:
            if isinstance(ev, Status) and ev.kind == "fatal":
                return ev.detail
        return super().permanent(close_code)


def route(payload: bytes | str) -> tuple[str, str] | None:
    """(symbol, "ticker") of a 3011 push, for a server to decide who gets it."""
    try:
        data = payload.encode() if isinstance(payload, str) else payload
        u = unpack_frame(data, from_server=True)
        if u.proto_id != QOT_UPDATE_TICKER:
            return None
        msg = parse_body(Qot_UpdateTicker_pb2.Response, u.body, u.fmt, "push")
        return join_symbol(msg.s2c.security.market, msg.s2c.security.code), "ticker"
    except ProtocolError:
        return None


def _spec() -> Any:
    from schemas.venues import VenueSpec
    from schemas.venues.futu_server import FutuServer
    return VenueSpec(VENUE, FutuDecoder, FutuClient, FutuServer, route, {})


SPEC = _spec()
