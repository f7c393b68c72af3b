"""Futu OpenD, server side: encoders and one connection of a simulated OpenD.

What an OpenD answers, as far as the official Python SDK (``futu-api``) and our
own client need it: InitConnect (1001, encryption off), KeepAlive (1004),
GetGlobalState (1002), Qot_Sub (3001) and Qot_RegQotPush (3002) for
SubType_Ticker, and the pushes Qot_UpdateTicker (3011). Every other protocol id
is answered with retType -1 "unsupported", as OpenD answers what it cannot do.
A reply echoes the request's protocol id and serial number.

The session is sans-I/O like the rest of ``schemas``: ``on_frame`` takes one
whole packet and returns the packets to send. The cached first push after a
subscribe comes from a ``TickCache`` the simulator shares between sessions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.errors import ProtocolError
from schemas.venues import futu_frame as ff
from schemas.venues.base import Reply, ServerSession
from schemas.venues.futu import (
    GET_GLOBAL_STATE,
    INIT_CONNECT,
    KEEP_ALIVE,
    MARKET_CODES,
    NAMES,
    PUSH_CACHE,
    QOT_REG_PUSH,
    QOT_SUB,
    QOT_UPDATE_TICKER,
    REQUESTS,
    RET_FAILED,
    SUBTYPE_TICKER,
    join_symbol,
    packet,
    parse_body,
)
from schemas.venues.futu_pb import (
    Common_pb2,
    GetGlobalState_pb2,
    InitConnect_pb2,
    KeepAlive_pb2,
    Qot_RegQotPush_pb2,
    Qot_Sub_pb2,
    Qot_UpdateTicker_pb2,
)

RET_INVALID = -500
SERVER_VER = 1011
REPLIES: dict[int, Any] = {INIT_CONNECT: InitConnect_pb2.Response,
                           GET_GLOBAL_STATE: GetGlobalState_pb2.Response,
                           KEEP_ALIVE: KeepAlive_pb2.Response, QOT_SUB: Qot_Sub_pb2.Response,
                           QOT_REG_PUSH: Qot_RegQotPush_pb2.Response}


@dataclass(frozen=True, slots=True)
class TickerData:
    """One tick as OpenD pushes it (Qot_Common.Ticker); optional fields may be None."""
    sequence: int
    time: str
    price: float
    volume: int
    turnover: float
    dir: int = 0
    type: int | None = 1
    type_sign: int | None = None
    timestamp: float | None = None
    recv_time: float | None = None
    push: int | None = 1


def encode_ticker_push(market: int, code: str, ticks: Sequence[TickerData], serial: int = 0,
                       name: str | None = None, push: int | None = None) -> bytes:
    """A 3011 packet; ``push`` overrides every tick's pushDataType."""
    rsp = Qot_UpdateTicker_pb2.Response()
    rsp.retType = 0
    s2c = rsp.s2c
    s2c.security.market, s2c.security.code = market, code
    if name is not None:
        s2c.name = name
    for t in ticks:
        pb = s2c.tickerList.add()
        pb.time, pb.sequence, pb.dir, pb.price = t.time, t.sequence, t.dir, t.price
        pb.volume, pb.turnover = t.volume, t.turnover
        for attr, value in (("type", t.type), ("typeSign", t.type_sign),
                            ("timestamp", t.timestamp), ("recvTime", t.recv_time),
                            ("pushDataType", push if push is not None else t.push)):
            if value is not None:
                setattr(pb, attr, value)
    return packet(QOT_UPDATE_TICKER, serial, rsp)


def encode_reply(proto_id: int, serial: int, ret_type: int = 0, ret_msg: str | None = None,
                 fill: Callable[[Any], None] | None = None, cls: Any = None) -> bytes:
    """A reply packet: retType/retMsg, and ``fill(response)`` for the s2c part."""
    rsp = (cls or REPLIES.get(proto_id) or Qot_Sub_pb2.Response)()
    rsp.retType = ret_type
    if ret_msg is not None:
        rsp.retMsg = ret_msg
    if fill is not None:
        fill(rsp)
    return packet(proto_id, serial, rsp)


class TickCache(Protocol):
    def last(self, symbol: str, n: int) -> list[TickerData]: ...


@dataclass
class FutuReply(Reply):
    """A reply whose frames carry what the server wants to know once each is sent."""
    metas: list[Any] = field(default_factory=list)


