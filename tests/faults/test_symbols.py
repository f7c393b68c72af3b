"""Symbols are data, never path components: names that look like paths, quotes or another
script are recorded, stored, queried and replayed as they are, and every file lands where
the layout says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import replay
from tests.faults.support import running, scaled, wait_for
from tests.helpers import read_table
from tickrec.cli import main

pytestmark = pytest.mark.timeout(scaled(60, 1800))
SYMBOLS = ["../../x", "BTC/USDT", "سکه-طلا-۱۴۰۴", "a'b\"c", "..", "C:\\tmp\\y", "venue=z"]
LAYOUT = re.compile(
    r"(?:(raw|trades|book|tickers|bars|gaps|sessions)/venue=alltick/date=\d{4}-\d{2}-\d{2}/"
    r"[0-9A-Za-z.-]+-\d{6}\.parquet"
    r"|journal/alltick/(?:carry\.json|[0-9A-Za-z.-]+/(?:\d{6}\.tjr|checkpoint\.json|lock|done)))")


async def test_path_like_and_foreign_symbols_are_stored_and_queried_as_data(tmp_path: Path) -> None:
    root = tmp_path / "store"
    async with running(root, SYMBOLS, rate=400, steps=600) as run:
        await wait_for(run.sim.done.is_set, 20)
    # every file is where the layout puts it; nothing was created outside the root
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert files and all(LAYOUT.fullmatch(f) for f in files), [f for f in files
                                                              if not LAYOUT.fullmatch(f)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    stored = {r["symbol"] for r in read_table(root, "trades") + read_table(root, "book")}
    assert stored == set(SYMBOLS)
    delivered = {s: run.sim.stats[s].delivered for s in SYMBOLS}

    for sym in SYMBOLS:         # back through `tickrec query`, quoted as SQL text
        sql = ("select count(*) as n from (select symbol from trades union all "
               f"select symbol from book) where symbol = '{sym.replace(chr(39), chr(39) * 2)}'")
        result = CliRunner().invoke(main, ["query", sql, "--root", str(root), "--format", "json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"n": delivered[sym]}, sym

    # and through replay, one symbol at a time
    for sym in ("../../x", "سکه-طلا-۱۴۰۴", "a'b\"c"):
        async with replay.open(root, "alltick", symbols=[sym], speed="max") as feed:
            got = [ev async for ev in feed]
        assert {ev.symbol for ev in got} == {sym}
        assert sum(ev.TABLE in ("trades", "book") for ev in got) == delivered[sym]
    result = CliRunner().invoke(main, ["gaps", "--root", str(root)])
    assert result.exit_code == 0
