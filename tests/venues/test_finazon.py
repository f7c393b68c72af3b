"""Finazon codec: decoder, client and server side, without an event loop.

The frames marked DOC are the vendor document's own examples (vendor-docs/finazon.txt).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ConfigError
from schemas.events import Bar, Gap, RawRecord, Status
from schemas.venues import get
from schemas.venues.finazon import (
    FinazonClient,
    FinazonDecoder,
    FinazonServer,
    batches,
    duration_s,
    encode_bar,
    route,
    split_symbol,
)

NS = 1_000_000_000

# DOC: the examples of vendor-docs/finazon.txt, verbatim apart from whitespace
DOC_SUBSCRIBE = ('{"event": "subscribe", "dataset": "huobi", "tickers": [ "BTC/USDT", "AI/USDT" ], '
                 '"channel": "bars", "frequency": "1s", "aggregation": "1m", "request_id": 106}')
DOC_SUBSCRIBE_OK = ('{"status": "success", "code": "SUCCESS_SUBSCRIPTION", '
                    '"data": [ "BTC/USDT", "AI/USDT" ], "request_id": 106}')
DOC_CANDLE = ('{"d": "huobi", "p": "huobi", "ch": "bars", "f": "1s", "aggr":" 1m", '
              '"s": "BTC/USDT", "t": 1699540020, "o": 220.06, "h": 220.13, "l": 219.92, '
              '"c": 219.96, "v": 4572}')
DOC_UNSUBSCRIBE = ('{"event": "unsubscribe", "dataset": "huobi", "tickers": [ "BTC/USDT" ], '
                   '"channel": "bars", "frequency": "1s", "aggregation": "1m", "request_id": 107}')
DOC_UNSUBSCRIBE_OK = ('{"status": "success", "code": "SUCCESS_UNSUBSCRIPTION", '
                      '"data": [ "BTC/USDT" ], "request_id": 107}')
DOC_HEARTBEAT = '{"event": "heartbeat", "request_id": 108}'
DOC_HEARTBEAT_OK = '{"event": "heartbeat", "status": "success", "request_id": 108}'
DOC_RESET = '{"event": "reset", "request_id": 109}'
DOC_RESET_OK = '{"event": "reset", "status": "success", "request_id": 109}'
SERVER_DOC_FRAMES = [DOC_SUBSCRIBE_OK, DOC_CANDLE, DOC_UNSUBSCRIBE_OK, DOC_HEARTBEAT_OK,
                     DOC_RESET_OK]


def rec(frame: int, payload: str | bytes, direction: str = "in",
        ts: int | None = None) -> RawRecord:
    data = payload.encode() if isinstance(payload, str) else payload
    return RawRecord(ts if ts is not None else frame * 1000, frame, direction, "text", data)


def bar(t: int, ticker: str = "BTC/USDT", f: str = "1s", c: float = 1.0) -> str:
    return encode_bar("huobi", ticker, f, t, 1.0, 2.0, 0.5, c, 10.0)


# --- decoder: the vendor's examples --------------------------------------------------

def test_doc_candle_update_is_a_bar_with_its_open_time() -> None:
    [ev] = FinazonDecoder("s").feed(rec(0, DOC_CANDLE))
    assert isinstance(ev, Bar)
    assert (ev.symbol, ev.interval, ev.ts_event, ev.seq) == \
        ("BTC/USDT", "1m", 1699540020 * NS, None)
    assert (ev.open, ev.high, ev.low, ev.close, ev.volume) == \
        (220.06, 220.13, 219.92, 219.96, 4572.0)


def test_doc_acks_become_status_and_heartbeat_or_reset_replies_nothing() -> None:
    d = FinazonDecoder("s")
    [sub] = d.feed(rec(0, DOC_SUBSCRIBE_OK))
    [unsub] = d.feed(rec(1, DOC_UNSUBSCRIBE_OK))
    assert isinstance(sub, Status) and sub.kind == "subscribed"
    assert "BTC/USDT, AI/USDT" in sub.detail and "106" in sub.detail
    assert isinstance(unsub, Status) and unsub.kind == "unsubscribed"
    assert d.feed(rec(2, DOC_HEARTBEAT_OK)) == [] and d.feed(rec(3, DOC_RESET_OK)) == []


def test_doc_client_events_are_accepted_outgoing() -> None:
    d = FinazonDecoder("s")
    for i, frame in enumerate([DOC_SUBSCRIBE, DOC_UNSUBSCRIBE, DOC_HEARTBEAT, DOC_RESET]):
        assert d.feed(rec(i, frame, "out")) == []


def test_publisher_instead_of_dataset_and_stray_spaces() -> None:
    frame = ('{"p":"huobi","ch":"bars","f":" 1s ","aggr":"  1m ","s":"AI/USDT","t":"1699540020",'
             '"o":"1.5","h":2,"l":1,"c":1.7,"v":"NA"}')
    [ev] = FinazonDecoder("s").feed(rec(0, frame))
    assert isinstance(ev, Bar) and ev.interval == "1m" and ev.ts_event == 1699540020 * NS
    assert ev.open == 1.5 and ev.volume is None


@pytest.mark.parametrize("message, kind", [
    ('{"status":"error","message":"Invalid API key"}', "fatal"),
    ('{"status":"error","message":"apikey is missing"}', "fatal"),
    (('{"event":"subscribe","status":"error","message":"Unknown tickers: FOO/BAR",'
      '"data":["FOO/BAR"],"request_id":3}'), "error"),
    ('{"status":"error","message":"Already subscribed: BTC/USDT"}', "error"),
    ('{"status":"error"}', "error"),
])
def test_errors_are_status_and_only_a_bad_key_is_fatal(message: str, kind: str) -> None:
    [ev] = FinazonDecoder("s").feed(rec(0, message))
    assert isinstance(ev, Status) and ev.kind == kind and ev.detail.startswith("Finazon: ")
    client = FinazonClient(["A"])
    assert (client.permanent(None, [ev]) is not None) == (kind == "fatal")


def test_one_bad_ticker_leaves_the_good_ones_flowing() -> None:
    d = FinazonDecoder("s")
    out = d.feed(rec(0, '{"status":"success","code":"SUCCESS_SUBSCRIPTION","data":["BTC/USDT"]}'))
    out += d.feed(rec(1, '{"status":"error","message":"Unknown tickers: NOPE","data":["NOPE"]}'))
    out += d.feed(rec(2, bar(1699540020)))
    assert [type(e).__name__ for e in out] == ["Status", "Status", "Bar"]


def test_unparseable_frames_are_one_rejected_gap() -> None:
    for bad in [b"\xff", b"[]", b"{}", b'{"s":"A"}', b'{"s":"A","t":"x"}', b'{"s":"","t":1}',
                b'{"s":"A","t":1,"o":true}', b'{"status":"weird"}', b'{"s":"A","t":99999999999}',
                b'{"s":"A","t":1,"aggr":5}', b'{"s":"A","t":1,"d":7}', b"x" * (2 << 20)]:
        [ev] = FinazonDecoder("s").feed(rec(0, bad))
        assert isinstance(ev, Gap) and ev.kind == "rejected" and ev.detail and "\n" not in ev.detail


# --- decoder: time-based gaps ------------------------------------------------------------

def test_silence_longer_than_the_multiple_of_the_frequency_is_one_stale_gap() -> None:
    d = FinazonDecoder("s")
    t0 = 1699540020
    evs = []
    for i in range(5):                               # updates every second ...
        evs += d.feed(rec(i, bar(t0), ts=i * NS))
    evs += d.feed(rec(5, bar(t0), ts=7 * NS))        # ... 3 s silent: not yet more than 3 x 1 s
    evs += d.feed(rec(6, bar(t0 + 60), ts=11 * NS))  # 4 s silent: stale
    [gap] = [e for e in evs if isinstance(e, Gap)]
    assert (gap.kind, gap.ts_start, gap.ts_end, gap.missing) == ("stale", 7 * NS, 11 * NS, 0)
    assert gap.symbol == "BTC/USDT" and gap.stream == "huobi|BTC/USDT|1m|1s"


def test_stale_factor_is_configured_from_the_open_record() -> None:
    d = FinazonDecoder("s")
    note = json.dumps({"decoder": {"stale_factor": 10}})
    d.feed(RawRecord(0, 0, "event", "open", b"ws://x", note))
    evs = d.feed(rec(1, bar(1), ts=1 * NS)) + d.feed(rec(2, bar(1), ts=9 * NS))
    assert not [e for e in evs if isinstance(e, Gap)]
    d.configure({"stale_factor": None})
    assert not [e for e in d.feed(rec(3, bar(1), ts=1000 * NS)) if isinstance(e, Gap)]


def test_an_unsubscribed_ticker_is_not_stale() -> None:
    d = FinazonDecoder("s")
    d.feed(rec(0, bar(1), ts=0))
    d.feed(rec(1, DOC_UNSUBSCRIBE, "out"))
    assert not [e for e in d.feed(rec(2, bar(1), ts=100 * NS)) if isinstance(e, Gap)]
    d.feed(rec(3, DOC_RESET, "out"))
    assert not [e for e in d.feed(rec(4, bar(1), ts=200 * NS)) if isinstance(e, Gap)]
    assert [e.kind for e in d.feed(rec(5, bar(1), ts=300 * NS)) if isinstance(e, Gap)] == ["stale"]


def test_bars_swallowed_by_a_disconnect_are_counted_across_sessions() -> None:
    first = FinazonDecoder("s1")
    t0 = 1699540020
    first.feed(rec(0, bar(t0), ts=1 * NS))
    first.feed(RawRecord(2 * NS, 1, "event", "close", b"", '{"code":1006,"reason":"lost"}'))
    carry = json.loads(json.dumps(first.tracker.state()))        # as carried in the journal
    second = FinazonDecoder("s2")
    second.feed(RawRecord(3 * NS, 0, "event", "open", b"ws://x", json.dumps({"resume": carry})))
    [gap, ev] = second.feed(rec(1, bar(t0 + 4 * 60), ts=4 * NS))
    assert isinstance(gap, Gap) and isinstance(ev, Bar)
    assert (gap.kind, gap.ts_start, gap.ts_end, gap.missing) == ("disconnect", 1 * NS, 4 * NS, 3)
    assert gap.detail is not None and "lost" in gap.detail and "3 whole 1m bar(s)" in gap.detail
    assert gap.session == "s2"


# --- client ----------------------------------------------------------------------------

def test_client_puts_the_key_in_the_url_and_redacts_it() -> None:
    client = FinazonClient(["AAPL"], {"token": "k3y-s3cr3t"})
    dial = client.dial("wss://ws.finazon.io/v1")
    assert "apikey=k3y-s3cr3t" in dial.url and "k3y-s3cr3t" not in dial.redacted_url
    assert "apikey=***" in dial.redacted_url and not dial.headers
    assert get("finazon").credentials == {"token": "TICKREC_FINAZON_TOKEN"}


def test_client_batches_tickers_per_dataset_and_heartbeats() -> None:
    client = FinazonClient(["AAPL", "huobi:BTC/USDT", "MSFT", "huobi:AI/USDT", "AAPL"],
                           options={"frequency": "10s"})
    subs = [json.loads(o.stored) for o in client.on_open()]
    assert [(s["dataset"], s["tickers"]) for s in subs] == [
        ("us_stocks_essential", ["AAPL", "MSFT"]), ("huobi", ["BTC/USDT", "AI/USDT"])]
    assert all(s["event"] == "subscribe" and s["channel"] == "bars" and s["frequency"] == "10s"
               and s["aggregation"] == "1m" for s in subs)
    hb = json.loads(client.heartbeat().stored)
    assert hb["event"] == "heartbeat" and hb["request_id"] == 3
    assert client.decoder_options() == {"stale_factor": 3.0}


def test_client_stays_under_the_vendor_limits() -> None:
    # 100 events a minute per connection: one event per request_interval at most
    assert 60.0 / FinazonClient.request_interval < 100
    assert FinazonClient.heartbeat_interval < FinazonClient.idle_timeout
    tickers = [f"T{i:05d}/USDT" for i in range(20_000)]
    chunks = list(batches(tickers))
    assert [t for chunk in chunks for t in chunk] == tickers and len(chunks) < 5
    client = FinazonClient(tickers)
    assert all(len(o.stored) < 100_000 for o in client.on_open())


def test_client_rejects_bad_options() -> None:
    with pytest.raises(ConfigError):
        FinazonClient(["A"], options={"frequency": "5s"})
    with pytest.raises(ConfigError):
        FinazonClient(["A"], options={"stale_factor": "zero"})


def test_small_helpers() -> None:
    assert [duration_s(x) for x in ("1s", " 10s", "1m", "1h", "1d", "0s", "m", 5)] == \
        [1, 10, 60, 3600, 86400, None, None, None]
    assert split_symbol("huobi:BTC/USDT", "x") == ("huobi", "BTC/USDT")
    assert split_symbol("AAPL", "x") == ("x", "AAPL") and split_symbol(":A", "x") == ("x", ":A")


# --- server side -------------------------------------------------------------------------

def _sub(tickers: list[str], rid: int = 1, event: str = "subscribe", freq: str = "1s") -> str:
    return json.dumps({"event": event, "dataset": "huobi", "tickers": tickers, "channel": "bars",
                       "frequency": freq, "aggregation": "1m", "request_id": rid})


def test_server_rejects_a_bad_key_like_the_vendor() -> None:
    bad = FinazonServer("good").accept("/v1?apikey=nope", {})
    assert bad.close is not None and bad.close[0] == 1008
    [ev] = FinazonDecoder("s").feed(rec(0, bad.frames[0]))
    assert isinstance(ev, Status) and ev.kind == "fatal"
    assert FinazonServer("good").accept("/v1?apikey=good", {}).close is None


def test_server_answers_unknown_and_already_subscribed_but_keeps_the_good() -> None:
    srv = FinazonServer(None, tickers=["BTC/USDT", "AI/USDT"])
    first = [json.loads(f) for f in srv.on_frame(_sub(["BTC/USDT", "NOPE"]), 0.0).frames]
    assert first[0]["code"] == "SUCCESS_SUBSCRIPTION" and first[0]["data"] == ["BTC/USDT"]
    assert first[1]["status"] == "error" and first[1]["data"] == ["NOPE"]
    again = [json.loads(f) for f in srv.on_frame(_sub(["BTC/USDT", "AI/USDT"], 2), 1.0).frames]
    assert again[0]["data"] == ["AI/USDT"] and "Already subscribed" in again[1]["message"]
    assert srv.wants("BTC/USDT", "huobi|1s") and srv.wants("AI/USDT", "huobi|1s")
    assert not srv.wants("BTC/USDT", "huobi|1m") and not srv.wants("NOPE", "huobi|1s")
    assert route(bar(1)) == ("BTC/USDT", "huobi|1s") and route("nope") is None
    gone = [json.loads(f) for f in srv.on_frame(_sub(["AI/USDT"], 3, "unsubscribe"), 2.0).frames]
    assert gone[0]["code"] == "SUCCESS_UNSUBSCRIPTION" and not srv.wants("AI/USDT", "huobi|1s")
    assert srv.on_frame(DOC_RESET, 3.0).frames == [] and srv.variants() == set()


def test_server_heartbeat_validation_and_event_budget() -> None:
    srv = FinazonServer(None, events_per_minute=100)
    [hb] = srv.on_frame(DOC_HEARTBEAT, 0.0).frames
    assert json.loads(hb) == {"event": "heartbeat", "status": "success", "request_id": 108}
    for bad in ["nope", '{"event":"dance"}', _sub([]), _sub(["A"], freq="2s")]:
        [err] = srv.on_frame(bad, 1.0).frames
        assert json.loads(err)["status"] == "error"
    for i in range(95):
        srv.on_frame(DOC_HEARTBEAT, 2.0 + i * 0.1)
    [limited] = srv.on_frame(DOC_HEARTBEAT, 12.0).frames       # the 101st event of the minute
    assert "Rate limit" in json.loads(limited)["message"]
    assert "success" in srv.on_frame(DOC_HEARTBEAT, 61.5).frames[0]   # the window moved on


# --- properties ------------------------------------------------------------------------

def _check_never_raises(payload: bytes, direction: str = "in") -> None:
    d = FinazonDecoder("s")
    d.feed(rec(0, bar(1699540020), ts=0))
    events = d.feed(rec(1, payload, direction, ts=10 * NS))
    for ev in events:
        assert isinstance(ev, (Bar, Gap, Status))
    rejected = [e for e in events if isinstance(e, Gap) and e.kind == "rejected"]
    assert len(rejected) <= 1 and (not rejected or len(events) == 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["in", "out"]))
def test_any_bytes_give_events_or_one_rejected_record(payload: bytes, direction: str) -> None:
    _check_never_raises(payload, direction)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SERVER_DOC_FRAMES + ['{"status":"error","message":"Invalid API key"}']),
       st.sampled_from(["d", "p", "ch", "f", "aggr", "s", "t", "o", "h", "l", "c", "v", "status",
                        "code", "data", "request_id", "event", "message"]), JSONISH)
def test_mutated_doc_frames_never_crash(frame: str, key: str, value: object) -> None:
    obj = json.loads(frame)
    obj[key] = value
    try:
        payload = json.dumps(obj).encode()
    except ValueError:
        return
    _check_never_raises(payload)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(SERVER_DOC_FRAMES), max_size=5).map("".join), st.integers(0, 500))
def test_truncated_and_concatenated_frames_never_crash(text: str, cut: int) -> None:
    _check_never_raises(text.encode()[:cut])
    _check_never_raises(b'{"s":' * 5000)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200), st.floats(0, 1e6))
def test_server_answers_anything_without_raising(data: bytes | str, now: float) -> None:
    reply = FinazonServer(None, tickers=["A"]).on_frame(data, now)
    assert reply.close is None and all(json.loads(f) for f in reply.frames)
