"""The ``tickrec`` command line: a thin layer, each command calls one library function.

Every error a user can cause ends as one line on stderr and a non-zero exit
status, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from schemas.errors import ConfigError, PermanentFeedError, TickrecError
from schemas.venues import NAMES
from storage.layout import default_root

VENUE = click.Choice(NAMES)

_Command = TypeVar("_Command", bound=Callable[..., Any])


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            where = f"tickrec {exc.ctx.info_name}" if exc.ctx and exc.ctx.parent else "tickrec"
            click.echo(f"tickrec: error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(2)
        except PermanentFeedError as exc:
            click.echo(f"tickrec: feed stopped: {exc}", err=True)
            sys.exit(3)
        except TickrecError as exc:
            click.echo(f"tickrec: error: {exc}", err=True)
            sys.exit(2 if isinstance(exc, ConfigError) else 1)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:            # `tickrec replay ... | head`: the reader left
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:
            click.echo(f"tickrec: error: {exc.strerror or exc}"
                       f"{': ' + str(exc.filename) if exc.filename else ''}", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug still gets one line, not a traceback
            logging.getLogger("tickrec").debug("internal error", exc_info=True)
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            click.echo(f"tickrec: internal error: {type(exc).__name__}: {first} "
                       "(run with -v for details)", err=True)
            sys.exit(1)


def root_option(exists: bool = False) -> Callable[[_Command], _Command]:
    # a plain string: click.Path would turn s3://b/p into s3:/b/p
    return click.option("--root", default=None,
                        help="Store root: a directory or s3://bucket/prefix "
                             "(default: $TICKREC_ROOT, else ./data).")


def journal_option() -> Callable[[_Command], _Command]:
    return click.option("--journal", default=None,
                        help="Local journal directory for an s3:// root (default: "
                             "$TICKREC_JOURNAL, else ~/.cache/tickrec/journal/<bucket>/<prefix>).")


def resolve_root(root: str | Path | None, must_exist: bool = False, *,
                 journal: str | None = None) -> Any:
    """The store root as given: a ``Path``, or a ``StoreRoot`` for ``s3://`` roots
    (docs/object-store.md)."""
    from storage.fs import StoreRoot, is_s3
    text = str(root) if root else (os.environ.get("TICKREC_ROOT") or "")
    if is_s3(text):
        store = StoreRoot.parse(text, journal)
        if must_exist and not store.is_store():
            raise ConfigError(f"store root {text!r} does not exist (no such bucket)")
        return store
    if journal:
        raise ConfigError("--journal is only for s3:// roots (a local root keeps its journal "
                          "in ROOT/journal)")
    r = Path(text) if text else default_root()
    if r.exists() and not r.is_dir():
        raise ConfigError(f"store root {str(r)!r} is not a directory (set --root or TICKREC_ROOT)")
    if must_exist and not r.is_dir():
        raise ConfigError(f"store root {str(r)!r} does not exist (set --root or TICKREC_ROOT)")
    return r


def symbols_list(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "auto_envvar_prefix": "TICKREC"})
@click.option("-v", "--verbose", is_flag=True, help="Log state changes to stderr.")
def main(verbose: bool) -> None:
    """tickrec: capture market-data feeds to Parquet, query them with SQL, replay them.

    Venues: alltick, finazon, noren, hedgetech, futu. Credentials come from
    environment variables (TICKREC_ALLTICK_TOKEN and the like), never from
    arguments.
    """
    setup_logging(verbose)
    if verbose:
        logging.getLogger("tickrec").setLevel(logging.DEBUG)


def _run_until_signal(coro_factory: Any, stop: Any) -> Any:
    async def runner() -> Any:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        return await coro_factory()
    return asyncio.run(runner())


@main.command()
@click.argument("venue", type=VENUE, metavar="VENUE")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, type=click.IntRange(0, 65535),
              help="Port (default: any free port).")
@click.option("--symbols", default=None, help="Comma-separated symbols (default: the venue's demo set).")
@click.option("--rate", default=None, type=float,
              help="Market steps per second (default: the venue's; AllTick 100, Finazon 1 = real time).")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the deterministic market.")
@click.option("--steps", default=None, type=int, help="Stop the market after this many steps.")
@click.option("--faults", default=None,
              help="Faults, e.g. 'disconnect@500,skip@200,dup@300,malformed@400,stall@600:5' "
                   "(futu also: upstream@N:K, an outage of OpenD's quote server then a refill).")
@click.option("--idle-timeout", default=30.0, show_default=True, type=float,
              help="Close a client that sent nothing for this long (vendor: 30 s).")
def sim(venue: str, host: str, port: int, symbols: str | None, rate: float | None, seed: int,
        steps: int | None, faults: str | None, idle_timeout: float) -> None:
    """A simulated VENUE server on loopback. Prints its URL on the first line.

    The market (step 1, and every fault's step) starts once a client has
    subscribed to every symbol, on every stream the venue has; a client that
    subscribes to less gets it 10 s after the first connection.

    Set TICKREC_SIM_TOKEN to make it reject clients with another token.
    """
    from replay.sim.server import Simulator, make_adapter
    from replay.sim.symbols import default_symbols
    syms = symbols_list(symbols) or default_symbols(venue)
    adapter = make_adapter(venue)
    sim_class = getattr(adapter, "simulator", Simulator)    # futu: a TCP server, not WebSocket
    simulator = sim_class(adapter, syms, rate=rate, seed=seed, faults=faults,
                          host=host, port=port, token=os.environ.get("TICKREC_SIM_TOKEN"),
                          idle_timeout=idle_timeout, steps=steps)
    stopped = asyncio.Event()

    async def serve() -> None:
        url = await simulator.start()
        click.echo(url)
        sys.stdout.flush()
        await stopped.wait()
        await simulator.stop()
        for sym, st in simulator.stats.items():
            click.echo(f"sent {sym}: {st.delivered} frames, seq {st.first_seq}..{st.last_seq}, "
                       f"skipped {len(st.skipped)}, duplicates {st.duplicates}", err=True)

    _run_until_signal(serve, stopped.set)


@main.command()
@click.argument("venue", type=VENUE, metavar="VENUE")
@click.option("--url", required=True, help="Feed URL (credentials come from the environment).")
@click.option("--symbols", required=True, help="Comma-separated symbols.")
@root_option()
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds.")
@click.option("--feed", default=None, help="Feed name for the journal (default: the venue).")
@click.option("--flush-seconds", type=click.FloatRange(0, min_open=True), default=30.0,
              show_default=True, help="Publish Parquet at least this often.")
@journal_option()
def record(venue: str, url: str, symbols: str, root: str | None, duration: float | None,
           feed: str | None, flush_seconds: float, journal: str | None) -> None:
    """Capture VENUE until SIGINT/SIGTERM or --duration; everything is flushed before exit.

    Credentials come from the environment: TICKREC_ALLTICK_TOKEN,
    TICKREC_FINAZON_TOKEN, TICKREC_HEDGETECH_TOKEN (the JWT), TICKREC_NOREN_UID +
    TICKREC_NOREN_ACTID + TICKREC_NOREN_TOKEN; futu (OpenD) needs none. A run of
    the same feed that died earlier is recovered from its journal first. Exit
    status 3 when the venue refuses the credentials (no reconnect loop).
    """
    from recorder.lean import lean_process
    lean_process()
    from recorder.run import record_feed
    syms = symbols_list(symbols)
    if not syms:
        raise ConfigError("--symbols is empty")
    summary = record_feed(venue, url, syms, resolve_root(root, journal=journal),
                          duration=duration, feed=feed,
                          flush_seconds=flush_seconds, progress=lambda line: click.echo(line, err=True))
    click.echo(summary)


@main.command()
@click.argument("sql")
@root_option()
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
def query(sql: str, root: str | None, fmt: str) -> None:
    """DuckDB SQL over the store's views: raw, trades, book, tickers, bars, bars_final, gaps, sessions."""
    _without_pandas()
    from storage.catalog import format_table, run_query
    click.echo(format_table(run_query(resolve_root(root, must_exist=True), sql), fmt))


@main.command()
@click.argument("venue", type=VENUE, metavar="VENUE")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--records", is_flag=True,
              help="Input is `tickrec replay --kind raw` JSON lines (both directions), not bare frames.")
