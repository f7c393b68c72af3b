"""The columnar fast path (AllTick pushes decoded in batches) stores exactly what the
per-frame reference decoder stores: same rows in the same order, same gaps, same
rejected frames, same events, same decoder state, for arbitrary frame sequences."""

from __future__ import annotations

import itertools
import json
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recorder.capture
from recorder.capture import Capture
from schemas.venues import alltick
from schemas.venues.alltick import encode_depth, encode_trade
from storage.journal import iter_journal

CODES = ["AAPL.US", "700.HK", "X", "a b", "BRK/B"]
SUB_DEPTH = '{"cmd_id":22002,"seq_id":1,"trace":"t","data":{"symbol_list":[{"code":"AAPL.US"},{"code":"700.HK"}]}}'
SUB_TRADES = '{"cmd_id":22004,"seq_id":2,"trace":"t","data":{"symbol_list":[{"code":"AAPL.US"},{"code":"X"}]}}'
CONTROL = [
    '{"cmd_id":22003,"seq_id":1,"ret":200,"msg":"ok","data":{}}',
    '{"cmd_id":22005,"seq_id":2,"ret":200,"msg":"ok","data":{}}',
    '{"cmd_id":22001,"seq_id":3,"ret":200,"msg":"ok","data":{}}',
    '{"cmd_id":22005,"seq_id":2,"ret":603,"msg":"plan","data":{}}',
    '{"cmd_id":12345}',
]


class StepClock:
    """A receive clock that advances ``step`` ns per frame (the same in both captures)."""

    def __init__(self, step: int = 1_000_000) -> None:
        self.last = 1_767_225_599_000_000_000       # a capture that crosses midnight
        self.held_back_ns = 0
        self.step = step

    def now(self) -> int:
        self.last += self.step
        return self.last

    def stamps(self, n: int) -> int:
        """What RecvClock.stamps gives: ``now()``, then 1 ns apart."""
        first = self.now()
        self.last = first + n - 1
        return first


numbers = st.one_of(
    st.decimals(min_value=0, max_value=10**6, places=2).map(str),
    st.sampled_from(["0", "00.50", "1e3", "-1.5", "", "NA", "1" * 30, "12345678901234567890.5",
                     "0.1000000000000000055511151231257827", "-0", "nan", " 7"]),
)
ints = st.one_of(st.integers(0, 40), st.sampled_from([2**63, 10**20, -1]))
times = st.sampled_from([1_767_225_600_000, 1_767_225_600, 9_300_000_000, 100_000_000_000,
                         4_000_000_000_001, 0, 99_999_999_999])


def _value(v: Any, quoted: bool) -> Any:
    return str(v) if quoted else v


@st.composite
def trade(draw: st.DrawFn) -> str:
    code, seq, t = draw(st.sampled_from(CODES)), draw(ints), draw(times)
    if draw(st.booleans()):
        return encode_trade(code, seq, t, float(draw(st.integers(0, 10**6))) / 100,
                            float(draw(st.integers(0, 500))), draw(st.integers(0, 3)),
                            draw(st.booleans()))
    q = draw(st.booleans())
    num = draw(numbers)
    price: Any = num if q else (float(num) if _plain(num) else num)
    return json.dumps({"cmd_id": 22998, "data": {
        "code": code, "seq": _value(seq, q), "tick_time": _value(t, q), "price": price,
        "volume": draw(numbers), "turnover": "1.5", "trade_direction": draw(ints)}},
        separators=(",", ":"))


def _plain(text: str) -> bool:
    try:
        return float(text) == float(text) and abs(float(text)) < 1e300
    except ValueError:
        return False


@st.composite
def depth(draw: st.DrawFn) -> str:
    level = st.tuples(st.integers(0, 10**6).map(lambda x: x / 100), st.integers(0, 900).map(float))
    return encode_depth(draw(st.sampled_from(CODES)), draw(ints), draw(times),
                        draw(st.lists(level, max_size=3)), draw(st.lists(level, max_size=3)),
                        draw(st.booleans()))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = draw(st.one_of(trade(), depth())).encode()
    how = draw(st.sampled_from(["cut", "flip", "space", "dupkey", "extra", "badutf8", "surrogate"]))
    i = draw(st.integers(0, len(frame) - 1))
    if how == "cut":
        return frame[:i]
    if how == "flip":
        return frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1:]
    if how == "space":
        return frame[:i] + b" " + frame[i:]
    if how == "dupkey":
        return frame.replace(b'"seq":', b'"seq":1,"seq":', 1)
    if how == "extra":
        return frame[:-2] + b',"z":1}}'
    if how == "badutf8":
        return frame.replace(b'"code":"', b'"code":"\xed\xa0\x80', 1)
    return frame.replace(b'"code":"', b'"code":"\\ud800', 1)


step = st.one_of(
    st.tuples(st.just("in"), st.one_of(trade(), depth(), mutated(), st.sampled_from(CONTROL))),
    st.tuples(st.just("out"), st.sampled_from([SUB_DEPTH, SUB_TRADES])),
    st.tuples(st.just("drain"), st.none()),
    st.tuples(st.just("reconnect"), st.none()),
)


