"""End-of-day seal: sorted files, manifest, checks, journal trim, crash at every step."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from replay import digest, replay_sync
from schemas.events import Trade
from storage.catalog import connect, run_query
from storage.compact import (
    SealOptions,
    day_state,
    manifest_path,
    recover_seals,
    seal_day,
    unsealed_days,
)
from storage.journal import read_journal
from storage.layout import DAY_NS
from storage.sealio import write_sorted
from storage.writer import StoreWriter, to_arrow
from tests.helpers import read_table, record_across_midnight
from tickrec.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr

D1, D2 = "2024-03-10", "2024-03-11"
MIDNIGHT = int(datetime(2024, 3, 11, tzinfo=UTC).timestamp()) * 1_000_000_000
SMALL = SealOptions(row_group_rows=256, file_rows=1024)


def rows_by_date(root: Path, table: str) -> Counter[str]:
    from storage.layout import date_of
    return Counter(date_of(r["ts_recv"]) for r in read_table(root, table))


def snapshot(root: Path) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every row of every table, as a multiset (order and files do not matter)."""
    out = {}
    for table in ("raw", "trades", "book", "gaps", "sessions"):
        out[table] = Counter(tuple((k, repr(v)) for k, v in sorted(r.items()))
                             for r in read_table(root, table))
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real AllTick capture across a (past) UTC midnight, trades and book on both days."""
    import asyncio
    root = tmp_path_factory.mktemp("store")
    asyncio.run(record_across_midnight(root, ["AAPL.US", "700.HK"], MIDNIGHT, rows=150,
                                       flush_rows=300))
    return root


def test_seal_sorts_checks_writes_a_manifest_and_trims_the_journal(template: Path,
                                                                   tmp_path: Path) -> None:
    root = tmp_path / "s"
    shutil.copytree(template, root)
    before = snapshot(root)
    replayed = [digest(replay_sync(root, "alltick", kind=k)) for k in ("events", "raw")]
    counts = {t: rows_by_date(root, t) for t in ("raw", "trades", "book")}
    assert counts["raw"][D1] and counts["raw"][D2]
    [run] = list((root / "journal" / "alltick").glob("2*"))
    journaled, _ = read_journal(run)
    assert unsealed_days(root, "2100-01-01") == [D1, D2]

    r1 = seal_day(root, D1, options=SMALL)
    assert r1.ok and r1.sealed, r1.lines()
    assert r1.runs_trimmed == []            # the run also holds records of D2
    r2 = seal_day(root, D2, options=SMALL)
    assert r2.ok and r2.sealed and r2.runs_trimmed == [run.name], r2.lines()
    assert not run.exists() and (root / "journal" / "alltick" / "carry.json").exists()
    assert unsealed_days(root, "2100-01-01") == []
    assert snapshot(root) == before                           # nothing lost, nothing doubled
    # compaction never changes the replay order: the same stream, the same digest
    assert [digest(replay_sync(root, "alltick", kind=k)) for k in ("events", "raw")] == replayed
    assert sum(counts["raw"].values()) == len(journaled)

    for date in (D1, D2):
        m = __import__("json").loads(manifest_path(root, date).read_text())
        for table in ("raw", "trades", "book"):
            entry = m["tables"][table]["alltick"]
            assert entry["rows"] == counts[table][date]
            files = [root / f["path"] for f in entry["files"]]
            assert {p.name for p in files} == {p.name for p in (root / table / "venue=alltick" /
                                                                  f"date={date}").glob("*.parquet")}
            assert sum(pq.ParquetFile(p).metadata.num_rows for p in files) == entry["rows"]
            for f in entry["files"]:
                assert len(f["sha256"]) == 64 and f["rows"] <= SMALL.file_rows
            # sorted by the seal key, row groups of the chosen size
            rows = [row for p in files for row in pq.read_table(p).to_pylist()]
            key = (("ts_recv", "session", "frame") if table == "raw"
                   else ("symbol", "ts_recv", "session", "frame", "pos"))
            keys = [tuple(r[k] for k in key) for r in rows]
            assert keys == sorted(keys)
            md = pq.ParquetFile(files[0]).metadata
            assert all(md.row_group(i).num_rows == SMALL.row_group_rows
                       for i in range(md.num_row_groups - 1))
        assert m["gaps"]["alltick"]["rows"] == rows_by_date(root, "gaps")[date]

    # sealing again is a no-op; DuckDB reads the sealed store as before
    again = seal_day(root, D1, options=SMALL)
    assert again.ok and not again.sealed
    n = run_query(root, "SELECT count(*) AS n FROM raw").to_pylist()[0]["n"]
    assert n == sum(counts["raw"].values())


def test_late_files_are_reported_and_merged_by_a_reseal(template: Path, tmp_path: Path) -> None:
    root = tmp_path / "s"
    shutil.copytree(template, root)
    assert seal_day(root, D1, options=SMALL).ok
    sealed = snapshot(root)
    # a recorder publishes a row of D1 after the seal
    w = StoreWriter(root, "alltick", "late-run", tmp_path / "late")
    w.add_event(Trade(venue="alltick", symbol="AAPL.US", ts_recv=MIDNIGHT - 10, ts_event=None,
                      seq=None, session="late-session", frame=0, pos=0, price=1.0, size=1.0))
    w.publish(w.take())
    state = day_state(root, D1)
    assert not state.sealed and list(state.late) == [("trades", "alltick")]
    assert D1 in unsealed_days(root, "2100-01-01")
    code, out, _ = run("status", "--root", str(root))
    assert code == 0 and f"{D1}  sealed, 1 file(s) newer than the seal" in out
    report = seal_day(root, D1, options=SMALL)
    assert report.ok and [p.table for p in report.partitions if p.resealed] == ["trades"]
    assert day_state(root, D1).sealed
    after = snapshot(root)
    assert sum(after["trades"].values()) == sum(sealed["trades"].values()) + 1
    assert after["raw"] == sealed["raw"]


def test_a_listing_that_lacks_sealed_files_seals_nothing(
        template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An object store listing can lag behind the manifest (a seal just wrote it): the
    sealed files it names are missing from the listing while a late file is in it.
    Sealing the late file alone would write a manifest that drops the sealed files
    (their rows gone for readers, the files deleted as garbage); the seal refuses."""
    from storage import compact
    root = tmp_path / "s"
    shutil.copytree(template, root)
    assert seal_day(root, D1, options=SMALL).ok
    w = StoreWriter(root, "alltick", "late-run", tmp_path / "late")
    w.add_event(Trade(venue="alltick", symbol="AAPL.US", ts_recv=MIDNIGHT - 10, ts_event=None,
                      seq=None, session="late-session", frame=0, pos=0, price=1.0, size=1.0))
    w.publish(w.take())
    before, manifest = snapshot(root), manifest_path(root, D1).read_text()
    real = compact.list_store

    def lagging(store: Any, date: str | None = None) -> Any:
        return {k: [p for p in v if not (k[0] == "trades" and "/sealed-" in str(p))]
                for k, v in real(store, date).items()}

    monkeypatch.setattr(compact, "list_store", lagging)
    report = seal_day(root, D1, options=SMALL)
    assert not report.ok and not report.sealed
    assert "the store does not list" in report.problems[0] and "trades" in report.problems[0]
    assert manifest_path(root, D1).read_text() == manifest          # nothing switched
    monkeypatch.undo()
    assert snapshot(root) == before
    report = seal_day(root, D1, options=SMALL)                      # a true listing: merged
    assert report.ok and [p.table for p in report.partitions if p.resealed] == ["trades"]
    assert snapshot(root) == before and day_state(root, D1).sealed


