"""The recording process's memory setup (``recorder.lean``, issue 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent

# A fresh process: lean_process, then a capture through the AllTick fast path to
# Parquet; what was imported, and whether pandas still works afterwards.
_CHILD = r"""
import json, sys
from pathlib import Path
from recorder.lean import cxx_pool_is_system, lean_process
lean_process()
import pyarrow as pa
import pyarrow.parquet as pq
from recorder.capture import Capture
from schemas.venues import alltick
from schemas.venues.alltick import encode_depth, encode_trade
alltick.FAST_MIN = 1
cap = Capture(sys.argv[1], "alltick")
cap.open_session("ws://x", ["AAPL.US"])
for i in range(600):
    t = 1_767_225_600_000 + i
    cap.frame_in(encode_trade("AAPL.US", 2 * i + 1, t, 1.5, 2.0, 1, True), text=True)
    cap.frame_in(encode_depth("AAPL.US", 2 * i + 2, t, [(1.0, 2.0)], [(1.5, 1.0)], False), text=True)
cap.close()
rows = {t: sum(pq.ParquetFile(f).metadata.num_rows for f in (Path(sys.argv[1]) / t).rglob("*.parquet"))
        for t in ("raw", "trades", "book")}
out = {"rows": rows, "loaded": sorted(m for m in ("pandas", "duckdb", "pyarrow.dataset",
                                                  "pyarrow._s3fs", "pyarrow._gcsfs")
                                       if m in sys.modules),
       "pool": pa.default_memory_pool().backend_name, "cxx_pool_system": cxx_pool_is_system()}
try:
    import pandas as pd
except ImportError:
    out["pandas_after"] = None
else:
    out["pandas_after"] = [pa.array(pd.Series([1.5, 2.5])).to_pylist(),
                           pa.table(pd.DataFrame({"a": [1, 2]})).num_rows]
print(json.dumps(out))
"""


def test_a_lean_capture_imports_neither_pandas_nor_duckdb(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], check=False,
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["rows"] == {"raw": 1202, "trades": 600, "book": 600}   # + open and close
    assert out["loaded"] == []
    assert out["pool"] == "system"
    assert out["cxx_pool_system"]       # the Parquet encoders' pool too (lean_process ran first)
    assert out["pandas_after"] in (None, [[1.5, 2.5], 2])     # pandas still usable


def test_an_s3_root_still_works_after_lean_process() -> None:
    # lean_process imports pyarrow.fs without the object-store filesystems; an S3
    # filesystem made afterwards imports them (nothing is dialled until it is used).
    code = ("import sys; from recorder.lean import lean_process; lean_process(); "
            "import recorder.live, pyarrow.fs as pafs; before = 'pyarrow._s3fs' in sys.modules; "
            "from storage.fs import StoreRoot; root = StoreRoot.parse('s3://bucket/prefix'); "
            "print(before, isinstance(root.fs, pafs.S3FileSystem), pafs.S3FileSystem.__module__)")
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "True", "pyarrow._s3fs"], proc.stderr


def test_the_command_line_leaves_pyarrow_to_lean_process() -> None:
    # tickrec record/daemon call lean_process inside the command: Arrow's C++ default
    # pool is chosen when pyarrow is imported, so nothing before may import it.
    code = ("import sys, tickrec.cli, recorder, recorder.lean, schemas.venues; "
            "print('pyarrow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False"], proc.stderr


def test_too_late_for_the_cxx_pool_once_pyarrow_is_imported() -> None:
    code = ("import os, pyarrow; from recorder.lean import system_pool_first; "
            "print(system_pool_first(), os.environ.get('ARROW_DEFAULT_MEMORY_POOL'))")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "None"], proc.stderr


def test_the_pandas_probe_is_left_alone_once_pandas_is_imported() -> None:
    code = ("import pandas, sys; from recorder.lean import skip_pandas_probe; "
            "print(skip_pandas_probe(), 'pandas' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=60)
    if "No module named 'pandas'" in proc.stderr:
        return                      # nothing to check without pandas
    assert proc.stdout.split() == ["False", "True"], proc.stderr


def test_record_and_daemon_set_up_the_process_first(monkeypatch, tmp_path: Path) -> None:
    import recorder.daemon
    import recorder.lean
    import recorder.run
    from tickrec.cli import main
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(recorder.lean, "lean_process", lambda *m: calls.append(m))
    monkeypatch.setattr(recorder.run, "record_feed", lambda *a, **k: calls.append(("record",)) or "ok")
    monkeypatch.setattr(recorder.daemon, "run_daemon", lambda *a, **k: calls.append(("daemon",)))
    monkeypatch.setattr("recorder.health.json_logging", lambda: None)
    r = CliRunner().invoke(main, ["record", "alltick", "--url", "ws://x", "--symbols", "A",
                                  "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["daemon", "--config", str(tmp_path / "c.toml")])
    assert r.exit_code == 0, r.output
    assert calls == [(), ("record",), ("recorder.daemon",), ("daemon",)]


def test_a_replay_process_starts_without_pandas_on_the_system_pool(tmp_path: Path) -> None:
    # tickrec replay/serve set the process up first: no pandas (pyarrow.dataset looks
    # for it on import), Arrow's pools on the C allocator; replay still works.
    code = ("import sys; from tickrec.cli import _replay_process; _replay_process(); "
            "import pyarrow as pa, replay, replay.serve; "
            "from recorder.lean import cxx_pool_is_system; "
            "from pathlib import Path; from benchmarks.replay_store import make_day; "
            "make_day(Path(sys.argv[1]), 0, 500, 'sealed'); "
            "print('pandas' in sys.modules, pa.default_memory_pool().backend_name, "
            "cxx_pool_is_system(), sum(1 for _ in replay.replay_sync(sys.argv[1], 'alltick')))")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    fields = proc.stdout.split()
    assert fields[:3] == ["False", "system", "True"], proc.stderr
    assert int(fields[3]) > 500         # trades and books of 500 events' frames
