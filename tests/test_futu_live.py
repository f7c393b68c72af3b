"""Futu end to end: simulated OpenD → recorder (raw TCP) → store, and the official SDK
against the simulated OpenD."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from recorder.live import Recorder
from recorder.tcp import tcp_connect
from replay.sim.futu import Adapter, FutuSimulator
from schemas.venues import futu_frame as ff
from schemas.venues.futu import PUSH_CACHE, PUSH_REFILL, PacketSplitter
from storage.journal import read_journal
from tests.helpers import HANG_S, child_env, read_table, reap, until, wait_journaled

SYMBOLS = ["HK.00700", "US.AAPL"]


async def record_futu(root: Path, *, faults: str | None = None, steps: int = 1200,
                      rate: float = 300, cache_ticks: int = 10, seed: int = 5,
                      idle_timeout: float | None = None, **rec_kw: Any) -> tuple[FutuSimulator,
                                                                                 Recorder]:
    sim = FutuSimulator(Adapter(cache_ticks=cache_ticks), SYMBOLS, rate=rate, steps=steps,
                        seed=seed, faults=faults)
    await sim.start()
    rec = Recorder("futu", sim.url, SYMBOLS, root, flush_seconds=1.0, reconnect_min=0.2,
                   idle_timeout=idle_timeout, **rec_kw)
    task = asyncio.create_task(rec.run())
    try:
        await asyncio.wait({task, asyncio.create_task(sim.done.wait())}, timeout=30,
                           return_when=asyncio.FIRST_COMPLETED)
        await settle(rec)
        rec.stop()
        await asyncio.wait_for(task, 15)
    finally:
        await sim.stop()
    return sim, rec


async def settle(rec: Recorder, quiet: float = 0.4, limit: float = 8.0) -> None:
    """Wait until the recorder has read everything (no new frame for ``quiet`` seconds)."""
    loop = asyncio.get_running_loop()
    end, last, since = loop.time() + limit, -1, loop.time()
    while loop.time() < end and loop.time() - since < quiet:
        await asyncio.sleep(0.05)
        n = rec.capture.frames_in if rec.capture is not None else 0
        if n != last:
            last, since = n, loop.time()


def expected_fills(sim: FutuSimulator, push: int) -> dict[str, list[tuple[int, bool]]]:
    """Per symbol, for each cache/refill packet after the first data: (new ticks newer
    than all before, whether it reaches back to a tick delivered before)."""
    seen: dict[str, set[int]] = {s: set() for s in SYMBOLS}
    out: dict[str, list[tuple[int, bool]]] = {s: [] for s in SYMBOLS}
    for symbol, kind, seqs in sim.pushes:
        before = seen[symbol]
        if kind == push and before:
            top = max(before)
            out[symbol].append((sum(1 for s in set(seqs) if s not in before and s > top),
                                any(s in before for s in seqs)))
        before.update(seqs)
    return out


async def test_duplicates_and_refills_are_accounted_against_what_was_sent(tmp_path: Path) -> None:
    sim, rec = await record_futu(tmp_path, cache_ticks=120, steps=1300,
                                 faults="disconnect@350,upstream@800:70,dup@1000,malformed@1100")
    trades = read_table(tmp_path, "trades")
    gaps = read_table(tmp_path, "gaps")
    sessions = read_table(tmp_path, "sessions")
    assert rec.connections == 2 == len(sessions)
    assert all(s["url"].startswith("tcp://127.0.0.1:") for s in sessions)

    # every distinct tick sent is one trade row; every repeat is one duplicate gap row
    sent = Counter((sym, seq) for sym, seq, _ in sim.deliveries)
    assert Counter((t["symbol"], t["seq"]) for t in trades) == Counter(set(sent))
    by_kind = Counter(g["kind"] for g in gaps)
    assert by_kind["duplicate"] == sum(sent.values()) - len(sent) > 0
    assert by_kind["rejected"] == sim.malformed_sent == 1
    assert by_kind["regression"] == by_kind["sequence"] == 0          # no false "missing"
    for t in trades:
        assert t["ts_event"] is not None and t["side"] in ("buy", "sell", "unknown")
    assert {t["trade_type"] for t in trades} == {"Automatch"}

    # our disconnect: one gap per symbol, filled by the cache push after the resubscribe
    cache = expected_fills(sim, PUSH_CACHE)
    refill = expected_fills(sim, PUSH_REFILL)
    ours = [g for g in gaps if g["kind"] == "disconnect" and g["detail"].startswith("closed")]
    assert sorted(g["symbol"] for g in ours) == sorted(SYMBOLS)
    for g in ours:
        [(filled, overlap)] = cache[g["symbol"]]
        assert overlap and g["missing"] == 0      # a 120-tick cache reaches back past the outage
        assert f"{filled} tick(s) of the outage refilled" in g["detail"], g["detail"]
        assert g["ts_start"] < g["ts_end"] and g["session"] == sessions[1]["session"]
    # OpenD's own outage: one gap per symbol that traded during it, with the refill count
    theirs = [g for g in gaps if g["kind"] == "disconnect" and g["detail"].startswith("OpenD")]
    assert sorted(g["symbol"] for g in theirs) == sorted(s for s in SYMBOLS if refill[s])
    for g in theirs:
        [(filled, overlap)] = refill[g["symbol"]]
        assert filled > 0 and f"{filled} tick(s) of the outage refilled" in g["detail"]
        assert g["missing"] == (0 if overlap else None)

    # the raw table keeps every packet whole, as binary frames
    raw = read_table(tmp_path, "raw")
    frames_in = [r for r in raw if r["direction"] == "in"]
    assert all(r["kind"] == "binary" and r["payload"][:2] == b"FT" for r in frames_in)
    assert sum(s["frames_in"] for s in sessions) == len(frames_in)


async def test_dedup_memory_carries_over_to_the_next_recorder_run(tmp_path: Path) -> None:
    # two runs against one simulator: the second run's cache push repeats ticks of the first.
    # Each run lasts until it has data, however long it took to subscribe; the cache (100
    # ticks a symbol, 20 new a second) covers a pause between the runs of up to 5 s.
    sim = FutuSimulator(Adapter(cache_ticks=100), SYMBOLS, rate=40, steps=None, seed=2)
    await sim.start()
    try:
        for run in range(2):
            rec = Recorder("futu", sim.url, SYMBOLS, tmp_path, flush_seconds=1.0)
            task = asyncio.create_task(rec.run())
            await until(lambda rec=rec, task=task: task.done() or (
                rec.capture is not None and rec.capture.frames_in >= 10), 60,
                f"run {run}: ten frames")
            rec.stop()
            await asyncio.wait_for(task, 15)
    finally:
        await sim.stop()
    trades = read_table(tmp_path, "trades")
    assert len({(t["symbol"], t["seq"]) for t in trades}) == len(trades)
    gaps = read_table(tmp_path, "gaps")
    assert Counter(g["kind"] for g in gaps)["duplicate"] > 0
    # the pause between the runs is a disconnect that the cache push covered completely
    between = [g for g in gaps if g["kind"] == "disconnect"]
    assert sorted(g["symbol"] for g in between) == sorted(SYMBOLS)
    assert all(g["missing"] == 0 and "recorder stopped" in g["detail"] for g in between)


async def test_half_open_connection_is_noticed_by_the_watchdog(tmp_path: Path) -> None:
    _sim, rec = await record_futu(tmp_path, steps=900, faults="stall@300:4", idle_timeout=1.5)
    sessions = read_table(tmp_path, "sessions")
    assert rec.connections >= 2
    assert "watchdog" in (sessions[0]["close_reason"] or "")
    assert Counter(g["kind"] for g in read_table(tmp_path, "gaps"))["disconnect"] == len(SYMBOLS)


async def test_nothing_secret_reaches_the_store(tmp_path: Path) -> None:
    # OpenD's TCP port takes no credentials; whatever is passed must still leave no trace
    secret = "TOKEN-futu-5e4d3c2b1a"
    await record_futu(tmp_path, steps=300, credentials={"token": secret})
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    for run in (tmp_path / "journal" / "futu").iterdir():
        if run.is_dir():
            records, damage = read_journal(run)
            assert not damage and records


async def _all(conn: Any) -> list[bytes]:
    return [p async for p in conn]


async def test_a_stream_that_cannot_be_framed_is_kept_and_closed_with_1002() -> None:
    good = ff.pack(1004, 1, b"\x08\x00")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(good + good[:10])
        await writer.drain()
        writer.write(good[10:] + b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        try:
            await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()          # a handler's writer is not closed for it (3.11)
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with tcp_connect(f"tcp://127.0.0.1:{port}", PacketSplitter()) as conn:
            got = await asyncio.wait_for(_all(conn), 5)
            assert got[:2] == [good, good] and got[2].startswith(b"HTTP/1.1 400")
            assert conn.close_code == 1002 and "'FT'" in conn.close_reason
    finally:
        server.close()
        await server.wait_closed()


def all_written(sim: FutuSimulator) -> bool:
    """The simulator has played its last step and handed every packet it queued to the
    kernel (each counted in ``deliveries``): nothing it sends can still be on the way
    out. Checked on the simulator's loop."""
    return sim.done.is_set() and all(
        c.queue.empty() and c.writer.transport.get_write_buffer_size() == 0
        for c in sim.server.clients)