def test_a_check_failure_switches_nothing(template: Path, tmp_path: Path) -> None:
    root = tmp_path / "s"
    shutil.copytree(template, root)
    # lose one raw file of D1: the journal says there were more records that day
    victim = min((root / "raw" / "venue=alltick" / f"date={D1}").glob("*.parquet"))
    victim.unlink()
    files_before = sorted(root.rglob("*.parquet"))
    report = seal_day(root, D1, options=SMALL)
    assert not report.ok and "records that day, raw has" in report.problems[0]
    code, out, _ = run("compact", "--root", str(root), "--date", D1)      # the CLI: exit 1
    assert code == 1 and "PROBLEM:" in out and "verification FAILED" in out
    assert sorted(root.rglob("*.parquet")) == files_before       # nothing switched
    assert not manifest_path(root, D1).exists()
    assert list((root / "journal" / "alltick").glob("2*"))        # journal kept
    assert not list(root.rglob("*.tmp"))


class Crash(BaseException):
    """A kill -9: raised by the k-th os.replace/os.unlink and by every call after it."""


def _crashing(monkeypatch: pytest.MonkeyPatch, k: int) -> list[int]:
    calls = [0]
    real_replace, real_unlink = os.replace, os.unlink

    def wrap(real: Any) -> Any:
        def f(*a: Any, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] > k:
                raise Crash(f"crash at call {calls[0]}")
            return real(*a, **kw)
        return f
    monkeypatch.setattr(os, "replace", wrap(real_replace))
    monkeypatch.setattr(os, "unlink", wrap(real_unlink))
    return calls