def parse(venue: str, file: Any, records: bool) -> None:
    """Raw frames in (one per line, or FILE), normalized events out as JSON lines."""
    from tickrec.parse import parse_lines
    for line in parse_lines(venue, file, records=records):
        click.echo(line)


@main.command()
@root_option()
@click.option("--venue", type=VENUE, default=None)
@click.option("--date", default=None, help="UTC date YYYY-MM-DD.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
def gaps(root: str | None, venue: str | None, date: str | None, fmt: str) -> None:
    """The gap report: per venue and symbol, what is missing and why."""
    from tickrec.reports import gap_report
    click.echo(gap_report(resolve_root(root, must_exist=True), venue, date, fmt))


@main.command()
@root_option()
@journal_option()
def verify(root: str | None, journal: str | None) -> None:
    """Integrity check: files, schema versions, journals, and every row re-derived from raw.

    Exit status 1 when anything is wrong.
    """
    from tickrec.verify import verify as run_verify
    report = run_verify(resolve_root(root, must_exist=True, journal=journal))
    for line in report.notes:
        click.echo(f"note: {line}")
    for line in report.problems:
        click.echo(f"PROBLEM: {line}")
    click.echo(f"{report.files} files, {report.sessions} sessions, {report.rows_checked} rows "
               f"checked: {'ok' if report.ok else f'{len(report.problems)} problem(s)'}")
    if not report.ok:
        sys.exit(1)


def _without_pandas() -> None:
    """pyarrow's pandas probe answered "not installed" while ``pyarrow.dataset`` loads
    (``recorder.lean.skip_pandas_probe``): 31 MB less resident and 0.3-0.5 s less to
    start. Nothing in a replay or a query uses pandas; it still imports later if
    something asks."""
    from recorder.lean import skip_pandas_probe
    skip_pandas_probe("pyarrow.dataset")


def _replay_process() -> None:
    """Set up a replay process before anything imports pyarrow (``tickrec replay`` and
    ``tickrec serve``): Arrow on the C allocator, its C++ default too
    (``replay.use_system_pool``), and no pandas (``_without_pandas``)."""
    from recorder.lean import system_pool_first
    system_pool_first()
    _without_pandas()
    import replay as replay_pkg
    replay_pkg.use_system_pool()


@main.command()
@click.option("--venue", type=VENUE, required=True)
@root_option()
@click.option("--symbols", default=None, help="Comma-separated symbols (default: all).")
@click.option("--start", default=None, help="Start, UTC (ISO time or date), inclusive.")
@click.option("--end", default=None, help="End, UTC (ISO time or date), exclusive.")
@click.option("--speed", default="1", show_default=True,
              help="1 keeps the recorded spacing, 10 is ten times faster, 'max' does not wait.")
@click.option("--clock", type=click.Choice(["wall", "virtual"]), default="wall",
              help="'virtual' never sleeps: each event's own time is 'now' (backtests).")
@click.option("--kind", type=click.Choice(["events", "raw"]), default="events", show_default=True)
@click.option("--digest", "want_digest", is_flag=True,
              help="Print only the sha256 digest of the stream (and its event count).")
def replay(venue: str, root: str | None, symbols: str | None, start: str | None,
           end: str | None, speed: str, clock: str, kind: str, want_digest: bool) -> None:
    """Replay the store to stdout as JSON lines, in recorded order, paced by --speed."""
    _replay_process()
    import replay as replay_pkg
    from tickrec.replaying import replay_to

    store = resolve_root(root, must_exist=True)
    feed = replay_pkg.open(store, venue, symbols=symbols_list(symbols) or None, start=start,
                           end=end, speed=speed, clock=clock, kind=kind)
    line = asyncio.run(replay_to(feed, sys.stdout.buffer, want_digest))
    if line:
        click.echo(line)


@main.command()
@click.argument("venue", type=VENUE, metavar="VENUE")
@root_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, type=int, help="Port (default: any free port).")
@click.option("--speed", default="1", show_default=True,
              help="1 keeps the recorded spacing, 10 is ten times faster, 'max' does not wait.")