async def test_the_official_sdk_receives_cache_realtime_and_refill_ticks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))           # the SDK writes its log under $HOME
    sim = FutuSimulator(Adapter(cache_ticks=5), SYMBOLS, rate=150, steps=450, seed=3,
                        faults="upstream@200:60")
    url = await sim.start()
    port = int(url.rsplit(":", 1)[1])
    got: list[tuple[str, int, str]] = []
    errors: list[str] = []
    subscribed = threading.Event()
    finished = threading.Event()        # the test has seen the handler get all that was sent

    def sdk() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")         # the SDK's own deprecated calls
                # imported in this thread, futu/__init__ leaves the SIGINT handler alone
                from futu import RET_OK, OpenQuoteContext, SubType, TickerHandlerBase

                class Handler(TickerHandlerBase):  # type: ignore[misc]
                    def on_recv_rsp(self, rsp_pb: Any) -> Any:
                        ret, data = super().on_recv_rsp(rsp_pb)
                        if ret == RET_OK:
                            got.extend(data[["code", "sequence", "push_data_type"]]
                                       .itertuples(index=False, name=None))
                        return ret, data

                ctx = OpenQuoteContext(host="127.0.0.1", port=port)
                try:
                    ctx.set_handler(Handler())
                    ret, msg = ctx.subscribe(SYMBOLS, [SubType.TICKER])
                    if ret != RET_OK:
                        errors.append(str(msg))
                    subscribed.set()
                    if ret == RET_OK:
                        finished.wait(HANG_S)
                finally:
                    ctx.close()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=sdk, daemon=True)
    thread.start()
    try:
        # until the simulator has written everything and the handler has seen as many
        # ticks as it wrote (the SDK parses each push with pandas: seconds behind on a
        # starved machine); the comparison below says whether they are the same ones.
        # Twice: a writer woken by a just-drained buffer counts its packet in between.
        def caught_up() -> bool:
            return not thread.is_alive() or (all_written(sim)
                                             and len(got) >= len(sim.deliveries))
        for _ in range(2):
            await until(caught_up, HANG_S, "the SDK's handler: every tick written")
            await asyncio.sleep(0.05)
    finally:
        finished.set()
        while thread.is_alive():
            await asyncio.sleep(0.05)
        thread.join(5)
        await sim.stop()
    assert not errors and subscribed.is_set()
    assert not thread.is_alive()
    # the handler got exactly what the simulated OpenD wrote, in order
    names = {1: "REALTIME", 2: "BYDISCONN", 3: "CACHE"}
    assert got == [(s, q, names[p]) for s, q, p in sim.deliveries]
    kinds = Counter(p for _, _, p in got)
    assert kinds["CACHE"] > 0 and kinds["REALTIME"] > 0 and kinds["BYDISCONN"] > 0
    assert got[0][2] == "CACHE"
    assert sim.outages == [(201, 260)]


