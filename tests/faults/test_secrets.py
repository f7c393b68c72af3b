"""Secrets: record every venue with a recognisable token (and once with a wrong one), then
search everything tickrec wrote or said for it: every file's bytes, every Parquet column as
text, every journal record decompressed, the log at INFO, the Status events, the progress
line, the errors, and the output of the command line. It must appear nowhere."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from recorder.run import progress_line
from replay.sim.server import Simulator, make_adapter
from schemas.errors import PermanentFeedError
from schemas.venues.noren import jainam_token
from storage.journal import read_journal
from tests.faults.support import running, scaled, wait_for
from tests.helpers import read_table

pytestmark = pytest.mark.timeout(scaled(60, 1800))
SECRET = "SeCrEt-7f3a9c1e"

# venue -> (symbols, the credentials the recorder gets, the token the simulator wants,
#           recorder options, simulator adapter options, steps, rate)
VENUES: dict[str, tuple[list[str], dict[str, str], str | None, dict[str, Any],
                        dict[str, Any], int, float]] = {
    "alltick": (["AAPL.US", "700.HK"], {"token": f"AT-{SECRET}"}, f"AT-{SECRET}", {}, {},
                500, 300),
    "finazon": (["AAPL", "MSFT"], {"token": f"FZ-{SECRET}"}, f"FZ-{SECRET}", {},
                {"bar_seconds": 2}, 80, 60),
    "hedgetech": (["سکه-طلا-۱۴۰۴", "Gold-Coin-1404"], {"token": f"eyJhbGciOiJIUzI1NiJ9.HT-{SECRET}"},
                  f"eyJhbGciOiJIUzI1NiJ9.HT-{SECRET}", {"options": {"schedule": None}}, {},
                  200, 200),
    "noren": (["NSE|22", "NFO|35003"], {"uid": "U1", "actid": "A1", "token": f"NR-{SECRET}"},
              f"NR-{SECRET}", {}, {}, 300, 300),
    "futu": (["HK.00700", "US.AAPL"], {}, None, {}, {}, 400, 300),
}


def _secrets(venue: str, credentials: dict[str, str]) -> list[str]:
    out = [v for k, v in credentials.items() if k == "token"]
    if venue == "noren":
        out += [jainam_token(v) for v in out]
    return out + [SECRET]


def everything_written(root: Path) -> list[tuple[str, str]]:
    """(where, text) of all tickrec wrote under ``root``: raw file bytes, each Parquet
    file's columns as text, each journal record's payload and note."""
    out: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out.append((str(path), path.read_bytes().decode("latin-1")))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                values = table.column(name).to_pylist()
                text = "\n".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                 for v in values)
                out.append((f"{path}:{name}", text))
    for run_dir in sorted(root.glob("journal/*/*")):
        if run_dir.is_dir():
            records, _ = read_journal(run_dir)
            for r in records:
                out.append((f"{run_dir} frame {r.frame}",
                            r.payload.decode("latin-1") + "\n" + (r.note or "")))
    return out


def assert_nowhere(secrets: list[str], places: list[tuple[str, str]]) -> None:
    for where, text in places:
        for secret in secrets:
            assert secret not in text, f"{secret!r} found in {where}"


@pytest.mark.parametrize("venue", list(VENUES))
async def test_the_token_is_nowhere_in_what_tickrec_writes_or_says(
        venue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)                  # every logger, the libraries' too
    symbols, credentials, sim_token, rec_opts, adapter_opts, steps, rate = VENUES[venue]
    secrets = _secrets(venue, credentials)
    said: list[str] = []
    async with running(tmp_path / "good", symbols, venue=venue, rate=rate, steps=steps,
                       token=sim_token, credentials=credentials,
                       adapter_options=adapter_opts, **rec_opts) as run:
        run.rec.on_notice = said.append
        await wait_for(run.sim.done.is_set, 20)
        said.append(progress_line(run.rec, 0.0))
    data_tables = ("trades", "book", "tickers", "bars")
    assert sum(len(read_table(tmp_path / "good", t)) for t in data_tables) > 20
    said += [str(e) for e in run.events]            # Status details, gaps' details

    if sim_token is not None:                       # and a wrong token, stopped for good
        wrong = {k: (f"WRONG-{SECRET}" if k == "token" else v) for k, v in credentials.items()}
        secrets += _secrets(venue, wrong)
        with pytest.raises(PermanentFeedError) as failed:
            async with running(tmp_path / "bad", symbols, venue=venue, rate=rate, steps=steps,
                               token=sim_token, credentials=wrong,
                               adapter_options=adapter_opts, **rec_opts) as bad:
                await wait_for(bad.task.done, 15)
        said.append(str(failed.value))
        said += [str(e) for e in bad.events]
        assert len(read_table(tmp_path / "bad", "sessions")) == 1   # no reconnect loop

    sessions = read_table(tmp_path / "good", "sessions")
    assert sessions and all(s["url"] for s in sessions)
    assert_nowhere(secrets, everything_written(tmp_path))
    assert_nowhere(secrets, [("log", caplog.text)] + [("said", s) for s in said])
    assert_nowhere(secrets, [("sessions", str(sessions))])


async def test_the_command_line_says_no_token_even_verbose(tmp_path: Path) -> None:
    """`tickrec -v record` with the token in the environment: stdout, stderr (progress,
    log at DEBUG for tickrec), and the store hold no token; a wrong one exits 3, silently."""
    token = f"CLI-{SECRET}"
    sim = Simulator(make_adapter("alltick"), ["AAPL.US"], rate=200, token=token)
    await sim.start()
    try:
        outputs = []
        for given, want in ((token, 0), (f"WRONG-{SECRET}", 3)):
            env = {**os.environ, "TICKREC_ALLTICK_TOKEN": given}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tickrec", "-v", "record", "alltick", "--url", sim.url,
                "--symbols", "AAPL.US", "--root", str(tmp_path), "--duration", "1.5",
                env=env, cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 40)
            assert proc.returncode == want, err.decode()
            outputs += [("stdout", out.decode()), ("stderr", err.decode())]
        assert "recorded" in outputs[0][1] and "feed stopped" in outputs[3][1]
    finally:
        await sim.stop()
    assert_nowhere([token, SECRET], outputs + everything_written(tmp_path))


def test_sim_binds_loopback_by_default() -> None:
    from tickrec.cli import sim
    host = next(p for p in sim.params if p.name == "host")
    assert host.default == "127.0.0.1"
    simulator = Simulator(make_adapter("alltick"), ["A"])
    assert simulator.server.host == "127.0.0.1"
    futu = make_adapter("futu")
    assert futu.simulator(futu, ["HK.00700"]).url.startswith("tcp://127.0.0.1:")


async def test_a_running_sim_listens_on_loopback_only(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tickrec", "sim", "alltick", cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     + Path("/proc/net/tcp6").read_text().splitlines()[1:]]
        mine = [f[1] for f in listening if f[3] == "0A" and int(f[1].split(":")[1], 16) == port]
        assert mine and all(addr.split(":")[0] in ("0100007F", "00000000000000000000000001000000")
                            for addr in mine), mine
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 20)
