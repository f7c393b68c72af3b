"""Sealing on s3:// roots (moto on loopback): compact, status, crash at every step, readers."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

from replay.scan import Scan
from storage.catalog import run_query
from storage.compact import SealOptions, day_state, seal_day, unsealed_days
from storage.fs import StoreRoot
from storage.liveset import manifest_rel
from tests.helpers import record_across_midnight
from tests.s3server import S3_ENV
from tickrec.cli import main

D1, D2 = "2024-03-10", "2024-03-11"
MIDNIGHT = int(datetime(2024, 3, 11, tzinfo=UTC).timestamp()) * 1_000_000_000
SMALL = SealOptions(row_group_rows=256, file_rows=1024)
SECRET = "s3cret-Seal-Never-Stored-51c2"
TABLES = ("raw", "trades", "book", "gaps", "sessions")


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def bucket(moto_process: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bucket holding a template store (an AllTick capture across a past UTC midnight)
    under ``template/``, with its local journal in ``journal``."""
    saved = {k: os.environ.get(k) for k in (*S3_ENV, "TICKREC_JOURNAL", "AWS_EC2_METADATA_DISABLED")}
    moto_endpoint = moto_process
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_EC2_METADATA_DISABLED": "true"}
    for k in S3_ENV:
        os.environ.pop(k, None)
    os.environ.update(env)
    name = f"seal-{secrets.token_hex(4)}"
    journal = tmp_path_factory.mktemp("template-journal")
    os.environ["TICKREC_JOURNAL"] = str(journal)
    try:
        StoreRoot.parse(f"s3://{name}").fs  # noqa: B018 - settings check
        pafs.S3FileSystem(endpoint_override=moto_endpoint.split("://")[1], scheme="http",
                          region="us-east-1", access_key="testing", secret_key="testing",
                          allow_bucket_creation=True).create_dir(name)
        asyncio.run(record_across_midnight(f"s3://{name}/template", ["AAPL.US", "700.HK"],
                                           MIDNIGHT, rows=100, flush_rows=400))
        yield {"env": env, "bucket": name, "journal": journal}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def store(bucket: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreRoot:
    """A fresh copy of the template store (objects and local journal)."""
    for k, v in bucket["env"].items():
        monkeypatch.setenv(k, v)
    journal = tmp_path / "journal"
    shutil.copytree(bucket["journal"], journal)
    monkeypatch.setenv("TICKREC_JOURNAL", str(journal))
    return copy_store(bucket["bucket"], "template", f"t-{secrets.token_hex(4)}", journal)


def copy_store(bucket: str, src: str, dst: str, journal: Path) -> StoreRoot:
    a = StoreRoot.parse(f"s3://{bucket}/{src}", journal)
    b = StoreRoot.parse(f"s3://{bucket}/{dst}", journal)
    sel = pafs.FileSelector(a.base, recursive=True)
    for info in a.fs.get_file_info(sel):
        if info.type == pafs.FileType.File:
            a.fs.copy_file(info.path, b.base + info.path[len(a.base):])
    return b


def answers(store: StoreRoot | str) -> dict[str, Any]:
    """What readers see: per table, every row (as a multiset) by query; replay digests."""
    out: dict[str, Any] = {}
    for table in TABLES:
        t = run_query(store, f"SELECT * EXCLUDE (venue, date) FROM {table}")
        out[table] = Counter(tuple(repr(v) for v in row.values()) for row in t.to_pylist())
    out["scan"] = [len(list(Scan(store, "alltick", kind=k))) for k in ("events", "raw")]
    return out


def replay_digest(root: str) -> str:
    code, out = cli("replay", "--venue", "alltick", "--root", root, "--speed", "max",
                    "--clock", "virtual", "--digest")
    assert code == 0, out
    return out.strip()


def objects(store: StoreRoot) -> list[str]:
    return [p for t in TABLES for p in store.list_parquet(t)]


def test_compact_on_s3_keeps_every_row_and_the_replay_digest(store: StoreRoot) -> None:
    before = answers(store)
    digests = replay_digest(store.uri)
    n_before = len(objects(store))
    assert sum(before["raw"].values()) > 0 and n_before > 10
    assert unsealed_days(store, "2100-01-01") == [D1, D2]

    code, out = cli("compact", "--root", store.uri, "--date", D1)
    assert code == 0, out
    assert f"{D1}: sealed" in out
    assert answers(store) == before                   # query and scan: the same rows, once
    code, out = cli("compact", "--root", store.uri)   # every unsealed day before today
    assert code == 0 and f"{D2}: sealed" in out, out
    assert answers(store) == before
    assert replay_digest(store.uri) == digests
    assert unsealed_days(store, "2100-01-01") == []

    # the bucket holds only sealed files now: the replaced objects are gone
    names = [p.rsplit("/", 1)[1] for p in objects(store)]
    assert names and all(n.startswith("sealed-") for n in names) and len(names) < n_before
    for date in (D1, D2):
        m = store.read_json(manifest_rel(date))
        for table in ("raw", "trades", "book"):
            n = run_query(store, f"SELECT count(*) AS n FROM {table} "
                                 f"WHERE date = DATE '{date}'").to_pylist()[0]["n"]
            assert m["tables"][table]["alltick"]["rows"] == n > 0
        st = day_state(store, date)
        assert st.sealed and not st.garbage
    # the journal (local) is trimmed once both days are sealed and checked
    assert not list((Path(os.environ["TICKREC_JOURNAL"]) / "journal" / "alltick").glob("2*"))
    code, out = cli("verify", "--root", store.uri)
    assert code == 0 and out.splitlines()[-1].endswith("checked: ok"), out
    code, out = cli("status", "--root", store.uri)
    assert code == 0 and f"{D1}  sealed" in out and f"{D2}  sealed" in out, out
    # nothing written anywhere holds the S3 secret
    written = [p for p in Path(os.environ["TICKREC_JOURNAL"]).rglob("*") if p.is_file()]
    blobs = [store.fs.open_input_stream(p).read() for p in objects(store)]
    blobs += [store.fs.open_input_stream(store.join(manifest_rel(d))).read() for d in (D1, D2)]
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert not [b for b in blobs if SECRET.encode() in b]


class Crash(BaseException):
    """A kill -9: raised by the k-th write or delete of the store and every one after it."""


def _crashing(monkeypatch: pytest.MonkeyPatch, k: int) -> list[str]:
    """Make the store's mutations (object upload, JSON write, delete) die from the k-th on."""
    calls: list[str] = []
    for name in ("upload", "write_json", "delete"):
        real = getattr(StoreRoot, name)

        def f(self: StoreRoot, *a: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(f"{_name} {a[-1] if _name != 'write_json' else a[0]}")
            if len(calls) > k:
                raise Crash(f"crash at step {len(calls)}: {calls[-1]}")
            return _real(self, *a)
        monkeypatch.setattr(StoreRoot, name, f)
    return calls


def live_sets(store: StoreRoot) -> dict[str, set[str]]:
    """Per partition, the names of the files readers read."""
    out: dict[str, set[str]] = {}
    for table in TABLES:
        for p in store.parquet_files(table):
            part, name = p.rsplit("/", 1)
            out.setdefault(part[len(store.base) + 1:], set()).add(name)
    return out


def counts(store: StoreRoot) -> dict[str, tuple[int, int]]:
    """Per table, (rows, distinct (session, frame, pos)) by query: a duplicate or a lost
    row changes one of them; plus the raw rows a replay scan reads."""
    key = {"raw": "session, frame", "sessions": "session"}
    sql = " UNION ALL ".join(
        f"SELECT '{t}' AS t, count(*) AS n, count(DISTINCT ({key.get(t, 'session, frame, pos')}))"
        f" AS k FROM {t}" for t in TABLES)
    out = {r["t"]: (r["n"], r["k"]) for r in run_query(store, sql).to_pylist()}
    out["scan"] = (len(list(Scan(store, "alltick", kind="raw"))), 0)
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)   # CPU: two seals and four queries a step, 76 s alone; 120+ loaded
def test_a_crash_at_every_step_of_the_s3_seal_leaves_old_or_new(
        bucket: dict[str, Any], store: StoreRoot, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("storage.seallock.SETTLE_S", 0.0)
    want = counts(store)
    assert all(n == k for t, (n, k) in want.items() if t != "scan"), want
    assert min(want[t][0] for t in ("raw", "trades", "book", "sessions")) > 0, want
    old = live_sets(store)
    pristine = copy_store(bucket["bucket"], store.base.split("/", 1)[1], "pristine-"
                          + secrets.token_hex(3), store.journal)
    shutil.copytree(store.journal, tmp_path / "pristine-journal")
    with pytest.MonkeyPatch.context() as mp:
        steps = _crashing(mp, 10**9)
        assert seal_day(store, D1, options=SMALL).ok
    new = live_sets(store)
    kinds = Counter(s.split()[0] for s in steps)
    assert kinds["upload"] >= 3 and kinds["delete"] >= 5 and kinds["write_json"] == 2, kinds   # lease, manifest
    assert steps.index(f"write_json {manifest_rel(D1)}") > max(
        i for i, s in enumerate(steps) if s.startswith("upload"))
    for k in range(len(steps)):
        journal = tmp_path / f"j{k}"
        shutil.copytree(tmp_path / "pristine-journal", journal)
        root = copy_store(bucket["bucket"], pristine.base.split("/", 1)[1], f"k{k}-"
                          + secrets.token_hex(3), journal)
        with pytest.MonkeyPatch.context() as mp:
            _crashing(mp, k)
            with pytest.raises(Crash):
                seal_day(root, D1, options=SMALL)
        # what a reader sees right after the crash: each partition old or new, each row once
        for part, names in live_sets(root).items():
            assert names == old[part] or (all(n.startswith("sealed-") for n in names)
                                          and len(names) == len(new[part])), (k, steps[k], names)
        assert counts(root) == want, (k, steps[k])
        # recovery (the next seal) finishes the work: sealed, no garbage, the same rows
        assert seal_day(root, D1, options=SMALL).ok, k
        live = live_sets(root)
        assert {p for p in live if D1 in p} == {p for p in new if D1 in p}, k
        assert all(n.startswith("sealed-") for p, names in live.items() if D1 in p
                   for n in names), k
        assert counts(root) == want, k
        assert len(objects(root)) == sum(map(len, live.values())), k    # garbage collected
        assert not root.exists("manifests/.seal-lease.json"), k


def test_readers_that_listed_before_a_seal_read_again_after_its_deletes(
        store: StoreRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import catalog
    want = counts(store)
    sql = "SELECT count(*) AS n, count(DISTINCT (session, frame)) AS k FROM raw"
    rows = run_query(store, sql).to_pylist()[0]
    real = catalog.connect
    sealed: list[str] = []

    def listed_then_sealed(root: Any) -> Any:
        con = real(root)               # the views hold the rolled files' list
        if not sealed:
            sealed.append(D1)
            assert seal_day(store, D1, options=SMALL).ok     # ... which the seal deletes
        return con

    monkeypatch.setattr(catalog, "connect", listed_then_sealed)
    assert run_query(store, sql).to_pylist()[0] == rows       # read again, once
    monkeypatch.undo()
    # replay: the scan listed D2 before its seal, reads it after
    scan = Scan(store, "alltick", kind="raw")
    assert scan.dates() == [D1, D2]
    d2 = run_query(store, f"SELECT count(*) AS n FROM raw WHERE date = DATE '{D2}'")
    assert seal_day(store, D2, options=SMALL).ok
    windows = list(scan.read_day(D2))           # the listing it holds names deleted objects
    assert sum(w.rows for w in windows) == d2.to_pylist()[0]["n"] > 0
    assert counts(store) == want


def test_a_replay_in_the_middle_of_a_day_when_the_seal_deletes_its_files(
        store: StoreRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan has handed out windows of D2 from the rolled files when the seal
    deletes them: it lists the day again and the rest comes from the sealed files,
    the same rows in the same order."""
    want = [(r.ts_recv, r.session, r.frame) for r in Scan(store, "alltick", kind="raw")]
    scan = Scan(store, "alltick", kind="raw", window_rows=64)
    relisted: list[str] = []
    real = Scan._relist
    monkeypatch.setattr(Scan, "_relist", lambda self, t: (relisted.append(t), real(self, t)))
    got: list[tuple[int, str, int]] = []
    windows = 0
    for chunk in scan.iter_chunks():
        got += [(r.ts_recv, r.session, r.frame) for r in chunk]
        windows += 1
        if windows == 2 and len(got) < len(want):
            assert seal_day(store, D1, options=SMALL).ok
            assert seal_day(store, D2, options=SMALL).ok
    assert windows > 2 and relisted == ["raw"]
    assert got == want