def tickrec(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tickrec", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


# each step waits for its condition, up to HANG_S: on a starved machine the steps together
# may take longer than the suite's 120 s
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_sim_record_and_gap_report(tmp_path: Path) -> None:
    sim = tickrec("sim", "futu", "--rate", "200", "--faults", "upstream@150:40")
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        assert url.startswith("tcp://127.0.0.1:")
        rec = tickrec("record", "futu", "--url", url, "--symbols", ",".join(SYMBOLS),
                      "--root", str(tmp_path), "--flush-seconds", "1")
        try:    # until the outage (steps 151-190) and its refill are journaled
            wait_journaled(tmp_path / "journal" / "futu",
                           lambda records: sum(r.direction == "in" for r in records) > 200,
                           proc=rec, limit=HANG_S)
            rec.send_signal(signal.SIGINT)
            out, err = rec.communicate(timeout=HANG_S)
        finally:
            reap([rec])
        assert rec.returncode == 0, err
        assert out.startswith("recorded")
    finally:
        sim.send_signal(signal.SIGINT)
        _, sim_err = sim.communicate(timeout=HANG_S)
    assert sim.returncode == 0 and "sent HK.00700" in sim_err
    report = subprocess.run([sys.executable, "-m", "tickrec", "gaps", "--root", str(tmp_path),
                             "--venue", "futu"], capture_output=True, text=True,
                            timeout=HANG_S, env=child_env(), check=False)
    assert report.returncode == 0, report.stderr
    assert "disconnect" in report.stdout and "futu:" in report.stdout
    bad = subprocess.run([sys.executable, "-m", "tickrec", "record", "futu", "--url",
                          "ws://127.0.0.1:1", "--symbols", "HK.00700", "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=HANG_S, env=child_env(),
                         check=False)
    assert bad.returncode == 2 and "tcp://" in bad.stderr and "Traceback" not in bad.stderr
