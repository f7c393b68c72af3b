"""`tickrec parse finazon|hedgetech FILE`: the vendor documents' frames in, JSON lines out."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.venues.test_finazon import (
    DOC_CANDLE,
    DOC_HEARTBEAT_OK,
    DOC_RESET_OK,
    DOC_SUBSCRIBE_OK,
    DOC_UNSUBSCRIBE_OK,
)
from tests.venues.test_hedgetech import DOC_IME_NAME, NOON_TEHRAN, TSE_AGGREGATE
from tickrec.cli import main


def parse(tmp_path: Path, venue: str, frames: list[str]) -> list[dict[str, object]]:
    path = tmp_path / f"{venue}.txt"
    path.write_text("\n".join(frames) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["parse", venue, str(path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    for line in lines:
        line.pop("ts_recv", None)           # the local receive clock
    return lines


def test_parse_finazon_doc_frames(tmp_path: Path) -> None:
    error = '{"status":"error","message":"Unknown tickers: NOPE/USDT","data":["NOPE/USDT"]}'
    out = parse(tmp_path, "finazon", [DOC_SUBSCRIBE_OK, DOC_CANDLE, DOC_UNSUBSCRIBE_OK,
                                      DOC_HEARTBEAT_OK, DOC_RESET_OK, error, "not json"])
    assert out == [
        {"type": "status", "kind": "subscribed",
         "detail": "Finazon: subscribed BTC/USDT, AI/USDT (request 106)"},
        {"type": "bars", "venue": "finazon", "symbol": "BTC/USDT", "ts_event": 1699540020 * 10**9,
         "seq": None, "session": "parse", "frame": 1, "pos": 0, "interval": "1m", "open": 220.06,
         "high": 220.13, "low": 219.92, "close": 219.96, "volume": 4572.0},
        {"type": "status", "kind": "unsubscribed",
         "detail": "Finazon: unsubscribed BTC/USDT (request 107)"},
        {"type": "status", "kind": "error", "detail": "Finazon: Unknown tickers: NOPE/USDT"},
        {"type": "gaps", "venue": "finazon", "symbol": "", "ts_event": None, "seq": None,
         "session": "parse", "frame": 6, "pos": 0, "stream": "", "kind": "rejected",
         "ts_start": out[-1]["ts_start"], "ts_end": out[-1]["ts_end"], "seq_from": None,
         "seq_to": None, "missing": None, "detail": out[-1]["detail"]},
    ]
    assert str(out[-1]["detail"]).startswith("not JSON")


def test_parse_hedgetech_keeps_persian_names(tmp_path: Path) -> None:
    out = parse(tmp_path, "hedgetech", [DOC_IME_NAME, TSE_AGGREGATE])
    assert [(o["type"], o["symbol"]) for o in out] == [
        ("book", "IMEFutures_Sample"), ("tickers", "IMEFutures_Sample"), ("tickers", "فملی")]
    assert out[0]["ts_event"] == NOON_TEHRAN and out[0]["depth"] == 0
    assert out[1]["upper_limit"] == 9999999999.0 and out[2]["last"] == 12100.0
    raw = CliRunner().invoke(main, ["parse", "hedgetech", str(tmp_path / "hedgetech.txt")]).output
    assert "فملی" in raw                     # printed as UTF-8, not \u escapes
