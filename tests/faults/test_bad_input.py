"""Bad input, through the store: every codec fed random bytes and mutated documented frames
via ``Capture``, then published to Parquet. Whatever arrives ends as a stored ``raw`` frame
and, if the codec cannot take it, exactly one ``rejected`` gap row; never an exception, a
hang or a publish that fails on a decoded value. The store then verifies (every row
re-derives from ``raw``)."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.capture import Capture
from schemas.venues import futu_frame as ff
from schemas.venues import get
from schemas.venues.base import MAX_FRAME_BYTES
from tests.faults.support import scaled
from tests.helpers import read_table
from tests.venues import test_alltick as t_alltick
from tests.venues import test_finazon as t_finazon
from tests.venues import test_futu as t_futu
from tests.venues import test_hedgetech as t_hedgetech
from tests.venues import test_noren as t_noren
from tickrec.verify import verify

pytestmark = pytest.mark.timeout(scaled(60, 1800))

ALLTICK_DOC_TRADE = ('{"cmd_id":22998,"data":{"code":"AAPL.US","seq":"7","tick_time":"1700000000123",'
                     '"price":"189.12","volume":"100","turnover":"18912","trade_direction":1}}')
# Per venue: symbols, client options, the documented frames (each venue's tests hold the
# vendor documents' own examples), and (frame, path) of a number and of an integer the
# decoder reads.
VENUES: dict[str, dict[str, Any]] = {
    "alltick": dict(symbols=["AAPL.US", "A"], options={},
                    frames=[ALLTICK_DOC_TRADE] + t_alltick.REAL,
                    number=(ALLTICK_DOC_TRADE, ("data", "price")),
                    integer=(ALLTICK_DOC_TRADE, ("data", "seq"))),
    "finazon": dict(symbols=["BTC/USDT", "AI/USDT"], options={},
                    frames=t_finazon.SERVER_DOC_FRAMES, number=(t_finazon.DOC_CANDLE, ("c",)),
                    integer=(t_finazon.DOC_CANDLE, ("t",))),
    "hedgetech": dict(symbols=["IMEFutures_Sample"], options={"schedule": None},
                      frames=t_hedgetech.ALL_FRAMES,
                      number=(t_hedgetech.TSE_OHLCV, ("data", "close")),
                      integer=(t_hedgetech.TSE_BEST_LIMIT, ("data", "1", "buy_order_count"))),
    "noren": dict(symbols=["NFO|54957", "MCX|239484"], options={},
                  frames=[t_noren.TK_NFO, t_noren.TK_MCX, t_noren.DK_NFO, t_noren.TF_NFO_1,
                          t_noren.TF_NFO_2, t_noren.DF_NFO, '{"t":"ck","s":"OK"}'],
                  number=(t_noren.TK_NFO, ("lp",)), integer=(t_noren.DK_NFO, ("bo1",))),
    "futu": dict(symbols=["HK.00700"], options={}, frames=t_futu.REAL, number=None,
                 integer=None),
}
JSON_VENUES = [v for v in VENUES if v != "futu"]
CREDENTIALS = {"token": "tok", "uid": "U1", "actid": "A1"}


def through_store(venue: str, frames: list[bytes | str]) -> dict[str, Any]:
    """Record the venue's opening frames, its documented frames, then ``frames`` into a
    fresh store with ``Capture``, publish everything, and read it back."""
    spec = VENUES[venue]
    with tempfile.TemporaryDirectory(prefix="tickrec-bad-") as tmp:
        root = Path(tmp)
        client = get(venue).client(spec["symbols"], CREDENTIALS, spec["options"])
        cap = Capture(root, venue)
        cap.open_session("ws://127.0.0.1/", spec["symbols"], client.decoder_options())
        for out in client.on_open():
            cap.frame_out(out.stored, out.kind)
        for f in spec["frames"]:
            cap.frame_in(f)
        first = cap._frame
        for f in frames:
            cap.frame_in(f)
        again = cap._frame
        for f in spec["frames"]:        # the documented frames once more: still accepted
            cap.frame_in(f)
        cap.close()                     # closes the session and publishes: must not raise
        raw = [r for r in read_table(root, "raw") if r["direction"] == "in"]
        by_frame: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for table in ("trades", "book", "tickers", "bars", "gaps"):
            for r in read_table(root, table):
                by_frame[r["frame"]].append(r)
        report = verify(root)
    return {"raw": raw, "rows": by_frame, "first": first, "again": again, "ok": report.ok,
            "problems": report.problems}


def check(venue: str, frames: list[bytes | str], must_reject: bool = False) -> dict[str, Any]:
    got = through_store(venue, frames)
    assert got["ok"], got["problems"]
    fed = [f.encode("utf-8", "surrogatepass") if isinstance(f, str) else f for f in frames]
    n_doc = len(VENUES[venue]["frames"])
    assert [r["payload"] for r in got["raw"][n_doc:n_doc + len(fed)]] == fed   # kept, as sent
    for i in range(n_doc):              # a bad frame poisons no state: good frames stay good
        rows = got["rows"].get(got["again"] + i, [])
        assert not [r for r in rows if r.get("kind") == "rejected"], (venue, i, rows)
    for i in range(len(frames)):
        rows = got["rows"].get(got["first"] + i, [])
        rejected = [r for r in rows if r.get("kind") == "rejected"]
        assert len(rejected) <= 1 and (not rejected or len(rows) == 1), rows
        if must_reject:
            assert rejected, (venue, frames[i][:200])
            assert "\n" not in (rejected[0]["detail"] or "")
    return got


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


# --- the classic bad frames, one by one -----------------------------------------------------

def _classics(venue: str) -> list[tuple[str, bytes | str]]:
    """(what, frame): frames every JSON codec must reject."""
    real = VENUES[venue]["frames"][0]
    doc = real if isinstance(real, str) else real.decode()
    body = doc.encode()
    cut = body.index(b'"', body.index(b":")) + 1          # just inside the first string value
    out: list[tuple[str, bytes | str]] = [
        ("truncated JSON", doc[: len(doc) // 2]),
        ("invalid UTF-8", body[:cut] + b"\xff\xfe" + body[cut:]),
        ("UTF-8 encoded surrogate", body[:cut] + b"\xed\xa0\x80" + body[cut:]),
        ("lone surrogate escape", body[:cut] + b"\\ud800" + body[cut:]),
        ("deeply nested", "[" * 100_000 + "]" * 100_000),
        ("over the size limit", '{"x":"' + "y" * MAX_FRAME_BYTES + '"}'),
        ("not an object", "[1, 2, 3]"),
        ("empty", b""),
    ]
    if VENUES[venue]["number"] is not None:
        frame, path = VENUES[venue]["number"]
        for what, value in [("NaN", float("nan")), ("infinity", float("inf")),
                            ("a number as an object", {"v": 1}), ("a number as a list", [1, 2]),
                            ("a number as a boolean", True)]:
            out.append((what, json.dumps(_set(json.loads(frame), path, value))))
        frame, path = VENUES[venue]["integer"]
        for what, value in [("an integer above int64", 2**64 + 1),
                            ("an integer text above int64", str(2**63)),
                            ("an integer below int64", -(2**63) - 1)]:
            out.append((what, json.dumps(_set(json.loads(frame), path, value))))
    return out


@pytest.mark.parametrize("venue", JSON_VENUES)
def test_classic_bad_frames_are_stored_raw_and_rejected(venue: str) -> None:
    classics = _classics(venue)
    got = check(venue, [f for _, f in classics], must_reject=True)
    details = [got["rows"][got["first"] + i][0]["detail"] for i in range(len(classics))]
    # the reason names the problem, in one line
    named = dict(zip((w for w, _ in classics), details))
    assert "UTF-8" in named["invalid UTF-8"] or "JSON" in named["invalid UTF-8"]
    assert "surrogate" in named["lone surrogate escape"]
    assert "over the limit" in named["over the size limit"]
    if VENUES[venue]["number"] is not None:
        for what in ("an integer above int64", "an integer text above int64"):
            assert "int64" in named[what] or "out of range" in named[what]
        for what in ("NaN", "infinity"):
            assert any(w in named[what].lower() for w in ("finite", "nan", "inf")), named[what]


def test_alltick_seq_above_int64_was_a_failed_publish_and_is_now_a_rejected_frame() -> None:
    """The known bug: ``integer()`` let a seq above int64 through to the Parquet publish."""
    frame = ALLTICK_DOC_TRADE.replace('"seq":"7"', f'"seq":"{2**63}"')
    got = check("alltick", [frame, ALLTICK_DOC_TRADE.replace('"seq":"7"', f'"seq":"{2**63 - 1}"')])
    first = got["rows"][got["first"]]
    assert [r["kind"] for r in first] == ["rejected"] and "int64" in first[0]["detail"]
    assert [r["seq"] for r in got["rows"][got["first"] + 1] if r.get("price")] == [2**63 - 1]


def _futu_classics() -> tuple[list[tuple[str, bytes]], bytes]:
    good = t_futu.REAL[0]
    head, body = good[:ff.HEADER_SIZE], good[ff.HEADER_SIZE:]
    bad_sha = bytearray(good)
    bad_sha[-1] ^= 0xFF                                     # body no longer matches the SHA1
    longer = bytearray(head)
    longer[12:16] = (len(body) + 100).to_bytes(4, "little")  # the length lies: too long
    shorter = bytearray(head)
    shorter[12:16] = (len(body) - 5).to_bytes(4, "little")   # the length lies: too short
    huge = bytearray(head)
    huge[12:16] = (2**32 - 1).to_bytes(4, "little")
    nan_price = t_futu.doc_packet(t_futu.DOC_REALTIME.replace('"price": 587.0', '"price": "NaN"')
                                  .replace("6977554167720056556", "6977554167720056999"))
    return [("bad SHA1", bytes(bad_sha)), ("length too long", bytes(longer) + body),
            ("length too short", bytes(shorter) + body), ("length over the limit", bytes(huge) + body),
            ("header only", head), ("not a packet", b"GET / HTTP/1.1\r\n\r\n" + bytes(40)),
            ("truncated", good[: len(good) // 2]),
            ("over the size limit", head + bytes(MAX_FRAME_BYTES))], nan_price


def test_futu_bad_packets_are_stored_raw_and_rejected() -> None:
    classics, nan_price = _futu_classics()
    got = check("futu", [f for _, f in classics] + [nan_price])
    for i, (what, _) in enumerate(classics):
        [row] = got["rows"][got["first"] + i]
        assert row["kind"] == "rejected", what
    details = {w: got["rows"][got["first"] + i][0]["detail"] for i, (w, _) in enumerate(classics)}
    assert "SHA1" in details["bad SHA1"]
    assert "announces" in details["length too long"] and "announces" in details["length too short"]
    # a protobuf double can be NaN: Futu's codec stores such a price as null (its choice)
    [trade] = [r for r in got["rows"][got["first"] + len(classics)] if "price" in r]
    assert trade["price"] is None and trade["size"] == 100.0


# --- properties: random bytes and mutated documented frames ---------------------------------

EXTREME = st.sampled_from([2**63, -(2**63) - 1, 2**64 + 5, 10**30, -1, 0, 2**63 - 1,
                           float("nan"), float("inf"), -1e308, "\ud800", "x\udfff", "", "NA",
                           "9" * 40, "1e999", [[[[[]]]]], {"": None}, True])
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20) | EXTREME,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn, venue: str) -> bytes | str:
    frames = VENUES[venue]["frames"]
    base = draw(st.sampled_from(frames))
    raw = base.encode() if isinstance(base, str) else bytes(base)
    how = draw(st.sampled_from(["json", "json", "cut", "flip", "splice", "bytes"]
                               if venue != "futu" else ["cut", "flip", "flip", "length", "bytes"]))
    if how == "json":
        obj = json.loads(base)
        path = draw(st.sampled_from(_paths(obj)))
        _set(obj, path, draw(JSONISH))
        try:
            return json.dumps(obj, ensure_ascii=draw(st.booleans()))
        except ValueError:
            return base
    if how == "cut":
        return raw[:draw(st.integers(0, len(raw)))]
    if how == "flip":
        data = bytearray(raw)
        for pos, value in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                                  st.integers(0, 255)), min_size=1, max_size=4)):
            data[pos] = value
        return bytes(data)
    if how == "splice":
        pos = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\\ud800", b"\\udc00",
                                     b"\x00", b'"', b"\\", b"NaN", b"1e999"]))
        return raw[:pos] + junk + raw[pos:]
    if how == "length":
        data = bytearray(raw)
        data[12:16] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        return bytes(data)
    return draw(st.binary(max_size=300))


SETTINGS = settings(max_examples=scaled(12, 300), deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("venue", list(VENUES))
@SETTINGS
@given(data=st.data())
def test_random_and_mutated_frames_through_the_store(venue: str, data: st.DataObject) -> None:
    frames = data.draw(st.lists(mutated(venue), min_size=1, max_size=8))
    check(venue, frames)
