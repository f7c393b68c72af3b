"""s3:// roots end to end (moto on loopback): record, query, replay, recovery, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from recorder.capture import Capture, recover
from replay.serve import ReplayServer
from storage.catalog import run_query
from storage.fs import StoreRoot
from storage.journal import read_journal
from tests.helpers import TRACING_VARS, child_env, read_table, record_sim
from tests.serve_util import FAST, data_frames, fast_alltick, record_served
from tickrec.cli import main

TABLES = ("raw", "trades", "book", "tickers", "gaps", "sessions")


def download(store: StoreRoot, dest: Path) -> int:
    """Copy every published object of the store to a local root with the same layout."""
    n = 0
    for table in TABLES:
        for path in store.parquet_files(table):
            rel = path[len(store.base) + 1:]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            with store.fs.open_input_stream(path) as src:
                (dest / rel).write_bytes(src.read())
            n += 1
    return n


def cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def digest(root: str) -> str:
    return cli("replay", "--venue", "alltick", "--root", root, "--speed", "max",
               "--clock", "virtual", "--digest").strip()


def test_record_query_replay_round_trip(s3_env: dict[str, str], tmp_path: Path) -> None:
    root = s3_env["root"]
    asyncio.run(record_sim(root, ["AAPL.US", "700.HK"], steps=600, rate=600))  # type: ignore[arg-type]
    store = StoreRoot.parse(root)
    # the journal stayed local, in $TICKREC_JOURNAL; nothing of it went to the bucket
    assert any((tmp_path / "journal" / "journal" / "alltick").iterdir())
    assert not store.fs.get_file_info(store.join("journal")).is_file
    assert store.parquet_files("raw") and store.parquet_files("book")

    local = tmp_path / "copy"
    assert download(store, local) > 0
    for table in TABLES:
        q = f"SELECT count(*) AS n FROM {table}"
        assert run_query(root, q).to_pylist() == run_query(local, q).to_pylist(), table
    n = run_query(root, "SELECT count(*) AS n FROM book WHERE venue = 'alltick' "
                        "AND date >= DATE '2000-01-01'").to_pylist()[0]["n"]
    assert n == len(read_table(local, "book")) > 0
    out = cli("query", "--root", root, "--format", "json",
              "SELECT symbol, count(*) AS n FROM book GROUP BY symbol ORDER BY symbol")
    assert [json.loads(line)["symbol"] for line in out.splitlines()] == ["700.HK", "AAPL.US"]

    remote = digest(root)
    assert remote and remote == digest(str(local))
    assert cli("gaps", "--root", root) == cli("gaps", "--root", str(local))
    out = cli("verify", "--root", root).splitlines()[-1]
    assert out.endswith("checked: ok") and out == cli("verify", "--root", str(local)).splitlines()[-1]
    # a damaged object is a finding, exit status 1
    with store.fs.open_output_stream(store.join("book/venue=alltick/date=2024-05-01/x.parquet")) as o:
        o.write(b"not parquet")
    res = CliRunner().invoke(main, ["verify", "--root", root])
    assert res.exit_code == 1
    assert "PROBLEM: book/venue=alltick/date=2024-05-01/x.parquet: unreadable" in res.output
    # the readable files were still re-derived: the damaged one is the only problem
    assert res.output.count("PROBLEM") == 1 and "rows checked" in res.output
    # the credentials reach neither the journal nor the store
    secret = s3_env["AWS_SECRET_ACCESS_KEY"].encode()
    written = [p for p in (tmp_path / "journal").rglob("*") if p.is_file()]
    written += [p for p in local.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret in p.read_bytes()]


async def test_serve_from_an_s3_root(s3_env: dict[str, str], tmp_path: Path) -> None:
    root = s3_env["root"]
    await record_sim(root, ["AAPL.US", "700.HK"], steps=300, rate=600)  # type: ignore[arg-type]
    local = tmp_path / "copy"
    download(StoreRoot.parse(root), local)
    second = tmp_path / "second"
    async with ReplayServer(root, "alltick", speed="max", options=FAST) as server:
        with fast_alltick():
            await record_served(server, "alltick", second)
    sent = [r["payload"] for r in data_frames(local, "alltick")]
    assert sent and [r["payload"] for r in data_frames(second, "alltick")] == sent


def test_s3_publish_writes_objects_directly_and_recovery_redoes_an_interrupted_batch(
        s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = StoreRoot.parse(s3_env["root"])
    cap = Capture(root, "alltick", clock=None)
    cap.open_session("ws://x", ["AAPL.US"])
    for i in range(5):
        cap.frame_in(json.dumps({"cmd_id": 22998, "data": {"code": "AAPL.US", "seq": str(i),
                                 "tick_time": "1714521600000", "price": "1.5", "volume": "2"}}))
    [first] = {f for f in cap.publish(cap.take()) if "/raw/" in str(f)}
    assert str(first).startswith(root.base + "/raw/venue=alltick/")
    for i in range(5, 9):
        cap.frame_in(json.dumps({"cmd_id": 22998, "data": {"code": "AAPL.US", "seq": str(i),
                                 "tick_time": "1714521600000", "price": "1.5", "volume": "2"}}))
    cap.flush_journal()
    # crash mid-publish: the intent is recorded, one object of the batch is written
    batch = cap.take()
    real = root.write_parquet
    calls: list[str] = []

    def dying(table, rel):  # type: ignore[no-untyped-def]
        if calls:
            raise SystemExit("killed")
        calls.append(rel)
        return real(table, rel)

    monkeypatch.setattr(StoreRoot, "write_parquet", lambda self, t, r: dying(t, r))
    with pytest.raises(SystemExit):
        cap.publish(batch)
    monkeypatch.undo()
    for k, v in s3_env.items():
        if k != "root":
            os.environ[k] = v
    state = json.loads((cap.dir / "checkpoint.json").read_text())
    assert state["intent"]["first_file"] == 2 and len(calls) == 1
    cap.journal.close()
    cap._lock.close()

    report = recover(root, "alltick")
    assert report.runs == [cap.run]
    local = tmp_path / "copy"
    download(root, local)
    raw = read_table(local, "raw")
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw) == 11  # open+9+close
    # the half-published batch was redone under the same names: the object written
    # before the crash was overwritten, not duplicated
    names = [p.rsplit("/", 1)[1] for p in root.parquet_files("raw")]
    assert calls[0].rsplit("/", 1)[1] in names
    assert len(names) == len(set(names))
    trades = read_table(local, "trades")
    assert sorted(t["seq"] for t in trades) == list(range(9))
    assert pq.read_metadata(f"{local}/{calls[0]}").num_rows > 0


def tickrec(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tickrec", *args], text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_two_hosts_record_into_one_bucket_at_once(s3_env: dict[str, str], tmp_path: Path) -> None:
    env = child_env(**{k: v for k, v in s3_env.items() if k not in ("root", *TRACING_VARS)})
    root = s3_env["root"]
    sim = tickrec("sim", "alltick", "--rate", "300", "--symbols", "AAPL.US,700.HK", "--seed", "3",
                  env=env)
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:")
        # they record until stopped: the seal below takes seconds on a loaded machine
        procs = {h: tickrec("record", "alltick", "--url", url, "--symbols", "AAPL.US,700.HK",
                            "--root", root, "--flush-seconds", "0.5",
                            env={**env, "TICKREC_HOST": h,
                                 "TICKREC_JOURNAL": str(tmp_path / h)})
                 for h in ("hosta", "hostb")}
        # a seal of the day while both hosts still publish into it (a third host's compact)
        store = StoreRoot.parse(root)
        deadline = time.monotonic() + 20
        while len(store.list_parquet("raw")) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        [day] = {p.split("/date=")[1][:10] for p in store.list_parquet("raw")}
        from storage.compact import seal_day
        report = seal_day(StoreRoot.parse(root, tmp_path / "hostc"), day)
        assert report.ok and report.sealed, report.lines()
        assert all(p.poll() is None for p in procs.values())    # both still recording
        # both go on publishing into the sealed day (late files) before they are stopped
        from storage.compact import day_state

        def published_late() -> bool:
            live = [p.rsplit("/", 1)[1] for p in store.parquet_files("raw")]
            return (bool(day_state(store, day).late)
                    and all(sum(f"-{h}-" in n for n in live) > 2 for h in procs))
        deadline = time.monotonic() + 60
        while not published_late() and time.monotonic() < deadline:
            time.sleep(0.3)
        for h, p in procs.items():
            p.send_signal(signal.SIGTERM)
        for h, p in procs.items():
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs.values():        # a failed check must not leave them (or their pipes)
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
        sim.send_signal(signal.SIGTERM)
        sim.communicate(timeout=10)

    # files published after the seal are late files: live beside the sealed ones
    state = day_state(store, day)
    assert state.manifest is not None and state.late and not state.sealed
    objects = [p for t in TABLES for p in store.parquet_files(t)]
    names = [p.rsplit("/", 1)[1] for p in objects]
    sealed = [n for n in names if n.startswith("sealed-")]
    assert len(set(names) - set(sealed)) == len(names) - len(sealed)  # rolled names: unique
    assert sealed
    rolled = len(names) - len(sealed)
    written = 0
    journaled: dict[str, int] = {}
    for h in ("hosta", "hostb"):
        [run_dir] = [p for p in (tmp_path / h / "journal" / "alltick").iterdir() if p.is_dir()]
        assert f"-{h}-" in run_dir.name and (run_dir / "done").exists()
        written += json.loads((run_dir / "checkpoint.json").read_text())["next_file"]
        journaled[h] = len(read_journal(run_dir)[0])
        assert sum(f"-{h}-" in n for n in names) > 2         # several rolled files each
    assert written > rolled > 0     # the files written before the seal are in sealed ones
    local = tmp_path / "copy"
    download(store, local)
    raw = read_table(local, "raw")
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw)
    for h, n in journaled.items():
        assert sum(f"-{h}-" in r["session"] for r in raw) == n      # every journaled frame
    assert {s["host"] for s in read_table(local, "sessions")} == {"hosta", "hostb"}
    counts = run_query(root, "SELECT count(*) AS n FROM raw").to_pylist()[0]["n"]
    assert counts == len(raw) == sum(journaled.values())
    # a second seal merges the late files: the same rows, one sealed set
    sealer = {**env, "TICKREC_JOURNAL": str(tmp_path / "hostc")}
    seal = subprocess.run([sys.executable, "-m", "tickrec", "compact", "--root", root,
                           "--date", day], env=sealer, text=True, capture_output=True,
                          check=False)
    assert seal.returncode == 0 and f"{day}: sealed" in seal.stdout, seal.stderr
    assert day_state(store, day).sealed
    assert all(p.rsplit("/", 1)[1].startswith("sealed-") for t in TABLES
               for p in store.list_parquet(t))
    again = run_query(root, "SELECT count(*) AS n, count(DISTINCT (session, frame)) AS k "
                            "FROM raw").to_pylist()[0]
    assert again == {"n": len(raw), "k": len(raw)}


def test_a_second_seal_on_the_same_store_is_refused_in_one_line(s3_env: dict[str, str]) -> None:
    store = StoreRoot.parse(s3_env["root"])
    store.write_json("raw/venue=alltick/date=2024-01-02/x.json", {})      # the store exists
    from storage.seallock import LEASE_REL
    store.write_json(LEASE_REL, {"owner": "other", "host": "elsewhere", "pid": 1,
                                 "expires_ns": time.time_ns() + 60 * 10**9})
    res = CliRunner().invoke(main, ["compact", "--root", s3_env["root"], "--date", "2024-01-02"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [(
        f"tickrec: error: another seal is running on {s3_env['root']} (host elsewhere, pid 1); "
        "its lease manifests/.seal-lease.json expires within 60 minutes")]
    assert store.read_json(LEASE_REL)["owner"] == "other"            # left alone


def test_journal_option_is_only_for_s3_roots(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["record", "alltick", "--url", "ws://127.0.0.1:1",
                                    "--symbols", "X", "--root", str(tmp_path),
                                    "--journal", str(tmp_path / "j")])
    assert res.exit_code == 2
    assert "--journal is only for s3:// roots" in res.output


async def test_daemon_on_an_s3_root_records_and_seals(s3_env: dict[str, str], tmp_path: Path
                                                      ) -> None:
    """The daemon with ``root = "s3://…"`` in its config: journal, status and lock on local
    disk, rolled files and the seal of the finished day in the bucket."""
    from recorder.config import load
    from recorder.daemon import Daemon
    from replay.sim.server import Simulator, make_adapter
    from storage.compact import day_state
    from storage.layout import date_of
    from storage.liveset import manifest_rel
    from tests.helpers import MidnightClock
    from tests.test_daemon import D1, D2, MIDNIGHT, _until

    sim = Simulator(make_adapter("alltick"), ["AAPL.US", "700.HK"], rate=150, seed=3)
    await sim.start()
    journal = tmp_path / "daemon-journal"
    cfg_file = tmp_path / "capture.toml"
    cfg_file.write_text(
        f'root = "{s3_env["root"]}"\njournal = "daemon-journal"\nstatus_interval = 0.3\n'
        '[seal]\nat = "00:00:01"\nrow_group_rows = 256\nfile_rows = 2048\n'
        f'[feeds.at]\nvenue = "alltick"\nurl = "{sim.url}"\nsymbols = ["AAPL.US", "700.HK"]\n'
        'reconnect_min = 0.2\nflush_seconds = 0.5\n')
    cfg = load(cfg_file)
    store = cfg.root
    assert isinstance(store, StoreRoot) and store.journal == journal
    clock = MidnightClock(MIDNIGHT)
    d = Daemon(cfg, clock=clock)
    task = asyncio.create_task(d.run())
    try:
        await _until(lambda: bool(d.runners) and all(
            r.snapshot(d.now(), D1)["frames"] > 5 for r in d.runners.values()), 60,
            "frames before midnight")
        clock.cross()
        await _until(lambda: d.seal["last_date"] == D1, 30, "the seal of D1")
        assert d.seal["last_ok"], d.seal
        await _until(lambda: all((journal / "status" / name).exists()
                                 for name in ("daemon.json", "daemon.lock")), 30,
                     "the daemon's status file and lock")
        res = CliRunner().invoke(main, ["status", "--root", store.uri, "--journal", str(journal)])
        assert res.exit_code == 0 and "at  " in res.output and f"{D1}  sealed" in res.output, \
            res.output
    finally:
        d.stop()
        await asyncio.wait_for(task, 20)
        await sim.stop()
    # nothing of the journal or the status went to the bucket
    assert not store.exists("journal") and not store.exists("status")
    assert list((journal / "journal" / "at").iterdir())
    assert day_state(store, D1).sealed and store.read_json(manifest_rel(D1))
    names = [p.rsplit("/", 1)[1] for p in store.parquet_files("raw")]
    assert any(n.startswith("sealed-") for n in names)           # D1, sealed
    assert any(not n.startswith("sealed-") for n in names)       # D2, rolled files
    res = CliRunner().invoke(main, ["compact", "--root", store.uri, "--journal", str(journal),
                                    "--date", D2])
    assert res.exit_code == 0 and f"{D2}: sealed" in res.output, res.output
    local = tmp_path / "copy"
    download(store, local)
    raw = read_table(local, "raw")
    assert len({(r["session"], r["frame"]) for r in raw}) == len(raw) > 0
    assert {date_of(r["ts_recv"]) for r in raw} == {D1, D2}
    res = CliRunner().invoke(main, ["verify", "--root", store.uri, "--journal", str(journal)])
    assert res.exit_code == 0 and res.output.splitlines()[-1].endswith("checked: ok"), res.output
