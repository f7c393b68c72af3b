"""Futu OpenD codec: decoder, client and server session, without an event loop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ConfigError
from schemas.events import Gap, RawRecord, Status, Trade
from schemas.venues import futu_frame as ff
from schemas.venues.futu import (
    INIT_CONNECT,
    KEEP_ALIVE,
    QOT_SUB,
    QOT_UPDATE_TICKER,
    RECENT_PER_STREAM,
    FutuClient,
    FutuDecoder,
    join_symbol,
    local_time_ns,
    route,
    split_symbol,
)
from schemas.venues.futu_pb import InitConnect_pb2, KeepAlive_pb2, Qot_Sub_pb2, Qot_UpdateTicker_pb2
from schemas.venues.futu_server import FutuServer, TickerData, encode_reply, encode_ticker_push

NS = 1_000_000_000

# vendor-docs/moomoo-ticker.md, the Java example's output (the JSON form of Response)
DOC_CACHE = """{"retType": 0, "s2c": {"security": {"market": 1, "code": "00700"},
  "tickerList": [{"time": "2021-06-25 10:33:47", "sequence": "6977554163425089259", "dir": 1,
  "price": 587.5, "volume": "1000", "turnover": 587500.0, "recvTime": 0.0, "type": 1,
  "typeSign": 32, "pushDataType": 3, "timestamp": 1.624588427E9}]}}"""
DOC_REALTIME = """{"retType": 0, "s2c": {"security": {"market": 1, "code": "00700"},
  "tickerList": [{"time": "2021-06-25 10:33:48", "sequence": "6977554167720056556", "dir": 2,
  "price": 587.0, "volume": "100", "turnover": 58700.0, "recvTime": 1.624588428173763E9,
  "type": 1, "typeSign": 32, "pushDataType": 1, "timestamp": 1.624588428E9}]}}"""
# the C++ example's first push, and the JavaScript example's
DOC_CPP = """{"retType": 0, "s2c": {"security": {"market": 1, "code": "00700"}, "tickerList": [
  {"time": "2021-06-09 15:41:09", "sequence": "6971696008421975107", "dir": 3, "price": 602.75,
   "volume": "100", "turnover": 60275, "recvTime": 0, "type": 5, "typeSign": 88,
   "pushDataType": 3, "timestamp": 1623224469}]}}"""
DOC_JS = ('{"retType":0,"s2c":{"security":{"market":1,"code":"00700"},"tickerList":[{"time":'
          '"2021-09-09 16:08:12","sequence":"7005842815196387657","dir":3,"price":480,'
          '"volume":"4561200","turnover":2189376000,"recvTime":0,"type":7,"typeSign":85,'
          '"pushDataType":3,"timestamp":1631174892}]}}')


def doc_packet(text: str, serial: int = 0, drop: tuple[str, ...] = ()) -> bytes:
    obj = json.loads(text)
    for t in obj["s2c"]["tickerList"]:
        for k in drop:
            t.pop(k, None)
    msg = json_format.ParseDict(obj, Qot_UpdateTicker_pb2.Response())
    return ff.pack(QOT_UPDATE_TICKER, serial, msg.SerializeToString())


def rec(frame: int, payload: bytes, direction: str = "in", ts: int | None = None,
        kind: str = "binary", note: str | None = None) -> RawRecord:
    return RawRecord(ts if ts is not None else 1000 + frame, frame, direction, kind, payload, note)


def tick(seq: int, push: int = 1, price: float = 10.0) -> TickerData:
    return TickerData(seq, "2024-03-01 10:00:00.250", price, 100, price * 100, 1, 1, 32,
                      1709258400.25, None, push)


def push(*ticks: TickerData, market: int = 1, code: str = "00700") -> bytes:
    return encode_ticker_push(market, code, list(ticks))


def kinds(events: list[Any]) -> list[str]:
    return [e.kind if isinstance(e, (Gap, Status)) else e.TABLE for e in events]


# --- the vendor's examples ----------------------------------------------------------------

def test_doc_examples_become_trades() -> None:
    d = FutuDecoder("s")
    [a] = d.feed(rec(0, doc_packet(DOC_CACHE)))
    [b] = d.feed(rec(1, doc_packet(DOC_REALTIME)))
    assert isinstance(a, Trade) and isinstance(b, Trade)
    assert (a.symbol, a.seq, a.price, a.size, a.turnover, a.side, a.trade_type) == \
        ("HK.00700", 6977554163425089259, 587.5, 1000.0, 587500.0, "buy", "Automatch")
    assert a.ts_event == 1624588427 * NS
    assert json.loads(a.extras or "") == {"dir": 1, "pushDataType": 3, "recvTime": 0.0,
                                          "time": "2021-06-25 10:33:47", "typeSign": 32}
    assert (b.side, b.seq, b.ts_event) == ("sell", 6977554167720056556, 1624588428 * NS)
    assert json.loads(b.extras or "")["recvTime"] == 1.624588428173763e9
    [c] = FutuDecoder("s").feed(rec(0, doc_packet(DOC_CPP)))
    [j] = FutuDecoder("s").feed(rec(0, doc_packet(DOC_JS)))
    assert isinstance(c, Trade) and isinstance(j, Trade)
    assert (c.side, c.trade_type, c.size) == ("unknown", "InterNoneAutomatch", 100.0)
    assert (j.trade_type, j.size, j.turnover, j.ts_event) == \
        ("Auction", 4561200.0, 2189376000.0, 1631174892 * NS)
    assert json.loads(j.extras or "")["dir"] == 3       # neutral, kept apart from unknown


@pytest.mark.parametrize("doc", [DOC_CACHE, DOC_REALTIME, DOC_CPP, DOC_JS])
def test_time_in_beijing_gives_the_same_instant_as_timestamp(doc: str) -> None:
    [with_ts] = FutuDecoder("s").feed(rec(0, doc_packet(doc)))
    [without] = FutuDecoder("s").feed(rec(0, doc_packet(doc, drop=("timestamp",))))
    assert isinstance(with_ts, Trade) and isinstance(without, Trade)
    assert without.ts_event == with_ts.ts_event
    # OpenD's sequence carries the trade's epoch second in its high 32 bits
    assert without.ts_event == ((with_ts.seq or 0) >> 32) * NS


def test_us_time_is_new_york_time_with_milliseconds() -> None:
    # the Python example's output:
    #   US.AAPL APPLE 2025-04-07 05:25:44.116 179.81 9 1618.29 NEUTRAL 7490500033117159426 ODD_LOT CACHE
    t = TickerData(7490500033117159426, "2025-04-07 05:25:44.116", 179.81, 9, 1618.29, 3, 6,
                   None, None, None, 3)
    [ev] = FutuDecoder("s").feed(rec(0, push(t, market=11, code="AAPL")))
    assert isinstance(ev, Trade)
    assert (ev.symbol, ev.trade_type, ev.side) == ("US.AAPL", "OddLot", "unknown")
    assert ev.ts_event == (7490500033117159426 >> 32) * NS + 116_000_000   # EDT = UTC-4
    assert local_time_ns("2025-01-07 05:25:44:116", "America/New_York") == \
        (7490500033117159426 >> 32) * NS + 116_000_000 + 3600 * NS - 90 * 86400 * NS


def test_symbols() -> None:
    assert split_symbol("HK.00700") == (1, "00700") and split_symbol("US.BRK.B") == (11, "BRK.B")
    assert join_symbol(22, "000001") == "SZ.000001" and join_symbol(999, "X") == "M999.X"
    for bad in ("00700", "XX.1", "HK."):
        with pytest.raises(ConfigError):
            split_symbol(bad)


# --- duplicates, refills, regressions --------------------------------------------------

def test_cache_push_then_repeats_are_duplicate_rows_not_trades() -> None:
    d = FutuDecoder("s")
    first = d.feed(rec(0, push(tick(100, 3), tick(200, 3))))
    assert kinds(first) == ["trades", "trades"]
    again = d.feed(rec(1, push(tick(200, 1), tick(300, 1))))
    assert kinds(again) == ["duplicate", "trades"]
    dup = again[0]
    assert isinstance(dup, Gap) and (dup.seq_from, dup.missing) == (200, 0)
    assert "realtime" in (dup.detail or "")
    # a repeat inside one packet counts too
    assert kinds(d.feed(rec(2, push(tick(400), tick(400))))) == ["trades", "duplicate"]


def test_a_realtime_decrease_is_a_regression_a_refill_behind_is_not() -> None:
    d = FutuDecoder("s")
    d.feed(rec(0, push(tick(100), tick(500))))
    back = d.feed(rec(1, push(tick(300, 1))))
    assert kinds(back) == ["regression", "trades"]
    fill = d.feed(rec(2, push(tick(400, 3))))
    assert kinds(fill) == ["trades"]
    # and sequence numbers that skip never claim anything is missing
    assert kinds(d.feed(rec(3, push(tick(10_000))))) == ["trades"]


def test_outage_of_opends_upstream_is_a_disconnect_gap_with_the_refill_count() -> None:
    d = FutuDecoder("s")
    d.feed(rec(0, push(tick(100), tick(110)), ts=5 * NS))
    out = d.feed(rec(1, push(tick(110, 2), tick(120, 2), tick(130, 2)), ts=9 * NS))
    assert kinds(out) == ["disconnect", "duplicate", "trades", "trades"]
    gap = out[0]
    assert isinstance(gap, Gap)
    assert (gap.ts_start, gap.ts_end, gap.seq_from, gap.seq_to, gap.missing) == \
        (5 * NS, 9 * NS, 120, 130, 0)
    assert "2 tick(s) of the outage refilled" in (gap.detail or "")
    assert "none is missing" in (gap.detail or "")
    # a full refill that reaches back to nothing seen: the count, and missing unknown
    full = d.feed(rec(2, push(*[tick(1000 + i, 2) for i in range(50)])))
    assert isinstance(full[0], Gap) and full[0].missing is None
    assert "full (50 ticks)" in (full[0].detail or "")


def close_rec(frame: int, ts: int) -> RawRecord:
    return RawRecord(ts, frame, "event", "close", b"", json.dumps({"code": 1006, "reason": "lost"}))


def open_rec(state: dict[str, Any], ts: int) -> RawRecord:
    return RawRecord(ts, 0, "event", "open", b"tcp://h:1", json.dumps({"resume": state}))


def test_dedup_and_the_outage_survive_a_reconnect() -> None:
    d1 = FutuDecoder("s1")
    d1.feed(rec(0, push(tick(100), tick(200)), ts=1 * NS))
    d1.feed(close_rec(1, 2 * NS))
    state = d1.tracker.state()
    json.dumps(state)                                   # it travels in the open record's note
    d2 = FutuDecoder("s2")
    d2.feed(open_rec(state, 3 * NS))
    out = d2.feed(rec(1, push(tick(100, 3), tick(200, 3), tick(250, 3), tick(260, 3)), ts=4 * NS))
    assert kinds(out) == ["duplicate", "duplicate", "disconnect", "trades", "trades"]
    gap = out[2]
    assert isinstance(gap, Gap) and (gap.ts_start, gap.ts_end, gap.missing) == (1 * NS, 4 * NS, 0)
    assert (gap.detail or "").startswith("closed: code 1006 lost; 2 tick(s) of the outage refilled")


def test_a_cache_push_of_repeats_only_shows_the_outage_was_empty() -> None:
    d = FutuDecoder("s")
    d.feed(rec(0, push(tick(100), tick(200))))
    d.feed(close_rec(1, 10))
    assert kinds(d.feed(rec(2, push(tick(100, 3), tick(200, 3))))) == ["duplicate", "duplicate"]
    [gap, _trade] = d.feed(rec(3, push(tick(300))))
    assert isinstance(gap, Gap) and gap.kind == "disconnect" and gap.missing == 0
    assert "nothing of the outage refilled" in (gap.detail or "")
    assert "none is missing" in (gap.detail or "")


def test_a_reconnect_without_cache_push_says_nothing_was_refilled() -> None:
    d = FutuDecoder("s")
    d.feed(rec(0, push(tick(100))))
    d.feed(close_rec(1, 10))
    [gap, trade] = d.feed(rec(2, push(tick(900))))
    assert isinstance(gap, Gap) and gap.kind == "disconnect" and gap.missing is None
    assert "nothing of the outage refilled" in (gap.detail or "")
    assert isinstance(trade, Trade)


def test_the_memory_of_sequences_is_bounded() -> None:
    d = FutuDecoder("s")
    for i in range(0, 1200, 100):
        d.feed(rec(i, push(*[tick(10 * (i + k)) for k in range(100)])))
    recent = d.tracker.state()["futu:recent"]["HK.00700"]
    assert len(recent) == RECENT_PER_STREAM and recent[-1] == 10 * 1199


# --- replies, errors, the client ---------------------------------------------------------

def test_client_flow_init_then_subscribe_then_keepalive() -> None:
    c = FutuClient(["HK.00700", "US.AAPL"], options={"clock": lambda: 1_700_000_000.0})
    assert c.transport == "tcp" and c.dial("tcp://127.0.0.1:11111").redacted_url.endswith("11111")
    with pytest.raises(ConfigError):
        c.dial("ws://127.0.0.1:33333")
    [init] = c.on_open()
    pkt = ff.unpack(init.stored)
    req = InitConnect_pb2.Request.FromString(pkt.body)
    assert (pkt.proto_id, pkt.serial, req.c2s.packetEncAlgo, req.c2s.pushProtoFmt) == \
        (INIT_CONNECT, 1, -1, 0)
    assert c.heartbeat() is None                        # nothing before InitConnect is answered
    d = FutuDecoder("s")
    reply = encode_reply(INIT_CONNECT, 1, fill=lambda r: _init_s2c(r, keepalive=10))
    events = d.feed(rec(0, reply))
    assert kinds(events) == ["connected"]
    [sub] = c.after(events)
    assert c.heartbeat_interval == 8.0                  # 4/5 of keepAliveInterval
    slow = FutuClient(["HK.00700"])
    slow.after(d.feed(rec(9, encode_reply(INIT_CONNECT, 1, fill=lambda r: _init_s2c(r, 60)))))
    assert slow.heartbeat_interval == 10.0             # never near the 30 s watchdog
    spkt = ff.unpack(sub.stored)
    sreq = Qot_Sub_pb2.Request.FromString(spkt.body)
    assert spkt.proto_id == QOT_SUB and list(sreq.c2s.subTypeList) == [4]
    assert sreq.c2s.isSubOrUnSub and sreq.c2s.isRegOrUnRegPush
    assert [(s.market, s.code) for s in sreq.c2s.securityList] == [(1, "00700"), (11, "AAPL")]
    d.feed(rec(1, sub.stored, "out"))
    assert kinds(d.feed(rec(2, encode_reply(QOT_SUB, spkt.serial)))) == ["subscribed"]
    assert d.subscribed == {"HK.00700", "US.AAPL"}
    hb = c.heartbeat()
    assert hb is not None and ff.unpack(hb.stored).proto_id == KEEP_ALIVE
    assert KeepAlive_pb2.Request.FromString(ff.unpack(hb.stored).body).c2s.time == 1_700_000_000
    with pytest.raises(ConfigError):
        FutuClient(["700.HK"])


def _init_s2c(rsp: Any, keepalive: int = 10) -> None:
    s2c = rsp.s2c
    s2c.serverVer, s2c.loginUserID, s2c.connID, s2c.connAESKey = 1, 2, 3, "k" * 16
    s2c.keepAliveInterval = keepalive


def test_error_replies() -> None:
    d = FutuDecoder("s")
    c = FutuClient(["HK.00700"])
    c.on_open()
    [fatal] = d.feed(rec(0, encode_reply(INIT_CONNECT, 1, -1, "client version too old")))
    assert isinstance(fatal, Status) and fatal.kind == "fatal"
    assert "retType -1" in fatal.detail and "too old" in fatal.detail
    assert c.permanent(None, [fatal]) == fatal.detail
    [timeout] = d.feed(rec(1, encode_reply(QOT_SUB, 2, -100, "timeout")))
    assert timeout.kind == "error" and c.permanent(None, [timeout]) is None
    assert len(c.after([timeout])) == 1                 # the subscription is sent again
    [refused] = d.feed(rec(2, encode_reply(QOT_SUB, 3, -1, "no quote right")))
    assert refused.kind == "fatal"
    [ka] = d.feed(rec(3, encode_reply(KEEP_ALIVE, 4, -1, "late")))
    assert ka.kind == "error"
    bad_push = encode_reply(QOT_UPDATE_TICKER, 0, -1, "push failed",
                            cls=Qot_UpdateTicker_pb2.Response)
    assert kinds(d.feed(rec(4, bad_push))) == ["error"]


def test_other_protocols_are_kept_raw_without_events() -> None:
    assert FutuDecoder("s").feed(rec(0, ff.pack(3005, 1, b"\x08\x00"))) == []


def test_required_fields_and_bad_bodies_are_rejected() -> None:
    d = FutuDecoder("s")
    [g] = d.feed(rec(0, ff.pack(QOT_UPDATE_TICKER, 0, b"\x08\x00\x22\x02\x12\x00")))
    assert isinstance(g, Gap) and g.kind == "rejected" and "required" in (g.detail or "")
    [g2] = d.feed(rec(1, ff.pack(QOT_UPDATE_TICKER, 0, b"\xff\xff")))
    assert isinstance(g2, Gap) and g2.kind == "rejected"
    assert "not a Qot_UpdateTicker" in (g2.detail or "")
    bad = bytearray(push(tick(1)))
    bad[-1] ^= 0x55
    [g3] = d.feed(rec(2, bytes(bad)))
    assert isinstance(g3, Gap) and "SHA1" in (g3.detail or "")


def test_json_bodies_and_websocket_frames_decode_too() -> None:
    body = json_format.MessageToJson(json_format.Parse(DOC_CACHE, Qot_UpdateTicker_pb2.Response()))
    [a] = FutuDecoder("s").feed(rec(0, ff.pack(QOT_UPDATE_TICKER, 0, body.encode(), ff.FMT_JSON)))
    assert isinstance(a, Trade) and a.seq == 6977554163425089259
    pb = json_format.Parse(DOC_CACHE, Qot_UpdateTicker_pb2.Response()).SerializeToString()
    [w] = FutuDecoder("s").feed(rec(0, ff.pack_ws_reply(QOT_UPDATE_TICKER, 9, pb)))
    assert isinstance(w, Trade) and w.price == 587.5
    [e] = FutuDecoder("s").feed(rec(0, ff.pack_ws_reply(QOT_SUB, 9, b"", -1, "bad key")))
    assert isinstance(e, Status) and e.kind == "error" and "bad key" in e.detail


def test_route() -> None:
    assert route(push(tick(1), market=11, code="AAPL")) == ("US.AAPL", "ticker")
    assert route(encode_reply(KEEP_ALIVE, 1)) is None and route(b"junk") is None


# --- the server side --------------------------------------------------------------------

class Cache:
    def last(self, symbol: str, n: int) -> list[TickerData]:
        return [tick(i, 1) for i in (1, 2, 3)][-n:]


def request(pid: int, serial: int, msg: Any) -> bytes:
    return ff.pack(pid, serial, msg.SerializeToString())


def replies(reply: Any) -> list[tuple[int, int, Any]]:
    out = []
    for f in reply.frames:
        p = ff.unpack(f)
        cls = Qot_UpdateTicker_pb2.Response if p.proto_id == QOT_UPDATE_TICKER else \
            Qot_Sub_pb2.Response
        out.append((p.proto_id, p.serial, cls.FromString(p.body)))
    return out


def test_server_answers_what_the_client_sends() -> None:
    srv = FutuServer(known={"HK.00700"}, cache=Cache(), cache_ticks=2, clock=lambda: 5.0)
    c = FutuClient(["HK.00700"], options={"clock": lambda: 4.0})
    [init] = c.on_open()
    sub_early = c.subscribe()
    [(_, _, early)] = replies(srv.on_frame(sub_early.stored, 0.0))
    assert early.retType == -1 and "InitConnect first" in early.retMsg
    rep = srv.on_frame(init.stored, 0.0)
    p = ff.unpack(rep.frames[0])
    init_rsp = InitConnect_pb2.Response.FromString(p.body)
    assert (p.proto_id, p.serial, init_rsp.retType, init_rsp.s2c.keepAliveInterval) == \
        (INIT_CONNECT, 1, 0, 10)
    [sub] = c.after(FutuDecoder("s").feed(rec(0, rep.frames[0])))
    out = replies(srv.on_frame(sub.stored, 1.0))
    assert [(pid, r.retType) for pid, _, r in out] == [(QOT_SUB, 0), (QOT_UPDATE_TICKER, 0)]
    assert [t.pushDataType for t in out[1][2].s2c.tickerList] == [3, 3]
    assert [t.sequence for t in out[1][2].s2c.tickerList] == [2, 3]
    assert srv.wants("HK.00700", "ticker") and not srv.wants("US.AAPL", "ticker")
    ka = c.heartbeat()
    assert ka is not None
    kp = ff.unpack(srv.on_frame(ka.stored, 2.0).frames[0])
    assert KeepAlive_pb2.Response.FromString(kp.body).s2c.time == 5
    assert srv.idle(20.0) is None and srv.idle(40.0) is not None


def test_server_error_replies() -> None:
    srv = FutuServer(known={"HK.00700"})
    enc = InitConnect_pb2.Request()
    enc.c2s.clientVer, enc.c2s.clientID, enc.c2s.packetEncAlgo = 1, "x", 2
    [(_, _, r)] = replies(srv.on_frame(request(INIT_CONNECT, 1, enc), 0))
    assert r.retType == -1 and "encryption" in r.retMsg
    srv.on_frame(FutuClient(["HK.00700"]).on_open()[0].stored, 0)
    other = FutuClient(["US.AAPL"])
    other.on_open()
    [(_, serial, r)] = replies(srv.on_frame(other.subscribe().stored, 0))
    assert (serial, r.retType) == (2, -1) and "US.AAPL" in r.retMsg
    [(pid, _, r)] = replies(srv.on_frame(ff.pack(3103, 9, b""), 0))
    assert (pid, r.retType) == (3103, -1) and "unsupported" in r.retMsg
    bad = bytearray(request(KEEP_ALIVE, 5, KeepAlive_pb2.Request(c2s={"time": 1})))
    bad[-1] ^= 1
    [(pid, serial, r)] = replies(srv.on_frame(bytes(bad), 0))
    assert (pid, serial, r.retType) == (KEEP_ALIVE, 5, -500)
    assert srv.on_frame(b"GET / HTTP/1.1\r\n\r\n" + bytes(40), 0).close is not None


# --- properties --------------------------------------------------------------------------

REAL = [doc_packet(DOC_CACHE), doc_packet(DOC_REALTIME), doc_packet(DOC_JS),
        push(tick(5), tick(6, 2), market=11, code="AAPL"),
        encode_reply(INIT_CONNECT, 1, fill=_init_s2c), encode_reply(QOT_SUB, 2, -1, "no"),
        ff.pack_ws_reply(QOT_UPDATE_TICKER, 1, Qot_UpdateTicker_pb2.Response.FromString(
            ff.unpack(doc_packet(DOC_CPP)).body).SerializeToString())]


def one_rejected_or_events(events: list[Any]) -> None:
    rejected = [e for e in events if isinstance(e, Gap) and e.kind == "rejected"]
    assert not rejected or len(events) == 1


@given(st.binary(max_size=300), st.sampled_from(["in", "out"]))
@settings(max_examples=300)
def test_any_bytes_give_events_or_one_rejected_record(data: bytes, direction: str) -> None:
    one_rejected_or_events(FutuDecoder("s").feed(rec(0, data, direction)))


@given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                       min_size=1, max_size=4), st.booleans())
@settings(max_examples=300)
def test_mutated_real_packets_give_events_or_one_rejected_record(
        base: bytes, flips: list[tuple[int, int]], fix_sha1: bool) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    if fix_sha1 and data[:2] == b"FT" and len(data) >= 44:
        data = bytearray(ff.pack(int.from_bytes(data[2:6], "little"), 0, bytes(data[44:])))
    d = FutuDecoder("s")
    for i in range(2):        # state after a bad or good packet stays usable
        one_rejected_or_events(d.feed(rec(i, bytes(data))))
    assert kinds(d.feed(rec(5, push(tick(10**12))))) in (["trades"], ["regression", "trades"])
