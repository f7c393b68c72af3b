"""The fast canonical JSON lines (schemas.jsonline) are ``json.dumps``'s, character
for character, for any record: the stream digest depends on it."""

from __future__ import annotations

import json
from dataclasses import fields
from enum import IntEnum
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from replay.digest import digest
from replay.rows import RawRow
from schemas.events import EVENT_CLASSES
from schemas.jsonline import canonical, line_maker, value_json


class Level(IntEnum):
    ONE = 1


class Price(float):
    pass


class Name(str):
    pass


def reference(record: Any) -> str:
    return json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=True)


TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)   # surrogates too
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
ODD = st.one_of(st.booleans(), st.just(Level.ONE), FLOATS.map(Price), TEXT.map(Name),
                st.integers(-2**70, 2**70))
SCALAR = st.one_of(st.none(), st.integers(-2**70, 2**70), FLOATS, TEXT, ODD)
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(TEXT, inner, max_size=3)), max_leaves=12)
LEVELS = st.one_of(st.lists(FLOATS, max_size=6), st.lists(st.integers(-10, 10), max_size=6),
                   st.lists(SCALAR, max_size=6), st.none())


def typed(annotation: str) -> st.SearchStrategy[Any]:
    """Mostly the field's own type, sometimes anything."""
    base = annotation.replace(" | None", "")
    usual = {"int": st.integers(-2**63, 2**63), "float": FLOATS, "str": TEXT}.get(
        base, LEVELS if base.startswith("list") else SCALAR)
    return st.one_of(usual, usual, st.none(), VALUE)


@st.composite
def records(draw: Any) -> Any:
    cls = draw(st.sampled_from(sorted(EVENT_CLASSES.values(), key=lambda c: c.TABLE)))
    return cls(**{f.name: draw(typed(str(f.type))) for f in fields(cls)})


@given(record=records())
def test_a_record_line_is_json_dumps_of_its_dict(record: Any) -> None:
    assert record.to_json() == reference(record)


@given(payload=st.binary(max_size=40) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
       kind=st.sampled_from(["text", "binary", "open", "close", "error"]),
       note=st.none() | TEXT, frame=st.integers(-2**63, 2**63), session=TEXT)
def test_a_raw_row_line_is_json_dumps_of_its_dict(payload: bytes, kind: str, note: str | None,
                                                  frame: int, session: str) -> None:
    row = RawRow(venue="alltick", ts_recv=frame * 7, session=session, frame=frame,
                 direction="in", kind=kind, payload=payload, note=note)
    line = row.to_json()
    assert line == reference(row)
    back = json.loads(line)
    assert back["encoding"] in ("utf-8", "base64")


@given(value=VALUE)
def test_a_value_is_written_as_json_dumps_writes_it(value: Any) -> None:
    assert value_json(value) == canonical(value)


def test_a_line_maker_keeps_the_sorted_key_order_and_constants() -> None:
    class Point:
        b, a_z, a = 1.5, None, "x"
    line = line_maker({"b": "float", "a_z": "int | None", "a": "str"}, {"type": "p"})
    assert line(Point()) == '{"a":"x","a_z":null,"b":1.5,"type":"p"}'
    assert line(Point()) == canonical({"b": 1.5, "a_z": None, "a": "x", "type": "p"})


def test_the_digest_of_known_records_is_unchanged() -> None:
    """A pinned digest: the lines (and so every digest users kept) did not move."""
    trade = EVENT_CLASSES["trades"](
        venue="alltick", symbol="BTCUSDT", ts_recv=1_767_225_600_000_000_001, ts_event=None,
        seq=7, session="s-1", frame=3, pos=0, price=float("nan"), size=-0.0,
        side="buy", extras='{"é":1}')
    book = EVENT_CLASSES["book"](
        venue="alltick", symbol="ETH", ts_recv=2, ts_event=1, seq=None, session="s",
        frame=1, pos=1, depth=2, bid_px=[1.5, 1e300], bid_sz=[float("inf"), 2.0],
        ask_px=[], ask_sz=[0.1, 0.2], bid_n=[1, 2])
    assert trade.to_json() == (
        '{"extras":"{\\"é\\":1}","frame":3,"pos":0,"price":NaN,"seq":7,"session":"s-1",'
        '"side":"buy","size":-0.0,"symbol":"BTCUSDT","trade_type":null,"ts_event":null,'
        '"ts_recv":1767225600000000001,"turnover":null,"type":"trades","venue":"alltick"}')
    assert digest([trade, book]) == digest_reference([trade, book])


def digest_reference(events: list[Any]) -> str:
    import hashlib
    return hashlib.sha256("\n".join(reference(e) for e in events).encode("utf-8")).hexdigest()