def _partition_files(root: Path) -> dict[Path, set[str]]:
    return {d: {p.name for p in d.glob("*.parquet")}
            for d in root.glob("*/venue=*/date=*") if d.is_dir()}


@pytest.mark.timeout(600)   # CPU: seals and queries at every step, 70-90 s on a loaded box
def test_a_crash_at_every_step_of_two_seals_recovers_to_old_or_new(
        template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "dry"
    shutil.copytree(template, work)
    want = snapshot(work)
    old_files = _partition_files(work)
    calls = _crashing(monkeypatch, 10**9)
    seal_day(work, D1, options=SMALL)
    seal_day(work, D2, options=SMALL)
    total = calls[0]
    new_files = _partition_files(work)
    assert total > 10
    monkeypatch.undo()
    for k in range(total):
        root = tmp_path / f"k{k}"
        shutil.copytree(template, root)
        _crashing(monkeypatch, k)
        with pytest.raises(Crash):
            seal_day(root, D1, options=SMALL)
            seal_day(root, D2, options=SMALL)
        monkeypatch.undo()
        recover_seals(root)
        for d, names in _partition_files(root).items():
            rel = d.relative_to(root)
            old, new = old_files[work / rel], new_files[work / rel]
            assert names == old or (names == {n for n in names if n.startswith("sealed-")}
                                    and len(names) == len(new)), (k, rel, names)
        for date in (D1, D2):
            assert seal_day(root, date, options=SMALL).ok, k
        assert snapshot(root) == want, k
        assert not list((root / "journal" / "alltick").glob("2*")), k
        assert not list((root / "journal" / "alltick").glob(".trash-*")), k
        assert not list(root.rglob("*.tmp")) and not list(root.glob("manifests/*/intent.json"))
        shutil.rmtree(root)


def _synthetic_day(root: Path, symbols: int, per_symbol: int) -> None:
    """``symbols`` symbols trading through one UTC day, published as many small files."""
    day0 = MIDNIGHT - DAY_NS
    w = StoreWriter(root, "alltick", "synthetic", root / "journal-x")
    step = DAY_NS // per_symbol
    frame = 0
    for i in range(per_symbol):
        for s in range(symbols):
            ts = day0 + i * step + s
            w.add_event(Trade(venue="alltick", symbol=f"S{s:03d}", ts_recv=ts, ts_event=ts,
                              seq=i, session="sess", frame=frame, pos=0, price=100.0 + i % 7,
                              size=1.0))
            frame += 1
        if i % 500 == 499:
            w.publish(w.take())
    w.publish(w.take())


def test_a_sealed_day_answers_one_symbol_one_hour_from_few_row_groups(tmp_path: Path) -> None:
    _synthetic_day(tmp_path, symbols=40, per_symbol=2400)      # 96,000 trades, one day
    assert len(list(tmp_path.glob(f"trades/venue=alltick/date={D1}/*.parquet"))) > 4
    report = seal_day(tmp_path, D1, options=SealOptions(row_group_rows=2048, file_rows=32768))
    assert report.ok
    files = sorted(tmp_path.glob(f"trades/venue=alltick/date={D1}/*.parquet"))
    hour0 = MIDNIGHT - DAY_NS + 10 * 3600 * 10**9
    hour1 = hour0 + 3600 * 10**9
    groups = symbol_hits = both_hits = 0
    for path in files:
        md = pq.ParquetFile(path).metadata
        isym = md.schema.to_arrow_schema().get_field_index("symbol")
        its = md.schema.to_arrow_schema().get_field_index("ts_recv")
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            sym, ts = rg.column(isym).statistics, rg.column(its).statistics
            assert sym.has_min_max and ts.has_min_max
            groups += 1
            if sym.min <= "S017" <= sym.max:
                symbol_hits += 1
                lo = int(ts.min.timestamp() * 1e9) if hasattr(ts.min, "timestamp") else ts.min
                hi = int(ts.max.timestamp() * 1e9) if hasattr(ts.max, "timestamp") else ts.max
                if lo < hour1 and hi >= hour0:
                    both_hits += 1
    assert groups >= 40
    assert symbol_hits <= 3 and symbol_hits / groups < 0.1        # 2,400 rows: 2-3 groups
    assert 1 <= both_hits <= symbol_hits
    # and DuckDB answers the query (its scan skips groups by the same statistics)
    t0, t1 = (datetime.fromtimestamp(t / 1e9, UTC).isoformat() for t in (hour0, hour1))
    sql = (f"SELECT count(*) AS n FROM trades WHERE symbol = 'S017' "
           f"AND ts_recv >= '{t0}'::TIMESTAMPTZ_NS AND ts_recv < '{t1}'::TIMESTAMPTZ_NS")
    assert run_query(tmp_path, sql).to_pylist()[0]["n"] == 100
    con = connect(tmp_path)
    plan = con.execute("EXPLAIN ANALYZE " + sql).fetchall()[0][1]
    con.close()
    scanned = re.search(r"Row Groups Scanned: (\d+) / (\d+)", plan)
    assert scanned is not None, plan
    assert int(scanned[2]) == groups and int(scanned[1]) <= both_hits, plan


def test_sealed_files_dictionary_encode_floats_and_keep_their_values(tmp_path: Path) -> None:
    _synthetic_day(tmp_path, symbols=4, per_symbol=600)
    before = Counter((r["symbol"], r["ts_recv"], r["price"], r["size"], r["turnover"])
                     for r in read_table(tmp_path, "trades"))
    assert seal_day(tmp_path, D1, options=SealOptions(row_group_rows=1024, file_rows=4096)).ok
    files = sorted(tmp_path.glob(f"trades/venue=alltick/date={D1}/sealed-*.parquet"))
    for path in files:
        md = pq.ParquetFile(path).metadata
        for g in range(md.num_row_groups):
            chunks = {md.row_group(g).column(i).path_in_schema: md.row_group(g).column(i)
                      for i in range(md.num_columns)}
            for name in ("price", "size"):
                assert "RLE_DICTIONARY" in chunks[name].encodings, (name, chunks[name].encodings)
                assert chunks[name].dictionary_page_offset is not None
            assert "DELTA_BINARY_PACKED" in chunks["ts_recv"].encodings
    assert Counter((r["symbol"], r["ts_recv"], r["price"], r["size"], r["turnover"])
                   for r in read_table(tmp_path, "trades")) == before


def test_sealed_book_files_dictionary_encode_the_level_lists(tmp_path: Path) -> None:
    def levels(i: int) -> list[list[float]]:
        return [[100.0 + i % 3, 99.5], [200.0, 300.0 + i % 2]]
    rows = [("S", i, None, i, "s", i, 0, 2, *levels(i), *levels(i + 1), None, None)
            for i in range(3000)]
    book = to_arrow("book", rows)
    [out] = write_sorted(book.to_batches(), "book", lambda k: tmp_path / f"b{k}.parquet")
    md = pq.ParquetFile(out.path).metadata
    encodings = {md.row_group(0).column(i).path_in_schema: md.row_group(0).column(i).encodings
                 for i in range(md.num_columns)}
    for side in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        assert "RLE_DICTIONARY" in encodings[f"{side}.list.element"], encodings
    assert pq.read_table(out.path).equals(book)
