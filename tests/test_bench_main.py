"""``make bench``'s command line: ``--only`` runs those sections of the table."""

from __future__ import annotations

import subprocess
import sys

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