class FutuServer(ServerSession):
    """One client connection of a simulated OpenD.

    ``known``: the symbols that exist (others get an error reply); ``cache`` and
    ``cache_ticks``: the cached first push after a subscribe (pushDataType 3).
    There is no token on OpenD's TCP port: ``token`` is ignored.
    """

    def __init__(self, token: str | None = None, *, idle_timeout: float = 30.0,
                 keep_alive_interval: int = 10, conn_id: int = 1,
                 known: set[str] | None = None, cache: TickCache | None = None,
                 cache_ticks: int = 10, clock: Callable[[], float] = time.time) -> None:
        super().__init__(token)
        self.idle_timeout = idle_timeout
        self.keep_alive_interval = keep_alive_interval
        self.conn_id = conn_id
        self.known = known
        self.cache = cache
        self.cache_ticks = cache_ticks
        self.clock = clock
        self.inited = False
        self.subs: set[str] = set()
        self.push = False
        self.last_heard: float | None = None
        self.push_serial = 0

    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        return Reply()

    def wants(self, symbol: str, stream: str) -> bool:
        return self.push and symbol in self.subs

    def idle(self, now: float) -> Reply | None:
        if self.last_heard is None:
            self.last_heard = now
        if now - self.last_heard > self.idle_timeout:
            return Reply(close=(1000, f"no KeepAlive for {self.idle_timeout:g}s"))
        return None

    def next_push_serial(self) -> int:
        self.push_serial += 1
        return self.push_serial

    def on_frame(self, data: bytes | str, now: float) -> Reply:
        self.last_heard = now
        raw = data.encode() if isinstance(data, str) else data
        try:
            pkt = ff.unpack(raw)
        except ff.BadChecksum:
            head = ff.HEADER.unpack_from(raw)
            return FutuReply([encode_reply(head[1], head[4], RET_INVALID, "body SHA1 mismatch")])
        except ProtocolError as exc:
            return FutuReply(close=(1002, str(exc)[:100]))
        pid, serial = pkt.proto_id, pkt.serial
        if pid not in REQUESTS:
            return FutuReply([encode_reply(pid, serial, RET_FAILED,
                                           f"unsupported protocol {pid} (simulated OpenD)")])
        if pid != INIT_CONNECT and not self.inited:
            return FutuReply([encode_reply(pid, serial, RET_FAILED, "InitConnect first")])
        try:
            req = parse_body(REQUESTS[pid], pkt.body, pkt.fmt, NAMES[pid])
        except ProtocolError as exc:
            return FutuReply([encode_reply(pid, serial, RET_INVALID, str(exc)[:200])])
        if pid == INIT_CONNECT:
            return self._init(req, serial)
        if pid == KEEP_ALIVE:
            def fill_time(rsp: Any) -> None:
                rsp.s2c.time = int(self.clock())
            return FutuReply([encode_reply(pid, serial, fill=fill_time)])
        if pid == GET_GLOBAL_STATE:
            return FutuReply([encode_reply(pid, serial, fill=self._global_state)])
        return self._subscribe(pid, req, serial)

    def _init(self, req: Any, serial: int) -> FutuReply:
        algo = req.c2s.packetEncAlgo if req.c2s.HasField("packetEncAlgo") else None
        if algo not in (None, Common_pb2.PacketEncAlgo_None):
            return FutuReply([encode_reply(INIT_CONNECT, serial, RET_FAILED,
                                           "encryption is not supported (simulated OpenD)")])
        self.inited = True

        def fill(rsp: Any) -> None:
            s2c = rsp.s2c
            s2c.serverVer, s2c.loginUserID, s2c.connID = SERVER_VER, 1, self.conn_id
            s2c.connAESKey = "0" * 16                  # required; unused with encryption off
            s2c.keepAliveInterval = self.keep_alive_interval
        return FutuReply([encode_reply(INIT_CONNECT, serial, fill=fill)])

    def _global_state(self, rsp: Any) -> None:
        s2c = rsp.s2c
        s2c.marketHK = s2c.marketUS = s2c.marketSH = s2c.marketSZ = s2c.marketHKFuture = 0
        s2c.qotLogined, s2c.trdLogined = True, False
        s2c.serverVer, s2c.serverBuildNo, s2c.time = SERVER_VER, 1, int(self.clock())
        s2c.connID = self.conn_id

    def _subscribe(self, pid: int, req: Any, serial: int) -> FutuReply:
        c2s = req.c2s
        if pid == QOT_SUB and c2s.HasField("isUnsubAll") and c2s.isUnsubAll:
            self.subs.clear()
            self.push = False
            return FutuReply([encode_reply(pid, serial)])
        syms = [join_symbol(s.market, s.code) for s in c2s.securityList]
        unknown = [s for s in syms if self.known is not None and s not in self.known]
        if unknown:
            return FutuReply([encode_reply(pid, serial, RET_FAILED,
                                           f"unknown security {', '.join(unknown)[:100]}")])
        ticker = SUBTYPE_TICKER in c2s.subTypeList
        if pid == QOT_SUB:
            register = c2s.HasField("isRegOrUnRegPush") and c2s.isRegOrUnRegPush
            subscribing = c2s.isSubOrUnSub
        else:
            register, subscribing = c2s.isRegOrUnReg, c2s.isRegOrUnReg
        first_push = not c2s.HasField("isFirstPush") or c2s.isFirstPush
        new = [s for s in syms if s not in self.subs] if ticker and subscribing else []
        if ticker:
            if subscribing:
                self.subs.update(syms)
            else:
                self.subs.difference_update(syms)
        if pid == QOT_REG_PUSH or c2s.HasField("isRegOrUnRegPush"):
            self.push = bool(register) and bool(self.subs)
        out = FutuReply([encode_reply(pid, serial)], metas=[None])
        if self.push and first_push and self.cache is not None:
            for sym in sorted(new):
                ticks = self.cache.last(sym, self.cache_ticks)
                if ticks:
                    market, _, code = sym.partition(".")
                    out.frames.append(encode_ticker_push(MARKET_CODES[market], code, ticks,
                                                         self.next_push_serial(), push=PUSH_CACHE))
                    out.metas.append((sym, [t.sequence for t in ticks], PUSH_CACHE, 0))
        return out