@click.option("--start", default=None, help="Start, UTC (ISO time or date), inclusive.")
@click.option("--end", default=None, help="End, UTC (ISO time or date), exclusive.")
@click.option("--symbols", default=None, help="Comma-separated symbols (default: all).")
@click.option("--queue-frames", default=4096, show_default=True, type=click.IntRange(min=2),
              help="Frames queued per client before its replay waits for it (back-pressure).")
def serve(venue: str, root: str | None, host: str, port: int, speed: str, start: str | None,
          end: str | None, symbols: str | None, queue_frames: int) -> None:
    """Serve the store's recorded frames in VENUE's own protocol. Prints its URL first.

    Unmodified vendor clients connect, log in, subscribe and receive the recorded
    data frames byte for byte, each client on its own clock from its first
    subscribe, paced by --speed; at the end of the range the server closes the
    connection. Set TICKREC_SERVE_TOKEN to reject clients with another token.
    """
    _replay_process()
    from replay.serve import ReplayServer
    server = ReplayServer(resolve_root(root, must_exist=True), venue, host=host, port=port,
                          speed=speed, start=start, end=end, symbols=symbols_list(symbols) or None,
                          token=os.environ.get("TICKREC_SERVE_TOKEN") or None,
                          queue_frames=queue_frames)
    if server.empty:
        click.echo(f"tickrec: warning: no {venue} frames in the store for this range", err=True)
    if venue == "futu" and os.environ.get("TICKREC_SERVE_TOKEN"):
        click.echo("tickrec: warning: OpenD takes no token; TICKREC_SERVE_TOKEN is ignored",
                   err=True)
    stopped = asyncio.Event()

    async def run() -> None:
        url = await server.start()
        click.echo(url)
        sys.stdout.flush()
        await stopped.wait()
        await server.stop()
        st = server.stats
        click.echo(f"served {st.started} replay(s) to {st.connected} client(s), "
                   f"{st.frames} frames, {st.finished} to the end of the range", err=True)

    _run_until_signal(run, stopped.set)


