"""storage.fs: local and s3:// roots behind one seam (S3: moto on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.errors import ConfigError
from storage.fs import StoreRoot, journal_root

TABLE = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def test_parse_s3_root_and_journal_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TICKREC_JOURNAL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = StoreRoot.parse("s3://bkt//a/b/")
    assert (r.s3, r.base, r.uri) == (True, "bkt/a/b", "s3://bkt/a/b")
    assert r.join("trades", "venue=x") == "bkt/a/b/trades/venue=x"
    assert r.journal == tmp_path / "cache" / "tickrec" / "journal" / "bkt" / "a" / "b"
    monkeypatch.setenv("TICKREC_JOURNAL", str(tmp_path / "j"))
    assert StoreRoot.parse("s3://bkt").journal == tmp_path / "j"
    assert StoreRoot.parse("s3://bkt", journal=tmp_path / "k").journal == tmp_path / "k"
    assert journal_root("b", "p/q", "/x") == Path("/x")
    with pytest.raises(ConfigError):
        StoreRoot.parse("s3:///nobucket")
    with pytest.raises(ConfigError):
        StoreRoot.parse("s3://b/../etc")


def test_local_root_keeps_temp_rename_and_journal_beside_the_data(tmp_path: Path) -> None:
    r = StoreRoot.parse(tmp_path)
    assert not r.s3 and r.journal == tmp_path
    r.write_parquet(TABLE, "trades/venue=alltick/date=2024-05-01/run-000000.parquet")
    (tmp_path / "trades/venue=alltick/date=2024-05-01/.run-000001.parquet.tmp").write_bytes(b"x")
    [f] = r.parquet_files("trades", "alltick")
    assert pq.read_table(f).equals(TABLE)
    assert r.exists("trades/venue=alltick/date=2024-05-01/run-000000.parquet")
    r.delete("trades/venue=alltick/date=2024-05-01/run-000000.parquet")
    assert r.parquet_files("trades") == []


def test_s3_write_list_exists_delete(s3_env: dict[str, str]) -> None:
    r = StoreRoot.parse(s3_env["root"])
    assert r.is_store()
    assert r.parquet_files("trades") == []           # nothing yet: no error
    rel = "trades/venue=alltick/date=2024-05-01/run-000000.parquet"
    assert r.write_parquet(TABLE, rel) == f"{s3_env['root']}/{rel}"
    r.write_parquet(TABLE, "trades/venue=futu/date=2024-05-02/run-000001.parquet")
    with r.fs.open_output_stream(r.join("trades/venue=futu/date=2024-05-02/.hidden.parquet")) as o:
        o.write(b"partial")
    assert len(r.parquet_files("trades")) == 2
    [f] = r.parquet_files("trades", "alltick")
    assert pq.read_table(f, filesystem=r.fs).equals(TABLE)
    assert r.exists(rel) and not r.exists(rel + ".nope")
    r.delete(rel)
    r.delete(rel)                                     # deleting twice is fine
    assert [p.rsplit("/", 1)[1] for p in r.parquet_files("trades")] == ["run-000001.parquet"]
    assert not StoreRoot.parse(f"s3://missing-{os.getpid()}").is_store()


def test_s3_failed_encode_uploads_nothing(s3_env: dict[str, str]) -> None:
    r = StoreRoot.parse(s3_env["root"])
    with pytest.raises(AttributeError):      # not a table: fails while encoding
        r.write_parquet(None, "t/venue=v/date=2024-05-01/x.parquet")  # type: ignore[arg-type]
    assert r.parquet_files("t") == []
