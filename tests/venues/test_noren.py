"""Noren codec: merge, staleness, login, client and server side, without an event loop."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.sim.market import Market
from replay.sim.noren import Adapter
from schemas.errors import ConfigError
from schemas.events import Book, Gap, RawRecord, Status, Ticker
from schemas.venues import get
from schemas.venues.noren import (
    NorenClient,
    NorenDecoder,
    NorenServer,
    jainam_token,
    route,
    split_keys,
)

NS = 1_000_000_000
EXAMPLES = Path(__file__).parent.parent / "fixtures" / "noren" / "vendor_examples.jsonl"
# The vendor document's own frames (jainam-noren.txt), re-joined where the page wrapped
# them. The MCX `tk` lost its sq1 value in the document; it is left out here.
TK_NFO, TK_MCX, TF_NFO_1, TF_NFO_2, DK_NFO, DK_MCX, DF_NFO, DF_MCX = \
    EXAMPLES.read_text().splitlines()


def rec(frame: int, payload: str | bytes, direction: str = "in", ts: int | None = None,
        kind: str = "text", note: str | None = None) -> RawRecord:
    data = payload.encode() if isinstance(payload, str) else payload
    return RawRecord(ts if ts is not None else (frame + 1) * 1000, frame, direction, kind, data,
                     note)


class Session:
    """A decoder fed one record at a time, with frame numbers and clock handled."""

    def __init__(self, resume: dict[str, Any] | None = None, ts: int = 1000,
                 name: str = "s") -> None:
        self.dec = NorenDecoder(name)
        self.frame = 0
        self.ts = ts
        note = json.dumps({"session": name, "symbols": [], "resume": resume or {}})
        self.feed(b"ws://h/NorenWSTP/", "event", "open", note)

    def feed(self, payload: str | bytes, direction: str = "in", kind: str = "text",
             note: str | None = None) -> list[Any]:
        self.ts += 1000
        out = self.dec.feed(rec(self.frame, payload, direction, self.ts, kind, note))
        self.frame += 1
        return out

    def close(self, code: int | None = 1006) -> list[Any]:
        return self.feed(b"", "event", "close", json.dumps({"code": code, "reason": "lost"}))

    def data(self, payload: str) -> list[Any]:
        return [e for e in self.feed(payload) if not isinstance(e, (Gap, Status))]


def tf(**fields: str) -> str:
    return json.dumps({"t": "tf", "e": "NSE", "tk": "22", **fields})


def tk(**fields: str) -> str:
    return json.dumps({"t": "tk", "e": "NSE", "tk": "22", "pp": "2", **fields})


# --- the vendor document's examples -------------------------------------------------------

def test_vendor_touchline_snapshot_and_updates() -> None:
    s = Session()
    ticker, book = s.data(TK_NFO)
    assert isinstance(ticker, Ticker) and isinstance(book, Book)
    assert ticker.symbol == book.symbol == "NFO|54957"
    assert (ticker.last, ticker.open, ticker.high, ticker.low, ticker.prev_close, ticker.close,
            ticker.avg_price, ticker.volume, ticker.open_interest) == \
        (84.0, 37.65, 98.0, 22.0, 42.2, None, 61.35, 129781850.0, 7606750.0)
    assert ticker.ts_event == 1658911102 * NS and ticker.seq is None
    assert json.loads(ticker.extras or "") == {"ls": "50", "ml": "1", "pc": "99.05", "pp": "2",
                                               "stream": "touchline", "ti": "0.05",
                                               "ts": "NIFTY28JUL22C16600"}
    assert (book.depth, book.bid_px, book.bid_sz, book.ask_px, book.ask_sz, book.bid_n) == \
        (1, [84.0], [1000.0], [84.2], [300.0], None)

    # tf 1 carries lp, pc, ft only: everything else keeps its value
    ticker, book = s.data(TF_NFO_1)
    assert (ticker.last, ticker.open, ticker.volume, ticker.prev_close) == \
        (84.2, 37.65, 129781850.0, 42.2)
    assert json.loads(ticker.extras or "")["pc"] == "99.53"
    assert (book.bid_px, book.ask_px, book.bid_sz) == ([84.0], [84.2], [1000.0])
    assert ticker.frame == book.frame == s.frame - 1        # traceable to the update

    ticker, book = s.data(TF_NFO_2)
    assert (ticker.last, ticker.volume, ticker.ts_event) == (84.35, 129787100.0, 1658911103 * NS)
    assert (book.bid_px, book.bid_sz, book.ask_px, book.ask_sz) == \
        ([84.3], [1500.0], [84.5], [350.0])


def test_vendor_mcx_snapshot_without_last_price() -> None:
    ticker, book = Session().data(TK_MCX)
    assert ticker.symbol == "MCX|239484"
    assert ticker.last is None and ticker.prev_close == 7522.0 and ticker.volume == 469.0
    assert (book.bid_px, book.bid_sz, book.ask_px, book.ask_sz) == \
        ([7564.0], [1.0], [7567.0], [0.0])          # sq1 absent: size 0


def test_vendor_depth_snapshots_and_updates() -> None:
    s = Session()
    book, ticker = s.data(DK_NFO)
    assert isinstance(book, Book) and isinstance(ticker, Ticker)
    assert book.depth == 5
    assert book.bid_px == [76.3, 76.25, 76.2, 76.15, 76.1]
    assert book.ask_px == [76.45, 76.5, 76.55, 76.6, 76.65]
    assert book.bid_sz == [50.0, 2000.0, 3800.0, 2000.0, 7350.0]
    assert book.ask_sz == [650.0, 1400.0, 2250.0, 3400.0, 2250.0]
    assert book.bid_n == [1, 9, 22, 12, 17] and book.ask_n == [2, 8, 12, 16, 7]
    assert (ticker.last, ticker.upper_limit, ticker.lower_limit, ticker.open_interest) == \
        (76.4, 469.9, 0.05, 7361100.0)
    extras = json.loads(ticker.extras or "")
    assert extras["ltt"] == "13:58:37" and extras["ltt_time"] == "13:58:37"
    assert (extras["tbq"], extras["tsq"], extras["ltq"], extras["stream"]) == \
        ("965400", "980950", "50", "depth")
    assert not any(k[:2] in ("bp", "sp", "bq", "sq", "bo", "so") for k in extras)

    book_m, ticker_m = s.data(DK_MCX)
    assert json.loads(ticker_m.extras or "")["52h"] == "8382.00"

    # df NFO: lp, pc, ft, ltq changed; the ladder is the snapshot's
    book, ticker = s.data(DF_NFO)
    assert ticker.last == 76.55 and ticker.ts_event == 1658910520 * NS
    assert json.loads(ticker.extras or "")["ltq"] == "200"
    assert book.bid_px == [76.3, 76.25, 76.2, 76.15, 76.1] and book.bid_n == [1, 9, 22, 12, 17]

    # df MCX: only tsq, sq1, so1 changed
    book, ticker = s.data(DF_MCX)
    assert book.ask_sz == [3.0, 4.0, 3.0, 5.0, 1.0] and book.ask_n == [1, 2, 1, 4, 1]
    assert book.bid_sz == book_m.bid_sz and book.ask_px == book_m.ask_px
    assert ticker.last == 7568.0 and json.loads(ticker.extras or "")["tsq"] == "117"


def test_the_vendor_documents_wrapped_text_is_rejected_never_a_crash() -> None:
    # literal lines of jainam-noren.txt, as broken by the page: kept raw, one rejected gap each
    literal = [('{"t":"tk","pp":"2","ml":"1","e":"NFO","tk":"54957","ts":"NIFTY28JUL22C16600",'
                '"ls":"50","ti":"0.05","c":'),
               '42.20","lp":"84.00","pc":"99.05","ft":"1658911102"',
               ('"7522.00","ft":"1658911100","v":"469","oi":"429","bp1":"7564.00","sp1":"7567.00",'
                '"bq1":"1","sq1":"'),
               'bo2":"9","so2":"8","bo3":"22","so3":"12"}']
    s = Session()
    for line in literal:
        [gap] = s.feed(line)
        assert isinstance(gap, Gap) and gap.kind == "rejected"


# --- merge rules ----------------------------------------------------------------------------

def test_na_and_empty_are_nulls_and_numbers_are_accepted() -> None:
    s = Session()
    ticker, _ = s.data(tk(lp="NA", o="", h=99.5, v=1200, oi="NA", bp1="10.00", sp1="10.10"))
    assert (ticker.last, ticker.open, ticker.high, ticker.volume, ticker.open_interest) == \
        (None, None, 99.5, 1200.0, None)
    ticker, _ = s.data(tf(lp="10.05"))
    assert ticker.last == 10.05 and ticker.high == 99.5
    # a field sent as "NA" in an update becomes null; one left out keeps its value
    ticker, _ = s.data(tf(h="NA"))
    assert ticker.high is None and ticker.last == 10.05


def test_prices_are_rounded_to_the_price_precision() -> None:
    s = Session()
    [ticker] = s.data(tk(lp="84.123456", v="10.5"))
    assert ticker.last == 84.12 and ticker.volume == 10.5           # sizes are not prices
    [ticker] = s.data(json.dumps({"t": "tk", "e": "CDS", "tk": "1", "pp": "4", "lp": "83.123456"}))
    assert ticker.last == 83.1235
    [ticker] = s.data(json.dumps({"t": "tk", "e": "BSE", "tk": "1", "lp": "83.123456"}))
    assert ticker.last == 83.123456                                   # no pp: as sent
    [gap] = s.feed(tf(pp="x", lp="1"))
    assert isinstance(gap, Gap) and gap.kind == "rejected"
    [ticker] = s.data(tf(lp="84.555"))
    assert ticker.last == 84.56 and json.loads(ticker.extras or "")["pp"] == "2"


def test_last_trade_time_in_both_formats_goes_to_extras() -> None:
    s = Session()
    [t1] = s.data(tk(ltt="13:58:37"))
    [t2] = s.data(tf(ltt="27-07-2022 13:58:37"))
    [t3] = s.data(tf(ltt="31-02-2022 99:00:00"))
    assert json.loads(t1.extras or "") | {} == {"ltt": "13:58:37", "ltt_time": "13:58:37",
                                                "pp": "2", "stream": "touchline"}
    e2 = json.loads(t2.extras or "")
    assert (e2["ltt"], e2["ltt_date"], e2["ltt_time"]) == \
        ("27-07-2022 13:58:37", "2022-07-27", "13:58:37")
    e3 = json.loads(t3.extras or "")
    assert e3["ltt"] == "31-02-2022 99:00:00" and "ltt_time" not in e3    # kept, not parsed


def test_touchline_and_depth_states_are_kept_apart() -> None:
    s = Session()
    s.data(tk(lp="10"))
    s.data(json.dumps({"t": "dk", "e": "NSE", "tk": "22", "lp": "20", "bp1": "19"}))
    [ticker] = s.data(tf(v="5"))
    assert ticker.last == 10.0
    book, ticker = s.data(json.dumps({"t": "df", "e": "NSE", "tk": "22", "v": "6"}))
    assert ticker.last == 20.0 and book.bid_px == [19.0]


def test_empty_levels_are_left_out_of_the_book() -> None:
    s = Session()
    book, _ = s.data(json.dumps({"t": "dk", "e": "NSE", "tk": "22", "bp1": "10", "bq1": "5",
                                 "bp2": "0.00", "bq2": "0", "bp3": "NA", "sp1": "0"}))
    assert (book.depth, book.bid_px, book.ask_px, book.bid_n, book.ask_n) == \
        (1, [10.0], [], [0], [])
    [ticker] = s.data(tk(lp="1"))           # touchline without bid/ask: no book row
    assert isinstance(ticker, Ticker)


def test_a_rejected_frame_leaves_the_state_untouched() -> None:
    s = Session()
    s.data(tk(lp="10", v="1"))
    for bad in [tf(lp="abc", v="2"), tf(v={"x": 1}), tf(bo1="1.5"), tf(ft="-3"),
                '{"t":"tf","e":"NSE","tk":"22","ltq":NaN}',
                '{"t":"tf","tk":"22","lp":"3"}', '{"t":"tf","e":"NSE","tk":"","lp":"3"}']:
        [gap] = s.feed(bad)
        assert isinstance(gap, Gap) and gap.kind == "rejected" and "\n" not in (gap.detail or "")
    [ticker] = s.data(tf(h="11"))
    assert (ticker.last, ticker.volume, ticker.high) == (10.0, 1.0, 11.0)


def test_frame_types_acks_and_unknown_frames() -> None:
    s = Session()
    assert s.feed('{"t":"uk","k":"NSE|22"}') == []
    assert s.feed('{"t":"udk","k":"NSE|22"}') == []
    [gap] = s.feed('{"t":"zz"}')
    assert isinstance(gap, Gap) and gap.kind == "rejected" and "zz" in (gap.detail or "")
    [gap] = s.feed("[1]")
    assert isinstance(gap, Gap) and gap.kind == "rejected"


# --- login -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frame", ['{"t":"ck","s":"OK"}', '{"t":"cf","k":"OK"}',
                                   '{"t":"ck","s":"Ok","uid":"U1"}'])
def test_login_ok_in_either_style_starts_the_subscriptions(frame: str) -> None:
    [status] = Session().feed(frame)
    assert isinstance(status, Status) and status.kind == "connected"
    client = NorenClient(["NSE|22", "NFO|35003"])
    subs = [json.loads(o.stored) for o in client.after([status])]
    assert subs == [{"t": "t", "k": "NSE|22#NFO|35003"}, {"t": "d", "k": "NSE|22#NFO|35003"}]
    assert client.permanent(None, [status]) is None


@pytest.mark.parametrize("frame", ['{"t":"ck","s":"NOT_OK","emsg":"Invalid Session Key"}',
                                   '{"t":"cf","k":"NOT_OK"}', '{"t":"ck"}', '{"t":"ck","s":1}'])
def test_anything_but_ok_is_a_failed_login_and_permanent(frame: str) -> None:
    [status] = Session().feed(frame)
    assert isinstance(status, Status) and status.kind == "fatal"
    client = NorenClient(["NSE|22"], {"uid": "U1", "token": "tok-secret"})
    reason = client.permanent(None, [status])
    assert reason is not None and "login failed" in reason and "tok-secret" not in reason
    assert client.after([status]) == []


def test_a_login_failure_message_echoing_the_token_is_scrubbed() -> None:
    client = NorenClient(["NSE|22"], {"uid": "U1", "token": "tok-secret"}, {"jainam": True})
    echo = Status("noren", "fatal", 1, f"noren: login failed (ck 'NOT_OK'; bad "
                                       f"{jainam_token('tok-secret')} tok-secret)")
    reason = client.permanent(None, [echo]) or ""
    assert "tok-secret" not in reason and jainam_token("tok-secret") not in reason


def test_close_1008_is_permanent_other_closes_are_not() -> None:
    client = NorenClient(["NSE|22"])
    assert "1008" in (client.permanent(1008) or "")
    assert client.permanent(1006) is None and client.permanent(1000) is None


# --- client ----------------------------------------------------------------------------------

def test_login_frame_carries_the_token_and_the_journal_copy_does_not() -> None:
    client = NorenClient(["NSE|22"], {"uid": "U1", "actid": "A1", "token": "tok-secret"})
    [login] = client.on_open()
    assert json.loads(login.payload) == {"t": "c", "uid": "U1", "actid": "A1",
                                         "susertoken": "tok-secret", "source": "API"}
    assert b"tok-secret" not in login.stored
    assert json.loads(login.stored)["susertoken"] == "***"
    dial = client.dial("wss://ws.jainam.in/NorenWSTP/")
    assert dial.url == dial.redacted_url == "wss://ws.jainam.in/NorenWSTP/"
    # actid defaults to uid
    [login] = NorenClient(["NSE|22"], {"uid": "U1", "token": "t"}).on_open()
    assert json.loads(login.payload)["actid"] == "U1"


def test_jainam_login_hashes_the_session_token_twice_and_adds_api() -> None:
    client = NorenClient(["NSE|22"], {"uid": "AB123", "token": "sess-id-1"}, {"jainam": True})
    [login] = client.on_open()
    sent = json.loads(login.payload)
    once = hashlib.sha256(b"sess-id-1").hexdigest()
    assert sent == {"t": "c", "uid": "AB123_API", "actid": "AB123_API",
                    "susertoken": hashlib.sha256(once.encode()).hexdigest(), "source": "API"}
    assert json.loads(login.stored)["susertoken"] == "***"
    assert b"sess-id-1" not in login.stored and sent["susertoken"].encode() not in login.stored


def test_subscriptions_go_in_chunks_of_50_keys() -> None:
    symbols = [f"NSE|{i}" for i in range(120)]
    frames = [json.loads(o.stored) for o in NorenClient(symbols).subscriptions()]
    assert [f["t"] for f in frames] == ["t", "t", "t", "d", "d", "d"]
    assert [len(split_keys(f["k"])) for f in frames] == [50, 50, 20] * 2
    assert [k for f in frames[:3] for k in split_keys(f["k"])] == symbols
    only_depth = NorenClient(["NSE|1"], options={"streams": ["depth"]}).subscriptions()
    assert [json.loads(o.stored)["t"] for o in only_depth] == ["d"]


def test_heartbeat_is_the_documented_text_frame() -> None:
    client = NorenClient(["NSE|22"])
    assert json.loads(client.heartbeat().payload) == {"k": "", "t": "h"}
    assert client.heartbeat_interval == 50.0


@pytest.mark.parametrize("bad", ["NSE22", "NSE|", "|22", "NSE|22#NFO|1"])
def test_symbols_must_be_exchange_pipe_token(bad: str) -> None:
    with pytest.raises(ConfigError):
        NorenClient([bad])


def test_credentials_come_from_the_documented_environment_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from recorder.run import credentials_from_env
    monkeypatch.setenv("TICKREC_NOREN_UID", "U1")
    monkeypatch.setenv("TICKREC_NOREN_ACTID", "A1")
    monkeypatch.setenv("TICKREC_NOREN_TOKEN", "tok")
    assert get("noren").credentials == {"uid": "TICKREC_NOREN_UID", "actid": "TICKREC_NOREN_ACTID",
                                        "token": "TICKREC_NOREN_TOKEN"}
    assert credentials_from_env("noren") == {"uid": "U1", "actid": "A1", "token": "tok"}


# --- staleness --------------------------------------------------------------------------------

def test_update_before_any_snapshot_is_held_back_until_the_snapshot() -> None:
    s = Session()
    assert s.data(tf(lp="10")) == [] and s.data(tf(lp="11")) == []
    out = s.feed(tk(lp="12"))
    [stale] = [e for e in out if isinstance(e, Gap)]
    assert stale.kind == "stale" and stale.stream == "NSE|22:touchline"
    assert stale.ts_start == 3000 and stale.ts_end == 5000 and "2 partial" in (stale.detail or "")
    [ticker] = [e for e in out if isinstance(e, Ticker)]
    assert ticker.last == 12.0
    assert [e for e in s.feed(tf(lp="13")) if isinstance(e, Gap)] == []


def test_after_a_reconnect_state_is_stale_until_the_fresh_snapshot() -> None:
    first = Session()
    first.data(tk(lp="10", v="100", bp1="9.9"))
    first.data(tf(lp="10.5"))
    first.close()
    closed_at = first.ts
    resume = first.dec.tracker.state()          # what the recorder carries in the open note

    second = Session(resume, ts=closed_at + 10_000, name="s2")
    held = second.feed(tf(lp="11"))             # merged onto nothing: never emitted as fresh
    assert [e.kind for e in held] == ["disconnect"]
    out = second.feed(tk(lp="12", v="300", bp1="11.9"))
    [stale] = [e for e in out if isinstance(e, Gap)]
    assert (stale.kind, stale.ts_start, stale.ts_end) == ("stale", closed_at, second.ts)
    assert "1 partial" in (stale.detail or "") and "closed" in (stale.detail or "")
    ticker, book = [e for e in out if not isinstance(e, Gap)]
    assert (ticker.last, ticker.volume, book.bid_px) == (12.0, 300.0, [11.9])
    ticker, _ = second.data(tf(lp="12.5"))
    assert (ticker.last, ticker.volume) == (12.5, 300.0)


def test_snapshot_first_after_reconnect_gives_disconnect_and_stale_gaps() -> None:
    first = Session()
    first.data(tk(lp="10"))
    first.close()
    second = Session(first.dec.tracker.state(), ts=first.ts + 10_000, name="s2")
    out = second.feed(tk(lp="12"))
    kinds = [e.kind for e in out if isinstance(e, Gap)]
    assert kinds == ["disconnect", "stale"]
    assert "0 partial" in ([e for e in out if isinstance(e, Gap)][1].detail or "")


def test_a_session_that_ends_before_the_snapshot_closes_its_stale_gap_on_close() -> None:
    first = Session()
    first.data(tk(lp="10"))
    first.close()
    second = Session(first.dec.tracker.state(), ts=first.ts + 10_000, name="s2")
    second.feed(tf(lp="11"))
    [gap] = second.close()
    assert (gap.kind, gap.ts_start, gap.ts_end) == ("stale", first.ts, second.ts)
    assert "no snapshot" in (gap.detail or "") and gap.frame == second.frame - 1
    third = Session(second.dec.tracker.state(), ts=second.ts + 10_000, name="s3")
    out = third.feed(tk(lp="12"))
    [stale] = [e for e in out if isinstance(e, Gap) and e.kind == "stale"]
    assert stale.ts_start == second.ts          # the next interval starts where that one ended


def test_a_stream_silent_for_a_whole_session_stays_stale_from_the_first_disconnect() -> None:
    first = Session()
    first.data(tk(lp="10"))
    first.close()
    second = Session(first.dec.tracker.state(), ts=first.ts + 10_000, name="s2")
    assert second.close() == []
    third = Session(second.dec.tracker.state(), ts=second.ts + 10_000, name="s3")
    [stale] = [e for e in third.feed(tk(lp="12")) if isinstance(e, Gap) and e.kind == "stale"]
    assert stale.ts_start == first.ts


def test_frames_after_a_close_in_the_same_decoder_are_stale_too() -> None:
    # `tickrec parse --records` with a hand-made file may go on after a close record
    s = Session()
    s.data(tk(lp="10"))
    s.close()
    closed_at = s.ts
    assert s.data(tf(lp="11")) == []
    out = s.feed(tk(lp="12"))
    [stale] = [e for e in out if isinstance(e, Gap) and e.kind == "stale"]
    assert stale.ts_start == closed_at


def test_an_unreadable_close_note_is_rejected_but_still_ends_the_state() -> None:
    s = Session()
    s.data(tk(lp="10"))
    [gap] = s.feed(b"", "event", "close", "{not json")
    assert gap.kind == "rejected"
    assert s.data(tf(lp="11")) == []


def test_unsubscribe_drops_the_state() -> None:
    s = Session()
    s.data(tk(lp="10"))
    s.feed('{"t":"u","k":"NSE|22"}', direction="out")
    assert s.data(tf(lp="11")) == []
    [ticker] = s.data(tk(lp="12"))
    assert ticker.last == 12.0


# --- server side ------------------------------------------------------------------------------

def login(uid: str = "U1", token: str = "good", actid: str | None = None) -> str:
    return json.dumps({"t": "c", "uid": uid, "actid": actid or uid, "susertoken": token,
                       "source": "API"})


def test_server_checks_the_login_and_answers_in_both_failure_styles() -> None:
    srv = NorenServer("good")
    assert srv.on_frame('{"t":"t","k":"NSE|22"}', 0.0).frames == []     # before login: ignored
    assert json.loads(srv.on_frame(login(token="bad"), 0.0).frames[0])["s"] == "NOT_OK"
    assert json.loads(srv.on_frame(login(), 0.0).frames[0]) == {"t": "ck", "s": "OK"}
    closing = NorenServer("good", on_fail="close").on_frame(login(token="bad"), 0.0)
    assert closing.close is not None and closing.close[0] == 1008
    assert json.loads(NorenServer("good", ack="cf").on_frame(login(), 0.0).frames[0]) == \
        {"t": "cf", "k": "OK"}
    assert NorenServer(None).on_frame(login(token="anything"), 0.0).frames == ['{"t":"ck","s":"OK"}']
    assert json.loads(NorenServer("good").on_frame(login(uid=""), 0.0).frames[0])["s"] == "NOT_OK"
    assert json.loads(NorenServer(None).on_frame(login(uid=""), 0.0).frames[0])["s"] == "OK"
    j = NorenServer("sess", jainam=True)
    assert json.loads(j.on_frame(login("U1", jainam_token("sess")), 0.0).frames[0])["s"] == "NOT_OK"
    assert json.loads(j.on_frame(login("U1_API", jainam_token("sess")), 0.0).frames[0])["s"] == "OK"
    with pytest.raises(ConfigError):
        NorenServer(None, on_fail="maybe")


def test_server_answers_subscribes_with_snapshots_and_routes_updates() -> None:
    snaps = {("NSE|22", "touchline"): '{"t":"tk","e":"NSE","tk":"22","lp":"1"}'}
    srv = NorenServer(None, snapshot=lambda k, s: snaps.get((k, s)))
    srv.on_frame(login(), 0.0)
    r = srv.on_frame('{"t":"t","k":"NSE|22#NSE|999"}', 1.0)
    assert r.frames == [snaps[("NSE|22", "touchline")]]
    assert srv.wants("NSE|22", "touchline") and not srv.wants("NSE|22", "depth")
    srv.on_frame('{"t":"d","k":"NSE|22"}', 1.0)
    assert srv.wants("NSE|22", "depth")
    r = srv.on_frame('{"t":"u","k":"NSE|22"}', 2.0)
    assert json.loads(r.frames[0]) == {"t": "uk", "k": "NSE|22"}
    assert not srv.wants("NSE|22", "touchline") and srv.wants("NSE|22", "depth")
    assert srv.on_frame("not json", 3.0).frames == []
    assert route('{"t":"df","e":"NSE","tk":"22","v":"1"}') == ("NSE|22", "depth")
    assert route('{"t":"tk","e":"NSE","tk":"22"}') == ("NSE|22", "touchline")
    assert route('{"t":"ck","s":"OK"}') is None and route("nope") is None


def test_server_closes_a_connection_with_no_traffic_either_way() -> None:
    srv = NorenServer(None, idle_timeout=60.0)
    assert srv.idle(0.0) is None
    srv.on_frame(login(), 10.0)
    srv.on_frame('{"t":"t","k":"NSE|22"}', 10.0)
    assert srv.idle(69.0) is None
    assert srv.wants("NSE|22", "touchline")         # data is flowing: the client is alive
    assert srv.idle(69.5) is None and srv.idle(129.0) is None
    closing = srv.idle(130.0)
    assert closing is not None and closing.close == (1000, "idle connection")


def test_simulator_updates_merged_onto_its_snapshots_reproduce_its_state() -> None:
    adapter = Adapter()
    market = Market(["NSE|22", "NFO|35003"], seed=3)
    snapshots = [adapter.snapshot(k, s) for k in ("NSE|22", "NFO|35003")
                 for s in ("touchline", "depth")]
    s = Session()
    for frame in snapshots:
        s.feed(frame or "")
    sizes: dict[str, list[int]] = {"tf": [], "df": []}
    for _ in range(300):
        for _sym, _stream, frame in adapter.render(market.next()):
            sizes[json.loads(frame)["t"]].append(len(json.loads(frame)))
            s.feed(frame)
    # updates carry only what changed: far fewer fields than the snapshot of their stream
    full = {t: len(json.loads(adapter.snapshot("NSE|22", stream) or "")) for t, stream in
            (("tf", "touchline"), ("df", "depth"))}
    assert all(sizes[t] and max(sizes[t]) < full[t] for t in sizes)
    assert min(sizes["tf"]) <= 6 and min(sizes["df"]) <= 8
    for key in ("NSE|22", "NFO|35003"):
        for stream, t in (("touchline", "tk"), ("depth", "dk")):
            server = json.loads(adapter.snapshot(key, stream) or "")
            server.pop("t")
            assert s.dec.states[(key, stream)] == server, (key, stream)


def test_a_dropped_update_leaves_the_client_behind_undetected() -> None:
    adapter = Adapter()
    market = Market(["NSE|22"], seed=5)
    s = Session()
    s.feed(adapter.snapshot("NSE|22", "depth") or "")

    def server_state() -> dict[str, Any]:
        state = json.loads(adapter.snapshot("NSE|22", "depth") or "")
        state.pop("t")
        return state

    gaps = []
    for i in range(200):
        frames = adapter.render(market.next())
        if i == 100:                                  # dropupdate: rendered, never sent
            assert frames and s.dec.states[("NSE|22", "depth")] != server_state()
            continue
        for _sym, _stream, frame in frames:
            gaps += [e for e in s.feed(frame) if isinstance(e, Gap)]
        if i < 100:
            assert s.dec.states[("NSE|22", "depth")] == server_state()
    assert gaps == []                                 # no sequence: nothing to see


# --- properties -------------------------------------------------------------------------------

SYMS = [("NSE", "22"), ("MCX", "239484")]
PRICE = st.one_of(st.integers(0, 10**7).flatmap(
    lambda n: st.integers(0, 4).map(lambda k: f"{n / 10**k:.{k}f}")),
    st.sampled_from(["NA", "", " NA "]), st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False))
QTY = st.one_of(st.integers(0, 10**9).map(str), st.sampled_from(["NA", ""]))
COUNT = st.one_of(st.integers(0, 500).map(str), st.sampled_from(["NA", ""]))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    **{f: PRICE for f in ("lp", "o", "h", "l", "c", "ap", "uc", "lc")},
    **{f"{s}p{i}": PRICE for s in "bs" for i in range(1, 6)},
    **{f"{s}q{i}": QTY for s in "bs" for i in range(1, 6)},
    **{f"{s}o{i}": COUNT for s in "bs" for i in range(1, 6)},
    "v": QTY, "oi": QTY, "tbq": QTY, "ltq": QTY, "pc": PRICE,
    "ft": st.one_of(st.integers(10**9, 2 * 10**9).map(str), st.just("NA")),
    "ltt": st.sampled_from(["09:15:00", "27-07-2022 13:58:37", "NA", "later"]),
    "pp": st.sampled_from(["0", "2", "4", "NA"]),
}
FRAME = st.tuples(st.sampled_from(["tk", "tf", "dk", "df"]), st.sampled_from(SYMS),
                  st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), max_size=12)
                  ).flatmap(lambda f: st.fixed_dictionaries({k: FIELDS[k] for k in f[2]}).map(
                      lambda vals: {"t": f[0], "e": f[1][0], "tk": f[1][1], **vals}))


def _null(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() in ("", "NA"))


def _expected(state: dict[str, Any], stream: str) -> list[dict[str, Any]]:
    """The rows a plain dict state should give (written independently of the codec)."""
    pp = None if _null(state.get("pp")) else int(state["pp"])

    def px(f: str) -> float | None:
        v = state.get(f)
        return None if _null(v) else (float(v) if pp is None else round(float(v), pp))

    def qty(f: str) -> float | None:
        v = state.get(f)
        return None if _null(v) else float(v)

    ft = state.get("ft")
    ticker = {"type": "tickers", "ts_event": None if _null(ft) else int(ft) * NS,
              "last": px("lp"), "open": px("o"), "high": px("h"), "low": px("l"),
              "prev_close": px("c"), "avg_price": px("ap"), "upper_limit": px("uc"),
              "lower_limit": px("lc"), "volume": qty("v"), "open_interest": qty("oi"),
              "pc": None if _null(state.get("pc")) else state.get("pc")}
    levels = 5 if stream == "depth" else 1
    sides: dict[str, list[Any]] = {k: [] for k in ("bid_px", "bid_sz", "bid_n", "ask_px",
                                                   "ask_sz", "ask_n")}
    for side, p, q, o in (("bid", "bp", "bq", "bo"), ("ask", "sp", "sq", "so")):
        for i in range(1, levels + 1):
            price = px(f"{p}{i}")
            if price is None or price == 0:
                continue
            sides[f"{side}_px"].append(price)
            sides[f"{side}_sz"].append(qty(f"{q}{i}") or 0.0)
            n = state.get(f"{o}{i}")
            sides[f"{side}_n"].append(0 if _null(n) else int(n))
    if levels == 1:
        if not sides["bid_px"] and not sides["ask_px"]:
            return [ticker]
        sides["bid_n"] = sides["ask_n"] = None  # type: ignore[assignment]
    book = {"type": "book", "depth": max(len(sides["bid_px"]), len(sides["ask_px"])),
            "ts_event": ticker["ts_event"], **sides}
    return [ticker, book] if stream == "touchline" else [book, ticker]


def _row(ev: Any) -> dict[str, Any]:
    d = ev.to_dict()
    if d["type"] == "tickers":
        d["pc"] = json.loads(d["extras"]).get("pc")
    return d


@settings(max_examples=200, deadline=None)
@given(st.lists(FRAME, max_size=25))
def test_merged_rows_equal_a_dict_model_folded_over_the_frames(frames: list[dict[str, Any]]) -> None:
    s = Session()
    model: dict[tuple[str, str], dict[str, Any]] = {}
    held: set[tuple[str, str]] = set()
    for frame in frames:
        key = (f"{frame['e']}|{frame['tk']}", "touchline" if frame["t"][0] == "t" else "depth")
        fields = {k: v for k, v in frame.items() if k != "t"}
        events = s.feed(json.dumps(frame))
        stale = [e for e in events if isinstance(e, Gap)]
        rows = [_row(e) for e in events if not isinstance(e, Gap)]
        if frame["t"] in ("tk", "dk"):
            model[key] = fields
            assert [g.kind for g in stale] == (["stale"] if key in held else [])
            held.discard(key)
        elif key in model:
            model[key] = {**model[key], **fields}
        else:
            held.add(key)
            assert events == []
            continue
        expected = _expected(model[key], key[1])
        assert [{k: r[k] for k in e} for r, e in zip(rows, expected)] == expected
        assert len(rows) == len(expected)
        assert all(r["symbol"] == key[0] and r["frame"] == s.frame - 1 for r in rows)
    assert {k: v for k, v in s.dec.states.items()} == model


def _check_never_raises(s: Session, payload: bytes) -> list[Any]:
    events = s.feed(payload)
    for ev in events:
        assert isinstance(ev, (Ticker, Book, Gap, Status))
    rejected = [e for e in events if isinstance(e, Gap) and e.kind == "rejected"]
    assert len(rejected) <= 1 and (not rejected or len(events) == 1)
    return events


def _primed() -> Session:
    s = Session()
    for frame in (TK_NFO, DK_NFO, '{"t":"ck","s":"OK"}'):
        s.feed(frame)
    return s


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_events_or_one_rejected_record(payload: bytes) -> None:
    _check_never_raises(_primed(), payload)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)
REAL = [TK_NFO, TF_NFO_1, TF_NFO_2, DK_NFO, DF_NFO, '{"t":"ck","s":"OK"}']


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL), st.sampled_from(["t", "e", "tk", "lp", "pp", "ft", "bp1", "bq2",
                                               "bo3", "ltt", "v", "s", "oi", "zz"]), JSONISH)
def test_mutated_real_frames_never_crash_and_rejects_leave_no_trace(
        frame: str, key: str, value: object) -> None:
    obj = json.loads(frame)
    obj[key] = value
    try:
        payload = json.dumps(obj).encode()
    except ValueError:
        return
    s = _primed()
    before = {k: dict(v) for k, v in s.dec.states.items()}
    events = _check_never_raises(s, payload)
    if any(isinstance(e, Gap) and e.kind == "rejected" for e in events):
        assert s.dec.states == before


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(REAL), max_size=5).map("".join), st.integers(0, 600))
def test_truncated_and_concatenated_frames_never_crash(text: str, cut: int) -> None:
    _check_never_raises(_primed(), text.encode()[:cut])
    _check_never_raises(_primed(), b'{"t":"tf","e":' * 300)
