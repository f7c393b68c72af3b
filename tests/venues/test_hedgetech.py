"""HedgeTech codec (IME and TSE/IFB), schedule and time zones, without an event loop.

IME frames marked DOC are vendor-docs/hedgetech-ime.txt's own examples (the
envelope of section 6 with the payload of "Complete Data Payload Structure");
TSE/IFB frames are the examples of the vendor's TSE/IFB WebSocket README.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import schedule
from schemas.errors import ConfigError
from schemas.events import Bar, Book, Gap, RawRecord, Status, Ticker
from schemas.schedule import TradingHours, parse_schedule
from schemas.venues import get
from schemas.venues.hedgetech import (
    HedgeTechClient,
    HedgeTechDecoder,
    HedgeTechServer,
    Subscription,
    close_reason,
    encode,
    route,
)
from schemas.venues.values import iso_ns

NS = 1_000_000_000
ZERO_LEVEL = {"buy_quantity": 0, "buy_price": 0, "sell_quantity": 0, "sell_price": 0}
DOC_DATA: dict[str, Any] = {
    "BestLimit": {"1": ZERO_LEVEL, "2": ZERO_LEVEL, "3": ZERO_LEVEL},
    "Aggregate": {"date": "", "time": "", "trade_count": 0, "total_volume": 0, "total_value": 0,
                  "closing_price": 0, "last_price": 0, "low_price": 0, "high_price": 0,
                  "open_price": 0, "previous_close": 0},
    "AllowedPriceRange": {"minAllowedPrice": 1, "maxAllowedPrice": 9999999999},
    "ContractInfo": {"open_interest": 0, "open_interest_changes": 0},
}
DOC_IME_NAME = json.dumps({"channel": "IME Stream", "contractName": "IMEFutures_Sample",
                           "timestamp": "2025-11-14T12:00:00.000000", "data": DOC_DATA})
DOC_IME_ID = json.dumps({"channel": "IME Stream", "ContractId": "IME123456789",
                         "timestamp": "2025-11-14T12:00:00.000000", "data": DOC_DATA})
TSE_BEST_LIMIT = """{"channel": "best-limit", "symbolIsin": "IRO1XYZ1234",
  "timestamp": "2025-11-14T12:00:00.000000", "data": {
    "1": {"buy_order_count": 5, "buy_quantity": 1000, "buy_price": 10000,
          "sell_order_count": 3, "sell_quantity": 800, "sell_price": 10050},
    "2": {"buy_order_count": 4, "buy_quantity": 500, "buy_price": 9950,
          "sell_order_count": 2, "sell_quantity": 400, "sell_price": 10100}}}"""
TSE_OHLCV = """{"channel": "ohlcv-last-1m", "symbolIsin": "IRO1XYZ1234",
  "timestamp": "2025-11-14T12:00:00.000000",
  "data": {"open": 10000.0, "high": 10100.0, "low": 9950.0, "close": 10050.0, "volume": 3500}}"""
STAMP = '"timestamp":"2025-11-19T10:30:00Z"'
TSE_ORDER_BOOK = ('{"channel":"order-book","symbolIsin":"IR0001234567",' + STAMP + ','
                  '"data":{"Buy":[{"price":12000.0,"quantity":500,"count":3}],'
                  '"Sell":[{"price":12100.0,"quantity":400,"count":2}]}}')
TSE_AGGREGATE = ('{"channel":"aggregate","symbolName":"فملی",' + STAMP + ','
                 '"data":{"date":"2025-11-19","time":"10:30:00","trade_count":120,'
                 '"total_volume":5000,"total_value":60000000,"closing_price":12000.0,'
                 '"last_price":12100.0,"low_price":11950.0,"high_price":12150.0,'
                 '"open_price":12050.0,"previous_close":11980.0}}')
TSE_CONTRACT = ('{"channel":"contract-info","symbolName":"FUT001",' + STAMP + ','
                '"data":{"open_interest":1200,"initial_margin":5000,"required_margin":4500}}')
TSE_FUND = ('{"channel":"fund-info","symbolName":"ETF001",' + STAMP + ','
            '"data":{"nav":12500.0,"units":100000,"marketCap":1250000000,'
            '"as_of":"2025-11-19T10:30:00"}}')
TSE_FLOW = ('{"channel":"institutional-vs-individual","symbolName":"ETF001",' + STAMP + ','
            '"data":{"buy_count_individual":120,"buy_volume_individual":5000,'
            '"buy_count_institution":45,"buy_volume_institution":10000,'
            '"sell_count_individual":100,"sell_volume_individual":4000,'
            '"sell_count_institution":50,"sell_volume_institution":9000}}')
ALL_FRAMES = [DOC_IME_NAME, DOC_IME_ID, TSE_BEST_LIMIT, TSE_OHLCV, TSE_ORDER_BOOK, TSE_AGGREGATE,
              TSE_CONTRACT, TSE_FUND, TSE_FLOW]
NOON_TEHRAN = int(datetime(2025, 11, 14, 8, 30, tzinfo=UTC).timestamp()) * NS


def rec(frame: int, payload: str | bytes, ts: int | None = None,
        direction: str = "in") -> RawRecord:
    data = payload.encode() if isinstance(payload, str) else payload
    return RawRecord(ts if ts is not None else frame * 1000, frame, direction, "text", data)


def decoder(**options: Any) -> HedgeTechDecoder:
    d = HedgeTechDecoder("s")
    d.configure(options)
    return d


# --- IME ---------------------------------------------------------------------------------

def test_doc_ime_snapshot_is_a_book_row_and_a_tickers_row() -> None:
    [book, ticker] = decoder().feed(rec(0, DOC_IME_NAME))
    assert isinstance(book, Book) and isinstance(ticker, Ticker)
    assert book.symbol == ticker.symbol == "IMEFutures_Sample"
    assert book.ts_event == ticker.ts_event == NOON_TEHRAN           # naive = Tehran time
    # zeros mean an empty level: no level at all
    assert (book.depth, book.bid_px, book.ask_px, book.bid_n) == (0, [], [], None)
    assert (ticker.last, ticker.open, ticker.close, ticker.prev_close) == (None, None, None, None)
    assert (ticker.volume, ticker.turnover, ticker.open_interest) == (0.0, 0.0, 0.0)
    assert (ticker.lower_limit, ticker.upper_limit) == (1.0, 9999999999.0)
    assert json.loads(ticker.extras or "") == {"date": "", "time": "", "trade_count": 0,
                                               "open_interest_changes": 0}
    assert (book.pos, ticker.pos) == (0, 1)


def test_doc_ime_by_contract_id_and_partial_levels() -> None:
    obj = json.loads(DOC_IME_ID)
    obj["data"]["BestLimit"] = {"2": {"buy_quantity": 5, "buy_price": 99, "sell_quantity": 0,
                                      "sell_price": 0},
                                "1": {"buy_quantity": 7, "buy_price": 100, "sell_quantity": "3",
                                      "sell_price": "101"}}
    obj["data"]["Aggregate"].update(last_price="100.5", total_volume=12)
    obj["data"]["Extra"] = {"x": 1}
    [book, ticker] = decoder().feed(rec(0, json.dumps(obj)))
    assert isinstance(book, Book) and isinstance(ticker, Ticker)
    assert book.symbol == "IME123456789"
    assert (book.bid_px, book.bid_sz) == ([100.0, 99.0], [7.0, 5.0])
    assert (book.ask_px, book.ask_sz) == ([101.0], [3.0])
    assert ticker.last == 100.5 and ticker.volume == 12.0
    assert json.loads(ticker.extras or "")["Extra"] == {"x": 1}


# --- TSE/IFB -------------------------------------------------------------------------------

def test_tse_best_limit_has_order_counts() -> None:
    [book] = decoder().feed(rec(0, TSE_BEST_LIMIT))
    assert isinstance(book, Book) and book.symbol == "IRO1XYZ1234" and book.depth == 2
    assert (book.bid_px, book.bid_sz, book.bid_n) == ([10000.0, 9950.0], [1000.0, 500.0], [5, 4])
    assert (book.ask_px, book.ask_sz, book.ask_n) == ([10050.0, 10100.0], [800.0, 400.0], [3, 2])


def test_tse_ohlcv_is_a_bar_opening_at_its_minute() -> None:
    obj = json.loads(TSE_OHLCV)
    obj["timestamp"] = "2025-11-14T12:00:41.250000"
    [ev] = decoder().feed(rec(0, json.dumps(obj)))
    assert isinstance(ev, Bar) and ev.interval == "1m" and ev.ts_event == NOON_TEHRAN
    assert (ev.open, ev.high, ev.low, ev.close, ev.volume) == \
        (10000.0, 10100.0, 9950.0, 10050.0, 3500.0)


def test_tse_order_book_aggregate_and_info_channels() -> None:
    d = decoder()
    [book] = d.feed(rec(0, TSE_ORDER_BOOK))
    assert isinstance(book, Book)
    utc_1030 = datetime(2025, 11, 19, 10, 30, tzinfo=UTC)
    assert book.ts_event == int(utc_1030.timestamp()) * NS
    assert (book.bid_px, book.bid_n, book.ask_px, book.ask_n) == ([12000.0], [3], [12100.0], [2])
    [agg] = d.feed(rec(1, TSE_AGGREGATE))
    assert isinstance(agg, Ticker) and agg.symbol == "فملی"
    assert (agg.last, agg.open, agg.high, agg.low, agg.close, agg.prev_close) == \
        (12100.0, 12050.0, 12150.0, 11950.0, 12000.0, 11980.0)
    assert (agg.volume, agg.turnover) == (5000.0, 60000000.0)
    assert json.loads(agg.extras or "") == \
        {"date": "2025-11-19", "time": "10:30:00", "trade_count": 120}
    [ci] = d.feed(rec(2, TSE_CONTRACT))
    assert isinstance(ci, Ticker) and ci.open_interest == 1200.0
    assert json.loads(ci.extras or "") == {"initial_margin": 5000, "required_margin": 4500}
    [fund] = d.feed(rec(3, TSE_FUND))
    [flow] = d.feed(rec(4, TSE_FLOW))
    assert isinstance(fund, Ticker) and json.loads(fund.extras or "")["nav"] == 12500.0
    assert isinstance(flow, Ticker)
    assert json.loads(flow.extras or "")["sell_volume_institution"] == 9000
    assert fund.last is None and flow.open_interest is None


def test_unparseable_frames_are_one_rejected_gap() -> None:
    for bad in [b"\xff", b"[]", b"{}", b'{"contractName":"A"}',
                b'{"channel":"x","symbolName":"A","data":{}}',
                b'{"channel":"best-limit","symbolName":"A","data":{"x":{}}}',
                b'{"channel":"best-limit","symbolName":"A","data":{"1":[]}}',
                b'{"channel":"order-book","symbolName":"A","data":{"Buy":{}}}',
                b'{"channel":"ohlcv-last-1m","symbolName":"A","data":{"open":1}}',
                b'{"channel":"aggregate","symbolName":"A","timestamp":"yesterday","data":{}}',
                (b'{"channel":"aggregate","symbolName":"A","timestamp":"9999-01-01T00:00:00",'
                 b'"data":{}}'),
                (b'{"channel":"best-limit","symbolName":"A","data":{"1":{"buy_price":1,'
                 b'"buy_order_count":99999999999999999999}}}'),
                b'{"channel":"IME Stream","contractName":"A","data":{"Aggregate":[]}}']:
        [ev] = decoder().feed(rec(0, bad))
        assert isinstance(ev, Gap) and ev.kind == "rejected" and ev.detail and "\n" not in ev.detail


# --- time: zones, schedules, staleness -----------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2025-11-14T12:00:00.000000", NOON_TEHRAN),
    ("2025-11-14T12:00:00", NOON_TEHRAN),
    ("2025-11-14 12:00:00.5", NOON_TEHRAN + NS // 2),
    ("2025-11-14T08:30:00Z", NOON_TEHRAN),
    ("2025-11-14T08:30:00.000001+00:00", NOON_TEHRAN + 1000),
    ("2025-11-14T12:00:00.123456789+03:30", NOON_TEHRAN + 123456789),
])
def test_timestamps_with_and_without_a_zone(text: str, expected: int) -> None:
    assert iso_ns(text, schedule.zone("Asia/Tehran")) == expected


def test_tehran_falls_back_to_a_fixed_offset_without_tzdata(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise schedule.ZoneInfoNotFoundError(name)
    schedule.zone.cache_clear()
    monkeypatch.setattr(schedule, "ZoneInfo", missing)
    try:
        tz = schedule.zone("Asia/Tehran")
        assert iso_ns("2025-11-14T12:00:00", tz) == NOON_TEHRAN
        with pytest.raises(ConfigError, match="tzdata"):
            schedule.zone("Europe/Paris")
    finally:
        schedule.zone.cache_clear()


def test_trading_hours() -> None:
    hours = TradingHours.parse("Sat-Wed 09:00-15:00 Asia/Tehran")
    assert TradingHours.parse(str(hours)) == hours and parse_schedule("always") is None
    fri = int(datetime(2025, 11, 14, 8, 30, tzinfo=UTC).timestamp()) * NS   # Friday noon
    sat = fri + 86_400 * NS
    assert not hours.is_open(fri) and hours.is_open(sat)
    assert not hours.is_open(sat + 4 * 3600 * NS)                                  # 16:00 Tehran
    assert hours.open_ns(fri, sat) == 3 * 3600 * NS               # Sat 09:00-12:00
    assert hours.open_ns(fri - 7 * 86_400 * NS, fri) == 5 * 6 * 3600 * NS           # one week
    for bad in ["Sat-Wed", "Xyz 09:00-15:00", "Sat-Wed 15:00-09:00", "Sat 9-10",
                "Sat 09:00-15:00 Mars/Base"]:
        with pytest.raises(ConfigError):
            TradingHours.parse(bad)


def test_quiet_closed_market_is_no_gap_but_silence_in_trading_hours_is() -> None:
    d = decoder(stale_after=60)                    # default schedule: Sat-Wed 09:00-15:00 Tehran
    thu_1450 = int(datetime(2025, 11, 13, 11, 20, tzinfo=UTC).timestamp()) * NS
    sat_0900 = int(datetime(2025, 11, 15, 5, 30, tzinfo=UTC).timestamp()) * NS
    wed_1450 = thu_1450 - 86_400 * NS
    gaps = lambda evs: [e for e in evs if isinstance(e, Gap)]
    d.feed(rec(0, TSE_AGGREGATE, ts=wed_1450))
    # Wednesday 14:50 → Saturday 09:00:30: 10 min + 30 s of trading hours are silent
    [stale] = gaps(d.feed(rec(1, TSE_AGGREGATE, ts=sat_0900 + 30 * NS)))
    assert (stale.kind, stale.ts_start, stale.ts_end) == ("stale", wed_1450, sat_0900 + 30 * NS)
    assert stale.detail is not None and "630.0s of it in trading hours" in stale.detail
    d.feed(rec(2, TSE_AGGREGATE, ts=thu_1450))      # Thursday: closed all day
    assert not gaps(d.feed(rec(3, TSE_AGGREGATE, ts=sat_0900 + 30 * NS)))
    always = decoder(stale_after=60, schedule=None)
    always.feed(rec(0, TSE_AGGREGATE, ts=thu_1450))
    later = always.feed(rec(1, TSE_AGGREGATE, ts=thu_1450 + 61 * NS))
    assert [g.kind for g in gaps(later)] == ["stale"]


def test_staleness_is_per_symbol_and_channel_and_slow_channels_never_stale() -> None:
    d = decoder(stale_after=5, schedule=None)
    out = []
    for i, frame in enumerate([TSE_BEST_LIMIT, TSE_OHLCV, TSE_CONTRACT]):
        d.feed(rec(i, frame, ts=0))
        out += d.feed(rec(10 + i, frame, ts=10 * NS))
    assert sorted(g.stream for g in out if isinstance(g, Gap)) == [
        "IRO1XYZ1234|best-limit", "IRO1XYZ1234|ohlcv-last-1m"]


# --- client and 1008 ------------------------------------------------------------------------

def test_client_builds_the_query_and_puts_the_token_in_a_header() -> None:
    client = HedgeTechClient(["سکه-طلا", "B"], {"token": "eyJ.secret.jwt"})
    ime = client.dial("wss://core.hedgetech.ir/data-engine/ime/live/data/websocket/contract/name")
    assert ime.headers == {"Authorization": "eyJ.secret.jwt"}
    assert "secret" not in ime.redacted_url and ime.redacted_url == ime.url
    assert Subscription.from_url(ime.url).symbols == ("سکه-طلا", "B")
    assert "contract_names=" in ime.url
    # the spelling already in the URL is kept; symbols already there are not repeated
    kept = client.dial("ws://h/data-engine/ime/live/data/websocket/contract/name?contract_name=B")
    assert "contract_names" not in kept.url
    assert Subscription.from_url(kept.url).symbols == ("B", "سکه-طلا")
    by_id = HedgeTechClient(["IME1"]).dial("ws://h/data-engine/ime/live/data/websocket/contract/id")
    assert by_id.url.endswith("?contract_id=IME1") and by_id.headers == {}
    tse = HedgeTechClient(["فملی"], options={"channels": "best-limit,aggregate"}).dial(
        "ws://h/data-engine/tse-ifb/live/data/websocket/symbol/name")
    sub = Subscription.from_url(tse.url)
    assert sub.symbols == ("فملی",) and sub.channels == ("best-limit", "aggregate")
    with pytest.raises(ConfigError):
        HedgeTechClient(["A"]).dial("ws://h/somewhere/else")
    spelled = HedgeTechClient(["A"], options={"param": "contract_name"})
    assert "contract_name=A" in spelled.dial("ws://h/ime/live/data/websocket/contract/name").url
    with pytest.raises(ConfigError):
        spelled.dial("ws://h/ime/live/data/websocket/contract/id")
    with pytest.raises(ConfigError):
        HedgeTechClient(["A"], options={"channels": ["trades"]})
    assert get("hedgetech").credentials == {"token": "TICKREC_HEDGETECH_TOKEN"}
    assert HedgeTechClient(["A"]).on_open() == [] and HedgeTechClient(["A"]).heartbeat() is None


def test_client_records_its_staleness_settings_for_the_decoder() -> None:
    opts = HedgeTechClient(["A"], options={"stale_after": 30,
                                           "schedule": "Sat-Wed 09:00-12:30 Asia/Tehran"}
                           ).decoder_options()
    d = HedgeTechDecoder("s")
    d.feed(RawRecord(0, 0, "event", "open", b"ws://x", json.dumps({"decoder": opts})))
    assert d.stale_after_ns == 30 * NS and str(d.schedule).endswith("09:00-12:30 Asia/Tehran")
    always = HedgeTechClient(["A"], options={"schedule": "always"})
    assert always.decoder_options()["schedule"] is None


def test_close_1008_is_a_fatal_status_with_the_servers_reason() -> None:
    d = HedgeTechDecoder("s")
    note = '{"code":1008,"reason":"invalid token"}'
    [fatal] = d.feed(RawRecord(5, 3, "event", "close", b"", note))
    assert isinstance(fatal, Status) and fatal.kind == "fatal" and "invalid token" in fatal.detail
    client = HedgeTechClient(["A"])
    assert client.permanent(1008, [fatal]) == fatal.detail
    assert client.permanent(1008) is not None                 # even without the decoder's status
    assert d.feed(RawRecord(6, 4, "event", "close", b"", '{"code":1006,"reason":"lost"}')) == []
    assert client.permanent(1006) is None and client.permanent(None) is None


# --- server side -----------------------------------------------------------------------------

IME = "/data-engine/ime/live/data/websocket/contract"
TSE = "/data-engine/tse-ifb/live/data/websocket/symbol"


def test_server_checks_the_header_and_the_query() -> None:
    srv = lambda: HedgeTechServer("tok", symbols=["سکه", "B"])
    assert srv().accept(f"{IME}/name?contract_names=B", {}).close == \
        (1008, "invalid or missing token")
    assert srv().accept(f"{IME}/name?contract_names=B", {"authorization": "bad"}).close is not None
    ok = srv()
    persian = "%D8%B3%DA%A9%D9%87"                     # سکه, percent-encoded UTF-8
    assert ok.accept(f"{IME}/name?contract_name={persian}", {"Authorization": "tok"}).close is None
    assert ok.wants("سکه", "ime:contractName") and not ok.wants("B", "ime:contractName")
    assert not ok.wants("سکه", "ime:ContractId")
    both = srv()
    assert both.accept(f"{IME}/name?contract_names=B,{persian}",
                       {"Authorization": "Bearer tok"}).close is None
    assert both.wants("B", "ime:contractName") and both.wants("سکه", "ime:contractName")
    unknown = srv().accept(f"{IME}/id?contract_id=NOPE", {"Authorization": "tok"})
    assert unknown.close is not None and unknown.close[0] == 1008 and "NOPE" in unknown.close[1]
    tse = srv()
    assert tse.accept(f"{TSE}/name?symbol_names=B&channels=best-limit&channels=aggregate",
                      {"Authorization": "tok"}).close is None
    assert tse.wants("B", "tse:symbolName:aggregate")
    assert not tse.wants("B", "tse:symbolName:order-book")
    for bad in [f"{TSE}/name?symbol_names=B", f"{TSE}/name?symbol_names=B&channels=trades",
                f"{IME}/name", "/elsewhere?contract_names=B"]:
        r = srv().accept(bad, {"Authorization": "tok"})
        assert r.close is not None and r.close[0] == 1008, bad
    assert srv().on_frame("anything", 0.0).frames == []


def test_route_matches_wants_and_close_reasons_fit_the_frame() -> None:
    frame = encode("best-limit", "symbolName", "فملی", "2025-11-14T12:00:00.000000", {})
    assert route(frame) == ("فملی", "tse:symbolName:best-limit")
    assert route(DOC_IME_ID) == ("IME123456789", "ime:ContractId") and route("{}") is None
    assert len(close_reason("ن" * 200).encode()) <= 123


# --- properties -----------------------------------------------------------------------------

def _check_never_raises(payload: bytes) -> None:
    d = decoder(stale_after=1, schedule=None)
    d.feed(rec(0, DOC_IME_NAME, ts=0))
    events = d.feed(rec(1, payload, ts=10 * NS))
    for ev in events:
        assert isinstance(ev, (Book, Ticker, Bar, Gap, Status))
    rejected = [e for e in events if isinstance(e, Gap) and e.kind == "rejected"]
    assert len(rejected) <= 1 and (not rejected or len(events) == 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_one_rejected_record(payload: bytes) -> None:
    _check_never_raises(payload)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_FRAMES), st.data(), JSONISH)
def test_mutated_real_frames_never_crash(frame: str, data: st.DataObject, value: object) -> None:
    obj = json.loads(frame)
    path = data.draw(st.sampled_from(_paths(obj)))
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        payload = json.dumps(obj, ensure_ascii=False).encode()
    except ValueError:
        return
    _check_never_raises(payload)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(ALL_FRAMES), max_size=3).map("".join), st.integers(0, 900))
def test_truncated_and_concatenated_frames_never_crash(text: str, cut: int) -> None:
    _check_never_raises(text.encode()[:cut])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120),
       st.dictionaries(st.text(max_size=15), st.text(max_size=30), max_size=3))
def test_server_accept_never_raises(path: str, headers: dict[str, str]) -> None:
    reply = HedgeTechServer("tok", symbols=["A"]).accept("/" + path, headers)
    assert reply.close is None or (reply.close[0] == 1008 and len(reply.close[1].encode()) <= 123)
