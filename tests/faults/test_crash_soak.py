"""kill -9, again and again: ``tickrec record`` killed at random (seeded) points of a
high-rate capture, restarted each time, then a clean run. Afterwards the accounting
identity holds: every frame the simulator sent is in ``raw`` or counted missing in a
``sequence``/``disconnect`` gap, no (session, frame) is stored twice, and ``tickrec verify``
passes. ``make soak`` runs many more kills (``SOAK=1``; ``TICKREC_SOAK_SEED`` picks them).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from storage.journal import read_journal
from tests.faults.support import scaled
from tests.helpers import child_env, read_table, reap, wait_journaled

# the kills wait for the capture's progress, not the clock: under load this runs longer
pytestmark = [pytest.mark.slow, pytest.mark.timeout(scaled(300, 1800))]
SYMBOLS = ["AAPL.US", "700.HK"]
REPO = Path(__file__).parents[2]
SEED = int(os.environ.get("TICKREC_SOAK_SEED", "20240917"))


def tickrec(*args: str) -> subprocess.Popen[str]:
    """A ``tickrec`` process; without the tracing switches of ours (``child_env``): one
    that inherited PYTHONTRACEMALLOC=25 journaled so slowly that a 60 s wait ran out."""
    return subprocess.Popen([sys.executable, "-m", "tickrec", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def sent_stats(stderr: str) -> dict[str, tuple[int, int, int]]:
    """The simulator's last words: per symbol (frames delivered, first seq, last seq)."""
    out = {}
    for m in re.finditer(r"sent (\S+): (\d+) frames, seq (\d+)\.\.(\d+)", stderr):
        out[m[1]] = (int(m[2]), int(m[3]), int(m[4]))
    return out


def runs_of(root: Path) -> set[Path]:
    journal = root / "journal" / "alltick"
    return {p for p in journal.iterdir() if p.is_dir()} if journal.is_dir() else set()


def test_kill_9_at_random_points_and_restart_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    kills = scaled(4, 30)
    root = str(tmp_path)
    journal = tmp_path / "journal" / "alltick"
    sim = tickrec("sim", "alltick", "--rate", "3000", "--symbols", ",".join(SYMBOLS),
                  "--seed", str(SEED % 1000), "--faults", "skip@6000,skip@15000,skip@40000")
    record = ["record", "alltick", "--symbols", ",".join(SYMBOLS), "--root", root,
              "--flush-seconds", "0.7"]
    recorders: list[subprocess.Popen[str]] = []
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:")
        for k in range(kills):
            # most kills land mid-capture (once the run has journaled a random number of
            # records: its progress, whatever the machine's speed); some during start-up
            # and recovery (a random delay after the start)
            mid = rng.random() >= 0.25
            delay, records = rng.uniform(0.2, 1.0), rng.randint(300, 6000)
            old = runs_of(tmp_path)
            proc = tickrec(*record, "--url", url)
            recorders.append(proc)
            if mid:
                wait_journaled(journal, lambda recs, n=records: len(recs) >= n, old=old,
                               proc=proc)
            else:
                time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == -signal.SIGKILL, err
            assert "Traceback" not in err
        # a clean run, stopped once both streams flow (trade pushes follow the depth
        # subscription by AllTick's 1 s request interval) and it has published them
        old = runs_of(tmp_path)
        final = tickrec(*record, "--url", url)
        recorders.append(final)
        wait_journaled(journal, lambda recs: sum(b'"cmd_id":22998' in r.payload
                                                 for r in recs) >= 500, old=old, proc=final)
        final.send_signal(signal.SIGTERM)
        _out, err = final.communicate(timeout=90)
        assert final.returncode == 0, err
        assert "Traceback" not in err
    finally:
        reap(recorders)
        sim.send_signal(signal.SIGTERM)
        _, sim_err = sim.communicate(timeout=60)    # seconds when it is starved of CPU
    stats = sent_stats(sim_err)
    assert set(stats) == set(SYMBOLS), sim_err

    # every run is sealed; every journal record is in raw exactly once
    runs = sorted(p for p in (tmp_path / "journal" / "alltick").iterdir() if p.is_dir())
    assert all((r / "done").exists() for r in runs)
    journaled = sum(len(read_journal(r)[0]) for r in runs)
    raw = read_table(tmp_path, "raw")
    keys = Counter((r["session"], r["frame"]) for r in raw)
    assert max(keys.values()) == 1, "a frame stored twice"
    assert len(raw) == journaled
    sessions = read_table(tmp_path, "sessions")
    died_mid_session = sum("recorder died" in (s["close_reason"] or "") for s in sessions)
    assert died_mid_session >= 1

    # the identity, per symbol, from the first frame received while both streams were
    # subscribed: every sequence number is a stored row or counted missing in a gap
    data = read_table(tmp_path, "trades") + read_table(tmp_path, "book")
    gaps = read_table(tmp_path, "gaps")
    assert not [g for g in gaps if g["kind"] in ("duplicate", "regression", "rejected")]
    first_ack = min((r for r in raw if b'"cmd_id":22005' in r["payload"]
                     and b'"ret":200' in r["payload"]), key=lambda r: r["ts_recv"])
    for sym in SYMBOLS:
        mine = [r for r in data if r["symbol"] == sym]
        c0 = min(r["seq"] for r in mine if r["session"] == first_ack["session"]
                 and r["ts_recv"] > first_ack["ts_recv"])
        last = max(r["seq"] for r in mine)
        stored = {r["seq"] for r in mine if c0 <= r["seq"] <= last}
        missing = sum(g["missing"] or 0 for g in gaps if g["symbol"] == sym
                      and g["kind"] in ("sequence", "disconnect"))
        assert len(stored) + missing == last - c0 + 1, (sym, len(stored), missing, c0, last)
        delivered, _, sim_last = stats[sym]
        assert len(mine) <= delivered and last <= sim_last
    # every kill that interrupted a session left a disconnect gap after it for each symbol
    # the session had data of (a kill between the subscribe and a symbol's first frame,
    # likelier on a loaded machine, leaves that symbol one gap across both sessions)
    disc = Counter(g["symbol"] for g in gaps if g["kind"] == "disconnect")
    died = {s["session"] for s in sessions if "recorder died" in (s["close_reason"] or "")}
    cut = Counter(sym for sym, session in {(r["symbol"], r["session"]) for r in data}
                  if session in died)
    assert all(disc[s] >= cut[s] for s in SYMBOLS), (disc, cut, died_mid_session)

    check = subprocess.run([sys.executable, "-m", "tickrec", "verify", "--root", root],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env=child_env(), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip().endswith("ok")
