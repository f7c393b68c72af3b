"""Every command, given bad input: one clear line on stderr, a non-zero exit, no traceback.
And ``tickrec query`` can neither change the store nor reach a file outside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.faults.support import scaled, tiny_store
from tickrec.cli import main

pytestmark = pytest.mark.timeout(scaled(60, 1800))


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("cli")
    (base / "a-file").write_text("not a store")
    (base / "empty").mkdir()
    store = tiny_store(base / "store")
    return {"missing": str(base / "missing"), "file": str(base / "a-file"),
            "empty": str(base / "empty"), "store": str(store), "base": str(base)}


# (arguments with {placeholders}, text the one line must hold)
BAD = [
    # unknown venue, in every command that takes one
    (["sim", "nasdaq"], "nasdaq"),
    (["record", "nasdaq", "--url", "ws://127.0.0.1:1/", "--symbols", "A"], "nasdaq"),
    (["parse", "nasdaq"], "nasdaq"),
    (["gaps", "--root", "{store}", "--venue", "nasdaq"], "nasdaq"),
    (["replay", "--venue", "nasdaq", "--root", "{store}"], "nasdaq"),
    # bad dates, times and numbers
    (["gaps", "--root", "{store}", "--date", "2024-13-45"], "bad date"),
    (["gaps", "--root", "{store}", "--date", "x'; drop table gaps; --"], "bad date"),
    (["replay", "--venue", "alltick", "--root", "{store}", "--start", "yesterday-ish"], "yesterday-ish"),
    (["replay", "--venue", "alltick", "--root", "{store}", "--start", "2024-02-30"], "2024-02-30"),
    (["replay", "--venue", "alltick", "--root", "{store}", "--speed", "0"], "speed"),
    (["replay", "--venue", "alltick", "--root", "{store}", "--speed", "fast"], "speed"),
    (["replay", "--venue", "alltick", "--root", "{store}", "--speed", "nan"], "speed"),
    (["replay", "--venue", "alltick", "--root", "{store}", "--clock", "sundial"], "sundial"),
    (["sim", "alltick", "--faults", "explode@3"], "unknown fault"),
    (["sim", "alltick", "--faults", "skip@soon"], "bad fault"),
    (["sim", "alltick", "--port", "99999"], "99999"),
    (["record", "alltick", "--url", "ws://127.0.0.1:1/", "--symbols", " , "], "--symbols"),
    (["record", "alltick", "--url", "http://127.0.0.1:1/", "--symbols", "A"], "ws://"),
    (["record", "alltick", "--url", "not a url", "--symbols", "A"], "ws://"),
    (["record", "futu", "--url", "ws://127.0.0.1:1/", "--symbols", "HK.00700"], "tcp://"),
    (["record", "alltick", "--url", "ws://127.0.0.1:1/", "--symbols", "A", "--duration", "-1"],
     "--duration"),
    (["record", "alltick", "--url", "ws://127.0.0.1:1/", "--symbols", "A",
      "--flush-seconds", "0"], "--flush-seconds"),
    # a root that does not exist, or is not a store
    (["query", "select 1", "--root", "{missing}"], "does not exist"),
    (["query", "select 1", "--root", "{file}"], "not a directory"),
    (["gaps", "--root", "{missing}"], "does not exist"),
    (["gaps", "--root", "{file}"], "not a directory"),
    (["verify", "--root", "{missing}"], "does not exist"),
    (["verify", "--root", "{file}"], "not a directory"),
    (["verify", "--root", "{empty}"], "not a tickrec store"),
    (["replay", "--venue", "alltick", "--root", "{missing}"], "does not exist"),
    (["replay", "--venue", "alltick", "--root", "{file}"], "not a directory"),
    (["replay", "--venue", "alltick", "--root", "{empty}"], "not a tickrec store"),
    (["record", "alltick", "--url", "ws://127.0.0.1:1/", "--symbols", "A", "--root", "{file}"],
     "not a directory"),
    (["demo", "--root", "{file}"], "a-file"),
    (["demo", "--root", "{store}"], "not empty"),
    (["parse", "alltick", "{missing}"], "No such file"),
    # SQL that fails
    (["query", "selec 1", "--root", "{store}"], "SQL error"),
    (["query", "select nope from trades", "--root", "{store}"], "SQL error"),
    (["query", "select * from no_such_table", "--root", "{store}"], "SQL error"),
    (["query", "", "--root", "{store}"], "no SQL statement"),
    (["query", "select cast('x' as integer)", "--root", "{store}"], "SQL error"),
    (["nosuchcommand"], "No such command"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=[" ".join(a[:2]) + f" #{i}"
                                                    for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(places: dict[str, str], args: list[str],
                                                         needle: str) -> None:
    code, out, err = run(*(a.format(**places) for a in args))
    assert code != 0, out
    assert "Traceback" not in out + err and "internal error" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tickrec: "), err
    assert needle in lines[0], lines[0]


def test_a_real_process_prints_one_line_and_no_traceback(places: dict[str, str]) -> None:
    for args in (["record", "alltick", "--url", "http://x/", "--symbols", "A"],
                 ["query", "select * from nowhere", "--root", places["store"]]):
        proc = subprocess.run([sys.executable, "-m", "tickrec", *args], capture_output=True,
                              text=True, timeout=30, cwd=Path(__file__).parents[2], check=False)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert proc.stdout == ""


# --- tickrec query is read-only ------------------------------------------------------------

WRITES = [
    "copy (select 1) to 'x.csv'",
    "copy trades to 'trades.parquet' (format parquet)",
    "delete from trades",
    "insert into trades select * from trades",
    "update trades set price = 0",
    "create table t as select 1",
    "create view v as select 1",
    "drop view trades",
    "attach 'x.db' as x",
    "detach memory",
    "pragma enable_profiling",
    "install httpfs",
    "load httpfs",
    "set enable_external_access = true",
    "call pragma_version()",
    "export database 'dump'",
    "select 1; copy (select 1) to 'x.csv'",
    "select 1; attach 'x.db'",
    "select 1;\ndelete from trades",
    "with t as (select 1) select * from t; drop view gaps",
]


@pytest.mark.parametrize("sql", WRITES)
def test_query_cannot_modify_the_store(places: dict[str, str], sql: str,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Path(places["store"])
    monkeypatch.chdir(tmp_path)                     # where a relative COPY would write
    before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    code, _out, err = run("query", sql, "--root", str(store))
    assert code == 2 and "read-only" in err and len(err.strip().splitlines()) == 1, err
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sql", [
    "select * from read_csv('/etc/passwd')",
    "select * from read_text('/etc/hostname')",
    "select * from read_parquet('{base}/../**/*.parquet')",
    "select count(*) from read_csv('{store}/../a-file')",
    "select * from glob('/etc/*')",
])
def test_query_reaches_no_file_outside_the_store(places: dict[str, str], sql: str) -> None:
    code, out, err = run("query", sql.format(**places), "--root", places["store"])
    assert code == 2 and "SQL error" in err and "Permission" in err, (out, err)


def test_query_reads_the_store_through_a_relative_or_linked_root(
        places: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "link").symlink_to(places["store"])
    monkeypatch.chdir(tmp_path)
    for root in ("link", os.path.relpath(places["store"], tmp_path)):
        code, out, err = run("query", "select count(*) as n from trades", "--root", root,
                             "--format", "csv")
        assert code == 0 and out.split() == ["n", "40"], err
