"""``make bench``: its command line (``--only`` runs those sections of the table), and
that the replay paths it times hand out the same rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import replay_speed
from benchmarks.replay_store import make_day
from tests.helpers import child_env


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True,
                          text=True, timeout=300, check=False, env=child_env())


def test_only_runs_the_named_sections() -> None:
    done = bench("--quick", "--only", "storage")
    rows = [line.split()[0:3] for line in done.stdout.splitlines()[2:]]
    assert done.returncode == 0, done.stderr
    assert ["bytes", "per", "trades"] in rows and ["bytes", "per", "raw"] in rows
    assert not any(line.startswith(("capture", "replay", "pacing", "query"))
                   for line in done.stdout.splitlines())
    assert "the run took" in done.stdout.splitlines()[-1]


def test_an_unknown_section_is_one_line_naming_the_sections() -> None:
    done = bench("--only", "pacing,speed")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == ("--only takes sections from capture, replay, memory, storage, "
                                   "pacing, query; got ['speed']")


def test_the_replay_paths_hand_out_the_same_rows(tmp_path: Path) -> None:
    """Every replay path the bench times covers the same rows: the ratios compare like
    with like (the async feed and its ``async for`` baseline included)."""
    make_day(tmp_path, 0, 3000, "sealed")
    make_day(tmp_path, 1, 3000, "rolled")
    for table in ("trades", "book"):
        counts = {name: fn()[0] for name, fn in replay_speed._paths(tmp_path, table).items()}
        assert counts["feed"] == counts["async for"] == counts["objects"] == counts["read"] > 0
        assert set(counts.values()) == {counts["objects"]}


def test_the_import_floor_is_the_recorder_childs_start_and_nothing_more() -> None:
    # The floor beside the recorder's peak RSS: a process that imports what the
    # recorder child imports (pyarrow among them) and stops, well above a Python
    # that imports only the bench module (websockets) and well under the limit.
    from benchmarks import capture_memory
    floor = capture_memory.import_floor_mb()
    nothing = ("import os; from benchmarks.capture_memory import _status_mb; "
               "print(_status_mb(os.getpid(), 'VmHWM'))")
    bare = subprocess.run([sys.executable, "-c", nothing], capture_output=True, text=True,
                          timeout=60, check=True, env=child_env())
    assert float(bare.stdout) + 20 < floor < capture_memory.LIMIT_MB
    code = ("import sys; from benchmarks.capture_memory import _floor; _floor(); "
            "print('recorder.live' in sys.modules, 'pandas' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True, env=child_env())
    assert loaded.stdout.split() == ["True", "False"]
