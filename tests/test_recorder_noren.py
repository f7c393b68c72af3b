"""Noren end to end: simulator → Recorder → store, with reconnects, failed logins and
the re-derivation of every stored row from the stored raw frames."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from schemas.errors import PermanentFeedError
from schemas.venues.noren import jainam_token, rederive
from tests.helpers import read_table, record_sim

SYMBOLS = ["NSE|22", "NFO|35003"]
STREAMS = [f"{s}:{k}" for s in SYMBOLS for k in ("touchline", "depth")]
TOKEN = "NOREN-TOKEN-5e4d3c2b1a"
DATA = {"tk": "touchline", "tf": "touchline", "dk": "depth", "df": "depth"}


def _grep(root: Path, *secrets: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in body, (secret, path)


def _stored(root: Path, table: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "date"} for r in read_table(root, table)]


def _derived(events: list[Any], table: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.to_dict().items() if k != "type"}
            for e in events if e.TABLE == table]


def _assert_same_rows(got: list[dict[str, Any]], stored: list[dict[str, Any]],
                      table: str) -> None:
    """Equal lists of rows; on a difference, say where and in which columns."""
    for i, (g, r) in enumerate(zip(got, stored)):
        if g != r:
            diff = {k: (g.get(k), r.get(k)) for k in g.keys() | r.keys() if g.get(k) != r.get(k)}
            raise AssertionError(f"{table} row {i} of {len(got)}/{len(stored)} differs: {diff}")
    assert len(got) == len(stored), (table, len(got), len(stored),
                                     (got or stored)[min(len(got), len(stored)):][:2])


def _data_frames(raw: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[str, str]]:
    """(session, frame) → (symbol, stream) of every incoming tk/tf/dk/df frame."""
    out = {}
    for r in raw:
        if r["direction"] == "in":
            try:
                obj = json.loads(r["payload"])
            except ValueError:
                continue
            if obj.get("t") in DATA:
                out[(r["session"], r["frame"])] = (f"{obj['e']}|{obj['tk']}", DATA[obj["t"]])
    return out


async def test_reconnect_is_a_stale_gap_until_the_snapshot_and_rows_rederive_exactly(
        tmp_path: Path) -> None:
    sim, rec = await record_sim(tmp_path, SYMBOLS, venue="noren", rate=400, steps=1100,
                                faults="disconnect@400,dropupdate@600,malformed@700,dup@800",
                                token=TOKEN, credentials={"uid": "U1", "token": TOKEN})
    raw = read_table(tmp_path, "raw")
    tickers, books = read_table(tmp_path, "tickers"), read_table(tmp_path, "book")
    gaps = read_table(tmp_path, "gaps")
    sessions = read_table(tmp_path, "sessions")
    assert len(sessions) == 2 == rec.connections
    first, second = (s["session"] for s in sessions)

    # every snapshot and update became exactly one full tickers row (none was held: the
    # server sends the snapshot first); each row points back at its own frame
    frames = _data_frames(raw)
    assert Counter((r["session"], r["frame"]) for r in tickers) == Counter(frames.keys())
    assert all(frames[(r["session"], r["frame"])][0] == r["symbol"] for r in tickers + books)
    depth_frames = {k for k, (_, stream) in frames.items() if stream == "depth"}
    depth_books = [b for b in books if (b["session"], b["frame"]) in depth_frames]
    assert Counter((b["session"], b["frame"]) for b in depth_books) == Counter(depth_frames)
    assert all(len(b["bid_n"]) == len(b["bid_px"]) and len(b["ask_n"]) == len(b["ask_px"])
               for b in depth_books)
    assert max(b["depth"] for b in depth_books) == 5

    # the reconnect: per stream one disconnect gap and one stale gap, which runs from the
    # close of the first session to the fresh snapshot of that stream in the second
    close_ts = next(r["ts_recv"] for r in raw if r["session"] == first and r["kind"] == "close")
    kinds = Counter(g["kind"] for g in gaps)
    # dropupdate is unseen; the malformed frame is one rejected gap (if a client was there)
    assert kinds == Counter({"disconnect": 4, "stale": 4, "rejected": sim.malformed_sent})
    assert sum(len(st.skipped) for st in sim.stats.values()) == 1
    for g in (g for g in gaps if g["kind"] == "stale"):
        assert g["session"] == second and g["ts_start"] == close_ts
        snap = next(r for r in raw if (r["session"], r["frame"]) == (g["session"], g["frame"]))
        assert json.loads(snap["payload"])["t"] in ("tk", "dk") and g["ts_end"] == snap["ts_recv"]
        symbol, stream = frames[(second, g["frame"])]
        assert g["stream"] == f"{symbol}:{stream}"
        # nothing of that stream was emitted in the second session before its snapshot
        assert not [k for k, v in frames.items() if k[0] == second and k[1] < g["frame"]
                    and v == (symbol, stream)]
    assert sorted(g["stream"] for g in gaps if g["kind"] == "stale") == sorted(STREAMS)

    # the journal copy of the login frame is redacted; the token is nowhere on disk
    login = next(r for r in raw if r["direction"] == "out")
    assert json.loads(login["payload"])["susertoken"] == "***"
    _grep(tmp_path, TOKEN)

    # parse over the stored raw frames reproduces the stored rows exactly
    again = rederive(raw)
    for table in ("tickers", "book", "gaps"):
        _assert_same_rows(_derived(again, table), _stored(tmp_path, table), table)

    # and so does `tickrec parse noren --records`
    lines = tmp_path / "raw.jsonl"
    lines.write_text("".join(json.dumps({
        "session": r["session"], "ts_recv": r["ts_recv"], "frame": r["frame"],
        "direction": r["direction"], "kind": r["kind"], "note": r["note"],
        "payload_b64": base64.b64encode(r["payload"]).decode()}) + "\n" for r in raw))
    from tickrec.cli import main
    result = CliRunner().invoke(main, ["parse", "noren", "--records", str(lines)])
    assert result.exit_code == 0, result.output
    parsed = [json.loads(line) for line in result.output.splitlines()]
    for table in ("tickers", "book", "gaps"):
        got = [{k: v for k, v in p.items() if k != "type"} for p in parsed if p["type"] == table]
        _assert_same_rows(got, _stored(tmp_path, table), table)


@pytest.mark.parametrize("on_fail, match", [("notok", "login failed"), ("close", "1008")])
async def test_failed_login_stops_the_feed_with_one_session(tmp_path: Path, on_fail: str,
                                                            match: str) -> None:
    with pytest.raises(PermanentFeedError, match=match):
        await record_sim(tmp_path, SYMBOLS, venue="noren", steps=400, token="right",
                         credentials={"uid": "U1", "token": "wrong-tok-123"},
                         adapter_options={"on_fail": on_fail})
    assert len(read_table(tmp_path, "sessions")) == 1
    assert read_table(tmp_path, "tickers") == []
    _grep(tmp_path, "wrong-tok-123")


async def test_jainam_login_with_cf_ack_records_and_keeps_both_secrets_out(tmp_path: Path) -> None:
    await record_sim(tmp_path, SYMBOLS, venue="noren", rate=400, steps=300, token=TOKEN,
                     credentials={"uid": "AB123", "token": TOKEN},
                     options={"jainam": True}, adapter_options={"jainam": True, "ack": "cf"})
    raw = read_table(tmp_path, "raw")
    login = json.loads(next(r for r in raw if r["direction"] == "out")["payload"])
    assert (login["uid"], login["actid"], login["susertoken"]) == ("AB123_API", "AB123_API", "***")
    assert any(b'"t":"cf"' in r["payload"] for r in raw)
    assert {r["symbol"] for r in read_table(tmp_path, "tickers")} == set(SYMBOLS)
    _grep(tmp_path, TOKEN, jainam_token(TOKEN))


def test_parse_replays_bare_frames_through_the_same_merge() -> None:
    from tickrec.cli import main
    examples = Path(__file__).parent / "fixtures" / "noren" / "vendor_examples.jsonl"
    result = CliRunner().invoke(main, ["parse", "noren", str(examples)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert Counter(r["type"] for r in rows) == {"tickers": 8, "book": 8}
    last = [r for r in rows if r["type"] == "tickers" and r["symbol"] == "NFO|54957"][-1]
    assert last["last"] == 76.55 and json.loads(last["extras"])["stream"] == "depth"