def _run(root: Path, steps: list[tuple[str, Any]], batched: bool, step_ns: int = 1_000_000,
         reads: set[int] | None = None) -> tuple[Any, ...]:
    """Capture ``steps``; with ``reads``, the frames in between two of these step numbers
    arrive as one read (``Capture.batch_in``) instead of one by one (``frame_in``)."""
    ids = itertools.count()
    cap = Capture(root, "alltick", clock=StepClock(step_ns))  # type: ignore[arg-type]
    events: list[Any] = []

    def open_() -> None:
        cap.open_session("ws://x", ["AAPL.US"])
        if not batched:
            cap.norm.decoder.batchable = lambda rec: False
    recorder.capture.new_session_id = lambda: f"s{next(ids)}"  # type: ignore[assignment]
    open_()
    read: list[tuple[bytes, bool]] = []
    for i, (kind, arg) in enumerate(steps):
        if reads is not None and read and (kind != "in" or i in reads):
            events += cap.batch_in(read)
            read = []
        if kind == "in" and reads is not None:
            read.append((arg.encode() if isinstance(arg, str) else arg, True))
        elif kind == "in":
            events += cap.frame_in(arg, text=True)
        elif kind == "out":
            events += cap.frame_out(arg.encode())
        elif kind == "drain" and batched:
            events += cap.decode_pending()
        elif kind == "reconnect":
            events += cap.close_session(1006, "lost")
            open_()
    events += cap.batch_in(read) + cap.decode_pending()
    d = cap.norm.decoder
    state = (d.tracker.state(), d.depth_subs, d.trade_subs, d.pending)
    tables = {key: _exact(t.to_pylist()) for key, t in cap.take().tables()}
    counts = (cap.norm.rows, cap.norm.gaps, cap.norm.rejected, dict(cap.norm.rows_by_table))
    cap.close()
    journal = [astuple(r) for r in iter_journal(cap.dir)]
    return tables, events, state, counts, journal


def _exact(v: Any) -> Any:
    """Values with floats as their exact bits (so -0.0 and 0.0 differ)."""
    if isinstance(v, float):
        return v.hex()
    if isinstance(v, dict):
        return {k: _exact(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_exact(x) for x in v]
    return v


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=60))
def test_batched_capture_stores_what_the_frame_by_frame_decoder_stores(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        steps: list[tuple[str, Any]]) -> None:
    monkeypatch.setattr(alltick, "FAST_MIN", 1)      # the fast path even for short runs
    new_id = recorder.capture.new_session_id
    try:
        ref = _run(tmp_path_factory.mktemp("ref"), steps, batched=False)
        fast = _run(tmp_path_factory.mktemp("fast"), steps, batched=True)
    finally:
        recorder.capture.new_session_id = new_id
    assert fast[0] == ref[0]          # rows, table by table, in order
    assert fast[1] == ref[1]          # events handed out, in order
    assert fast[2] == ref[2]          # decoder state after
    assert fast[3] == ref[3]          # row, gap and rejected counts


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=60), reads=st.sets(st.integers(0, 60)))
def test_frames_read_together_are_stored_as_if_read_one_by_one(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        steps: list[tuple[str, Any]], reads: set[int]) -> None:
    """Capture.batch_in (a socket read of many frames) = frame_in of each, in order: the
    same journal records byte for byte, rows, events, state and counts (the clock steps
    1 ns a frame, which is what RecvClock.stamps gives frames read together)."""
    monkeypatch.setattr(alltick, "FAST_MIN", 1)
    new_id = recorder.capture.new_session_id
    try:
        one = _run(tmp_path_factory.mktemp("one"), steps, batched=True, step_ns=1)
        together = _run(tmp_path_factory.mktemp("read"), steps, batched=True, step_ns=1,
                        reads=reads)
    finally:
        recorder.capture.new_session_id = new_id
    assert together[4] == one[4]          # the journal, record by record
    assert together[:4] == one[:4]        # rows, events, decoder state, counts


def test_the_fast_path_takes_canonical_pushes_and_leaves_the_rest(tmp_path: Path) -> None:
    """Not a vacuous equivalence: canonical pushes are decoded in bulk."""
    from schemas.events import RawRecord
    from schemas.venues import alltick_fast
    good = [encode_trade("AAPL.US", 1, 1_767_225_600_000, 1.5, 2.0, 1, True),
            encode_depth("700.HK", 2, 1_767_225_600_000, [(1.0, 2.0)], [], False)]
    bad = ['{"cmd_id":22998, "data":{}}', encode_trade("AAPL.US", 1, 1_767_225_600_000, 1.5,
                                                        2.0, 1, True).replace('"1.5"', '"1e0"')]
    recs = [RawRecord(i, i, "in", "text", f.encode()) for i, f in enumerate(good + bad)]
    p = alltick_fast.parse(recs, "s")
    assert p.kinds == [alltick_fast.TRADE, alltick_fast.DEPTH, 0, 0]
    assert p.py(alltick_fast.TRADE, "price") == [1.5]
    assert p.py(alltick_fast.DEPTH, "bid_px") == [[1.0]] and p.py(alltick_fast.DEPTH, "ask_px") == [[]]