@main.command()
@click.option("--root", type=click.Path(path_type=Path), default=Path("demo-data"),
              show_default=True, help="Where the demo store goes (emptied if an earlier demo's).")
def demo(root: Path) -> None:
    """Simulator → record → query → replay, end to end, with a short report."""
    from tickrec.demo import run_demo
    if not run_demo(root, click.echo):
        sys.exit(1)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="The TOML config (see docs/capture.example.toml).")
@click.option("--root", default=None,
              help="Store root, a directory or s3://bucket/prefix (default: the config's "
                   "root, else $TICKREC_ROOT, else ./data).")
@journal_option()
def daemon(config_path: Path, root: str | None, journal: str | None) -> None:
    """The capture daemon: several feeds, schedules, end-of-day seal, health.

    Logs JSON lines on stderr. SIGTERM/SIGINT: publish everything and exit 0.
    SIGHUP: reload the config (unchanged feeds keep their connections). With an
    s3:// root the journal, the status file and the lock stay on local disk.
    """
    from recorder.lean import lean_process
    lean_process("recorder.daemon")
    from recorder.daemon import run_daemon
    from recorder.health import json_logging
    json_logging()
    run_daemon(config_path, root=root, journal=journal)


@main.command()
@root_option()
@click.option("--date", default=None, help="UTC date YYYY-MM-DD (default: every unsealed day "
                                          "before today).")
@click.option("--venue", "venues", multiple=True, type=VENUE, help="Only this venue (repeatable).")
@journal_option()
def compact(root: str | None, date: str | None, venues: tuple[str, ...],
            journal: str | None) -> None:
    """Seal days by hand: sorted large files, manifest, checks, journal trim.

    Exit status 1 when a check fails (nothing of that day is switched then). On
    an s3:// root the day is rewritten in the local journal directory and switched
    by writing its manifest (docs/object-store.md).
    """
    from datetime import UTC, datetime

    from storage.compact import seal_day, unsealed_days
    from storage.layout import parse_date
    r = resolve_root(root, must_exist=True, journal=journal)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    days = [parse_date(date)] if date else unsealed_days(r, today)
    if not days:
        click.echo(f"nothing to seal before {today}")
    ok = True
    for day in days:
        report = seal_day(r, day, list(venues) or None)
        for line in report.lines():
            click.echo(line)
        ok &= report.ok
    if not ok:
        sys.exit(1)


@main.command()
@root_option()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@journal_option()
def status(root: str | None, fmt: str, journal: str | None) -> None:
    """Health of the daemon's feeds (from ROOT/status/daemon.json; for an s3:// root,
    status/daemon.json in the local journal directory) and of the sealed days."""
    from tickrec.status import status_text
    click.echo(status_text(resolve_root(root, must_exist=True, journal=journal), fmt))
