"""AllTick codec: decoder, client and server side, without an event loop."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Book, Gap, RawRecord, Status, Trade
from schemas.venues.alltick import (
    AllTickClient,
    AllTickDecoder,
    AllTickServer,
    encode_depth,
    encode_trade,
    route,
)

NS = 1_000_000_000


def rec(frame: int, payload: str | bytes, direction: str = "in", ts: int | None = None) -> RawRecord:
    data = payload.encode() if isinstance(payload, str) else payload
    return RawRecord(ts if ts is not None else frame * 1000, frame, direction, "text", data)


def subscribed(codes: list[str]) -> AllTickDecoder:
    """A decoder that has sent both subscriptions and had them acknowledged."""
    d = AllTickDecoder("s")
    client = AllTickClient(codes)
    for i, out in enumerate(client.on_open()):
        d.feed(rec(i, out.stored, "out"))
    d.feed(rec(10, '{"cmd_id":22003,"seq_id":1,"ret":200,"msg":"ok","data":{}}'))
    d.feed(rec(11, '{"cmd_id":22005,"seq_id":2,"ret":200,"msg":"ok","data":{}}'))
    return d


def test_trade_push_with_string_values_in_milliseconds() -> None:
    frame = ('{"cmd_id":22998,"data":{"code":"AAPL.US","seq":"7","tick_time":"1700000000123",'
             '"price":"189.12","volume":"100","turnover":"18912","trade_direction":1}}')
    [ev] = AllTickDecoder("s").feed(rec(0, frame))
    assert isinstance(ev, Trade)
    assert (ev.symbol, ev.seq, ev.price, ev.size, ev.turnover, ev.side) == \
        ("AAPL.US", 7, 189.12, 100.0, 18912.0, "buy")
    assert ev.ts_event == 1_700_000_000_123_000_000


def test_trade_push_with_numbers_and_tick_time_in_seconds() -> None:
    frame = json.dumps({"cmd_id": 22998, "data": {"code": "EURUSD", "seq": 3, "tick_time": 1700000000,
                                                   "price": 1.0712, "trade_direction": 2}})
    [ev] = AllTickDecoder("s").feed(rec(0, frame))
    assert isinstance(ev, Trade)
    assert ev.ts_event == 1_700_000_000 * NS
    assert ev.size is None and ev.turnover is None      # forex carries no volume
    assert ev.side == "sell"


def test_depth_push_is_a_full_ladder() -> None:
    frame = encode_depth("700.HK", 5, 1700000000000, [(320.2, 100), (320.0, 300)],
                         [(320.4, 200)], strings=False)
    [ev] = AllTickDecoder("s").feed(rec(0, frame))
    assert isinstance(ev, Book)
    assert ev.bid_px == [320.2, 320.0] and ev.bid_sz == [100.0, 300.0]
    assert ev.ask_px == [320.4] and ev.ask_sz == [200.0] and ev.depth == 2


def test_error_replies_become_status_and_401_is_fatal() -> None:
    d = AllTickDecoder("s")
    [st401] = d.feed(rec(0, '{"cmd_id":22005,"ret":401,"msg":"token invalid"}'))
    [st604] = d.feed(rec(1, '{"cmd_id":22003,"ret":604,"msg":"code not authorised"}'))
    assert isinstance(st401, Status) and st401.kind == "fatal"
    assert isinstance(st604, Status) and st604.kind == "error" and "604" in st604.detail
    client = AllTickClient(["A"])
    assert client.permanent(None, [st401]) is not None
    assert client.permanent(None, [st604]) is None
    assert client.permanent(1008) is not None


def test_sequence_gap_counts_only_when_both_streams_are_subscribed() -> None:
    half = AllTickDecoder("s")
    half.feed(rec(0, json.dumps({"cmd_id": 22004, "seq_id": 1,
                                 "data": {"symbol_list": [{"code": "A"}]}}), "out"))
    half.feed(rec(1, '{"cmd_id":22005,"seq_id":1,"ret":200}'))
    out = half.feed(rec(2, encode_trade("A", 1, 1, 1.0, 1, 1))) + \
        half.feed(rec(3, encode_trade("A", 5, 1, 1.0, 1, 1)))
    assert not [e for e in out if isinstance(e, Gap)]           # depth may have used 2..4

    full = subscribed(["A"])
    out = full.feed(rec(20, encode_trade("A", 1, 1, 1.0, 1, 1))) + \
        full.feed(rec(21, encode_depth("A", 2, 1, [(1, 1)], [(2, 1)]))) + \
        full.feed(rec(22, encode_trade("A", 5, 1, 1.0, 1, 1)))
    [gap] = [e for e in out if isinstance(e, Gap)]
    assert (gap.kind, gap.seq_from, gap.seq_to, gap.missing) == ("sequence", 3, 4, 2)


def test_repeat_and_decrease_are_always_anomalies() -> None:
    d = AllTickDecoder("s")
    kinds = []
    for i, seq in enumerate([1, 2, 2, 1, 3]):
        kinds += [e.kind for e in d.feed(rec(i, encode_trade("A", seq, 1, 1.0, 1, 0)))
                  if isinstance(e, Gap)]
    assert kinds == ["duplicate", "regression"]


def test_subscribe_replaces_and_cancel_clears() -> None:
    d = subscribed(["A", "B"])
    d.feed(rec(30, json.dumps({"cmd_id": 22004, "seq_id": 9,
                               "data": {"symbol_list": [{"code": "B"}]}}), "out"))
    d.feed(rec(31, '{"cmd_id":22005,"seq_id":9,"ret":200}'))
    assert d.trade_subs == {"B"} and d.depth_subs == {"A", "B"}
    d.feed(rec(32, json.dumps({"cmd_id": 22006, "seq_id": 10, "data": {"cancel_type": 1}}), "out"))
    assert d.depth_subs == set() and d.trade_subs == {"B"}


def test_unparseable_frame_is_one_rejected_gap() -> None:
    for bad in [b"\xff\xfe", b"[1,2]", b'{"cmd_id":22998}',
                b'{"cmd_id":22998,"data":{"code":"A","price":"abc"}}', b'{"cmd_id":12345}',
                b"x" * (2 << 20)]:
        [ev] = AllTickDecoder("s").feed(rec(0, bad))
        assert isinstance(ev, Gap) and ev.kind == "rejected" and ev.detail
        assert "\n" not in ev.detail


def test_client_puts_the_token_in_the_url_and_redacts_it() -> None:
    client = AllTickClient(["A"], {"token": "s3cr3t"})
    dial = client.dial("ws://h/quote-stock-b-ws-api")
    assert "token=s3cr3t" in dial.url and "s3cr3t" not in dial.redacted_url
    assert "token=***" in dial.redacted_url
    frames = [json.loads(o.stored) for o in client.on_open()]
    assert [f["cmd_id"] for f in frames] == [22002, 22004]
    assert json.loads(client.heartbeat().stored)["cmd_id"] == 22000


def test_server_rejects_a_bad_token_with_401_and_close() -> None:
    srv = AllTickServer("good")
    bad = srv.accept("/quote-stock-b-ws-api?token=nope", {})
    assert bad.close is not None and bad.close[0] == 1008
    assert json.loads(bad.frames[0])["ret"] == 401
    assert AllTickServer("good").accept("/x?token=good", {}).close is None
    assert AllTickServer(None).accept("/x?token=anything", {}).close is None


def test_server_subscribe_replaces_previous_list_and_routes_pushes() -> None:
    srv = AllTickServer(None, request_interval=1.0)
    sub = lambda cmd, codes: json.dumps({"cmd_id": cmd, "seq_id": 1, "trace": "t",
                                         "data": {"symbol_list": [{"code": c} for c in codes]}})
    r = srv.on_frame(sub(22004, ["A", "B"]), now=0.0)
    assert json.loads(r.frames[0])["ret"] == 200
    srv.on_frame(sub(22004, ["C"]), now=2.0)
    assert srv.wants("C", "trades") and not srv.wants("A", "trades")
    too_fast = srv.on_frame(sub(22002, ["C"]), now=2.1)
    assert json.loads(too_fast.frames[0])["ret"] == 605 and not srv.wants("C", "depth")
    assert route(encode_depth("C", 1, 1, [], [])) == ("C", "depth")
    assert route("not json") is None


def test_server_closes_a_silent_client_after_30s() -> None:
    srv = AllTickServer(None)
    assert srv.idle(0.0) is None
    srv.on_frame('{"cmd_id":22000,"seq_id":1,"trace":"t","data":{}}', now=10.0)
    assert srv.idle(39.0) is None
    closing = srv.idle(40.5)
    assert closing is not None and closing.close == (1000, "no heartbeat for 30s")


def test_the_idle_close_names_the_servers_own_timeout() -> None:
    srv = AllTickServer(None, idle_timeout=2.5)
    assert srv.idle(0.0) is None and srv.idle(2.5) is None
    closing = srv.idle(2.6)
    assert closing is not None and closing.close == (1000, "no heartbeat for 2.5s")


# --- properties ------------------------------------------------------------------------

def _check_never_raises(payload: bytes) -> None:
    d = subscribed(["A"])
    events = d.feed(rec(50, payload))
    for ev in events:
        assert isinstance(ev, (Trade, Book, Gap, Status))
    gaps = [e for e in events if isinstance(e, Gap) and e.kind == "rejected"]
    assert len(gaps) <= 1 and (not gaps or len(events) == 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_one_rejected_record(payload: bytes) -> None:
    _check_never_raises(payload)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)
REAL = [encode_trade("A", 1, 1700000000123, 10.5, 100, 1),
        encode_depth("A", 2, 1700000000123, [(1.0, 2.0)], [(1.1, 3.0)], strings=False),
        '{"cmd_id":22005,"seq_id":2,"trace":"t","ret":200,"msg":"ok","data":{}}']


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL), st.sampled_from(["code", "seq", "tick_time", "price", "volume",
                                               "bids", "asks", "trade_direction", "cmd_id", "data"]),
       JSONISH)
def test_mutated_real_frames_never_crash(frame: str, key: str, value: object) -> None:
    obj = json.loads(frame)
    target = obj if key in ("cmd_id", "data") else obj.get("data", obj)
    target[key] = value
    try:
        payload = json.dumps(obj).encode()
    except ValueError:
        return
    _check_never_raises(payload)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(REAL), max_size=5).map("".join), st.integers(0, 400))
def test_truncated_and_concatenated_frames_never_crash(text: str, cut: int) -> None:
    _check_never_raises(text.encode()[:cut])
    _check_never_raises(b'{"cmd_id":22998,"data":' * 300)      # deeply nested / repeated
