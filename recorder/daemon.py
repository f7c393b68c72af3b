"""``tickrec daemon``: many feeds in one asyncio loop, unattended, with end of day.

One ``FeedRunner`` per configured feed drives one ``Recorder`` at a time (one
journal run): it waits while the feed's schedule is closed, parks the feed on a
permanent error (bad credentials, 1008) with the reason in the status, and
restarts it with back-off after any other crash of its task; a failing feed
never stops the others.

At 00:00 UTC (by the daemon's clock) every running recorder is rolled: its run
is closed (everything published, the run marked done) and a new one starts at
once, so each journal run covers about one day and can be removed once its
days are sealed. At ``seal.at`` every unsealed day before today is sealed
(``storage.compact.seal_day``) in a worker thread while capture goes on; at
start, interrupted seals are finished and missed days are sealed too.

Before any feed connects, every feed directory of the journal is recovered
(runs a killed process left are published into Parquet).

An ``s3://`` root (``storage.fs``): rolled files and seals go to the bucket; the
journal runs, the status file and the daemon's lock stay in the root's local
journal directory (``Daemon.local``).

Signals: SIGTERM/SIGINT stop reading, publish everything and return (exit 0);
SIGHUP reloads the config file: feeds added, removed or changed are started,
stopped or restarted; a feed whose config is unchanged keeps its connection
(a parked one is retried).

The clock is injectable (``clock=RecvClock(start_ns)``): it drives both the
receive timestamps of every recorder and the daemon's day boundary, schedule
and seal times, so a test can cross midnight without waiting for one.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from recorder.backoff import backoff
from recorder.capture import RecvClock, recover
from recorder.config import DaemonConfig, FeedConfig, load
from recorder.health import FeedHealth, MetricsServer, iso, prometheus, status_file
from recorder.live import Recorder
from recorder.run import credentials_from_env
from schemas.errors import ConfigError, PermanentFeedError, StoreError
from schemas.events import Status
from schemas.venues import get
from storage import compact
from storage.atomic import remove_json_temps, write_json
from storage.fs import StoreRoot
from storage.journal_trim import TRASH, unfinished_runs
from storage.layout import DAY_NS, date_of

log = logging.getLogger("tickrec.daemon")
TICK_S = 0.2
seal_day = compact.seal_day          # module attribute: tests wrap it


def _event(level: int, event: str, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": {"event": event, **fields}})


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    if isinstance(exc, (ConfigError, PermanentFeedError)):
        return text
    return f"{type(exc).__name__}: {text}"


class FeedRunner:
    """One feed: schedule, recorder runs, rolls, parking and restarts."""

    def __init__(self, daemon: Daemon, cfg: FeedConfig, health: FeedHealth | None = None) -> None:
        self.d = daemon
        self.cfg = cfg
        self.health = health or FeedHealth(cfg.name, cfg.venue)
        self.health.venue = cfg.venue
        self.recorder: Recorder | None = None
        self.task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()           # a roll was asked for
        self._rolled: list[asyncio.Future[None]] = []

    # -- control ------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"feed {self.cfg.name}")

    async def stop(self) -> None:
        self._stop.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def roll(self) -> None:
        """Close the live run (if any) and start a new one; returns when the old run is done."""
        if self.recorder is None or self.task is None or self.task.done():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rolled.append(fut)
        self._wake.set()
        await fut

    def set_state(self, state: str, reason: str = "") -> None:
        h = self.health
        if state == h.state and reason == h.reason:
            return
        h.state, h.reason, h.since_ns = state, reason, self.d.now()
        level = logging.WARNING if state in ("parked", "backoff") else logging.INFO
        why = f" ({reason})" if reason else ""
        _event(level, "feed_state", f"{self.cfg.name}: {state}{why}", feed=self.cfg.name,
               venue=self.cfg.venue, state=state, reason=reason)

    # -- the loop -----------------------------------------------------------------------
    async def _sleep(self, seconds: float | None) -> None:
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({stop}, timeout=seconds)
        finally:
            stop.cancel()

    async def _main(self) -> None:
        delays = backoff(1.0, 60.0)
        try:
            while not self._stop.is_set():
                if not self.cfg.enabled:
                    self.set_state("disabled")
                    await self._sleep(None)
                    continue
                sched, now = self.cfg.schedule, self.d.now()
                if sched is not None and not sched.is_open(now):
                    nxt = sched.next_change(now)
                    self.set_state("closed", f"schedule: opens {iso(nxt)}" if nxt
                                   else "schedule: never opens")
                    self._resolve_rolls()
                    await self._sleep(None if nxt is None else max(0.05, (nxt - now) / 1e9))
                    continue
                started = time.monotonic()
                try:
                    await self._one_run()
                except PermanentFeedError as exc:
                    self.set_state("parked", _first_line(exc))
                    self._resolve_rolls()
                    await self._sleep(None)
                    continue
                except ConfigError as exc:             # e.g. a credential variable is unset
                    self.set_state("parked", _first_line(exc))
                    self._resolve_rolls()
                    await self._sleep(None)
                    continue
                except Exception as exc:  # noqa: BLE001 - one feed's crash never stops the others
                    self.health.restarts += 1
                    wait = next(delays)
                    self.set_state("backoff", f"{_first_line(exc)}; restart in {wait:.1f}s")
                    self._resolve_rolls()
                    await self._sleep(wait)
                    continue
                if time.monotonic() - started > 60:
                    delays = backoff(1.0, 60.0)
        finally:
            self._resolve_rolls()
            self.set_state("stopped")

    def _resolve_rolls(self) -> None:
        for fut in self._rolled:
            if not fut.done():
                fut.set_result(None)
        self._rolled.clear()
        self._wake.clear()

    def _credentials(self) -> dict[str, str]:
        if not self.cfg.credentials:
            return credentials_from_env(self.cfg.venue)
        out = {}
        for key, env in self.cfg.credentials:
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"environment variable {env} (credential {key!r}) is not set")
            out[key] = value
        return out

    async def _one_run(self) -> None:
        cfg = self.cfg
        rec = Recorder(cfg.venue, cfg.url, cfg.symbols, self.d.root, feed=cfg.name,
                       credentials=self._credentials(), options=cfg.options, sink=self._sink,
                       flush_seconds=cfg.flush_seconds, flush_rows=cfg.flush_rows,
                       idle_timeout=cfg.idle_timeout, reconnect_min=cfg.reconnect_min,
                       clock=self.d.clock)
        self.recorder = rec
        self.health.runs += 1
        self.set_state("connecting")
        task = asyncio.create_task(rec.run(), name=f"recorder {cfg.name}")
        stop = asyncio.create_task(self._stop.wait())
        wake = asyncio.create_task(self._wake.wait())
        close_in: float | None = None
        if cfg.schedule is not None:
            now = self.d.now()
            nxt = cfg.schedule.next_change(now)
            close_in = None if nxt is None else max(0.0, (nxt - now) / 1e9)
        try:
            await asyncio.wait({task, stop, wake}, timeout=close_in,
                               return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                rec.stop()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            stop.cancel()
            wake.cancel()
            self._fold(rec)
            self.recorder = None
            if wake.done() or self._rolled:
                self._resolve_rolls()
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure

    def _fold(self, rec: Recorder) -> None:
        """Add a finished recorder's counters to the feed's totals."""
        h, cap = self.health, rec.capture
        h.connections += rec.connections
        h.reconnects += max(0, rec.connections - 1)
        if cap is not None:
            h.frames += cap.frames_in
            h.rows += cap.norm.rows
            if cap.last_in_ns is not None:
                h.last_frame_ns = cap.last_in_ns

    async def _sink(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Status):
                if ev.kind == "connected":
                    self.set_state("connected")
                elif ev.kind == "disconnected" and not self._stop.is_set():
                    self.set_state("disconnected", ev.detail[:200])
            elif ev.TABLE == "gaps":
                day = date_of(ev.ts_recv)
                self.health.gaps_by_date[day] = self.health.gaps_by_date.get(day, 0) + 1

    # -- status -------------------------------------------------------------------------
    def snapshot(self, now: int, today: str) -> dict[str, Any]:
        h, rec = self.health, self.recorder
        cap = rec.capture if rec is not None else None
        frames = h.frames + (cap.frames_in if cap else 0)
        rows = h.rows + (cap.norm.rows if cap else 0)
        h.sample(frames, rows)
        fpm, rpm = h.per_minute()
        last = (cap.last_in_ns if cap and cap.last_in_ns else None) or h.last_frame_ns
        age = None if last is None else max(0.0, (now - last) / 1e9)
        live = cap.dir.name if cap else None
        feed_dir = self.d.local / "journal" / self.cfg.name
        unfinished = [p for p in unfinished_runs(self.d.local, self.cfg.name) if p.name != live]
        runs = [p for p in feed_dir.glob("*") if p.is_dir() and not p.name.startswith(TRASH)] \
            if feed_dir.is_dir() else []
        stale_after = self.cfg.stale_after or get(self.cfg.venue).client.idle_timeout / 2
        return {
            "venue": self.cfg.venue, "state": h.state, "reason": h.reason,
            "since": iso(h.since_ns),
            "schedule": str(self.cfg.schedule) if self.cfg.schedule else None,
            "connections": h.connections + (rec.connections if rec else 0),
            "reconnects": h.reconnects + (max(0, rec.connections - 1) if rec else 0),
            "runs": h.runs, "restarts": h.restarts, "frames": frames, "rows": rows,
            "frames_per_min": round(fpm, 1), "rows_per_min": round(rpm, 1),
            "last_frame": iso(last), "last_frame_age_s": None if age is None else round(age, 3),
            "stale": bool(h.state == "connected" and age is not None and age > stale_after),
            "gaps_today": h.gaps_by_date.get(today, 0),
            "unpublished_records": (cap.records - cap.writer.published_records) if cap else 0,
            "unfinished_runs": len(unfinished), "journal_runs": len(runs),
        }


class Daemon:
    """The capture daemon for one store root. ``run()`` until ``stop()``."""

    def __init__(self, config: DaemonConfig, *, clock: RecvClock | None = None,
                 root: str | None = None, journal: str | None = None) -> None:
        self.cfg = config
        self.root = config.root
        # journal runs, the status file and the lock: on local disk, also for s3:// roots
        self.local: Path = self.root.journal if isinstance(self.root, StoreRoot) else self.root
        self._given = {"root": root, "journal": journal}       # command-line overrides
        self.clock = clock
        self.now: Callable[[], int] = clock.now if clock is not None else time.time_ns
        self.runners: dict[str, FeedRunner] = {}
        self.metrics: MetricsServer | None = None
        self.started_ns = self.now()
        self.seal: dict[str, Any] = {"running": None, "last_date": None, "last_ok": None,
                                     "last_ok_ns": None, "failures": 0, "problems": [],
                                     "unsealed": [], "next_at": None}
        self._stop = asyncio.Event()            # not bound to a loop until awaited (3.10+)
        self._reload_lock = asyncio.Lock()
        self._lock_fh: Any = None
        self._day = ""
        self._sealed_for = ""

    # -- control --------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        """Re-read the config file (SIGHUP); runs as a task on the daemon's loop."""
        asyncio.get_running_loop().create_task(self._reload())

    async def run(self) -> None:
        self._take_root()
        _event(logging.INFO, "daemon_started", f"daemon started on {self.root}",
               root=str(self.root), feeds=sorted(self.cfg.feeds), pid=os.getpid())
        try:
            await asyncio.to_thread(self._recover_all)
            if self.cfg.metrics_port is not None:
                await self._start_metrics(self.cfg.metrics_port)
            for fc in self.cfg.feeds.values():
                self._start_feed(fc)
            status = asyncio.create_task(self._status_loop())
            eod = asyncio.create_task(self._eod_loop())
            await self._stop.wait()
            _event(logging.INFO, "daemon_stopping", "stopping: publishing everything")
            eod.cancel()
            await asyncio.gather(*(r.stop() for r in self.runners.values()))
            await asyncio.gather(eod, return_exceptions=True)
            status.cancel()
            await asyncio.gather(status, return_exceptions=True)
            await asyncio.to_thread(self.write_status)
        finally:
            if self.metrics is not None:
                await self.metrics.stop()
            self._release_root()
        _event(logging.INFO, "daemon_stopped", "daemon stopped")

    def _take_root(self) -> None:
        path = status_file(self.root).with_name("daemon.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ConfigError(f"another tickrec daemon is running on {self.root}") from None
        self._lock_fh = fh
        remove_json_temps(status_file(self.root))     # a killed daemon's half-written status

    def _release_root(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _recover_all(self) -> None:
        """Finish interrupted seals; publish every journal run a killed process left."""
        for date in compact.recover_seals(self.root):
            _event(logging.WARNING, "seal_recovered", f"finished the interrupted seal of {date}",
                   date=date)
        base = self.local / "journal"
        feeds = set(self.cfg.feeds)
        if base.is_dir():
            feeds |= {p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")}
        for feed in sorted(feeds):
            for line in recover(self.root, feed).lines():
                _event(logging.WARNING, "recovered", f"{feed}: {line}", feed=feed)

    def _start_feed(self, fc: FeedConfig, health: FeedHealth | None = None) -> None:
        runner = FeedRunner(self, fc, health)
        self.runners[fc.name] = runner
        runner.start()

    async def _start_metrics(self, port: int) -> None:
        self.metrics = MetricsServer(lambda: prometheus(self.status()), port)
        try:
            bound = await self.metrics.start()
        except OSError as exc:
            _event(logging.ERROR, "metrics_failed", f"metrics port {port}: {exc.strerror or exc}")
            self.metrics = None
            return
        _event(logging.INFO, "metrics_listening", f"metrics on http://127.0.0.1:{bound}/metrics",
               port=bound)

    # -- reload ---------------------------------------------------------------------------
    async def _reload(self) -> None:
        async with self._reload_lock:
            path = self.cfg.path
            if path is None:
                return
            try:
                new = await asyncio.to_thread(lambda: load(path, **self._given))
            except ConfigError as exc:
                _event(logging.ERROR, "reload_refused", f"config not reloaded: {exc}")
                return
            if _where(new.root) != _where(self.root):
                _event(logging.WARNING, "reload_root", "a new root takes effect at restart only")
                new = replace(new, root=self.root)
            added, removed, changed = [], [], []
            for name in list(self.runners):
                if name not in new.feeds:
                    removed.append(name)
                    await self.runners.pop(name).stop()
            for name, fc in new.feeds.items():
                old = self.runners.get(name)
                if old is None:
                    added.append(name)
                    self._start_feed(fc)
                elif old.cfg != fc or old.health.state == "parked":
                    changed.append(name)
                    await old.stop()
                    self._start_feed(fc, old.health)
            if new.metrics_port != self.cfg.metrics_port:
                if self.metrics is not None:
                    await self.metrics.stop()
                    self.metrics = None
                if new.metrics_port is not None:
                    await self._start_metrics(new.metrics_port)
            self.cfg = new
            _event(logging.INFO, "config_reloaded",
                   f"config reloaded: {len(added)} added, {len(removed)} removed, "
                   f"{len(changed)} restarted", added=added, removed=removed, restarted=changed)

    # -- end of day -------------------------------------------------------------------------
    async def _eod_loop(self) -> None:
        self._day = date_of(self.now())
        if self.cfg.seal.enabled:
            await self._seal_due(self._day)
        while True:
            await asyncio.sleep(TICK_S)
            now = self.now()
            today = date_of(now)
            if today != self._day:
                if self.cfg.seal.roll_runs:
                    _event(logging.INFO, "day_roll", f"new UTC day {today}: rolling journal runs",
                           date=today)
                    await asyncio.gather(*(r.roll() for r in list(self.runners.values())))
                self._day = today
            seal = self.cfg.seal
            due = now - now % DAY_NS + seal.at_seconds * 1_000_000_000
            self.seal["next_at"] = iso(due if now < due else due + DAY_NS)
            if seal.enabled and self._sealed_for != today and now >= due:
                await self._seal_due(today)

    async def _seal_due(self, today: str) -> None:
        """Seal every unsealed day before ``today`` (the seal runs in a worker thread)."""
        self._sealed_for = today
        try:
            days = await asyncio.to_thread(compact.unsealed_days, self.root, today)
        except (OSError, StoreError) as exc:
            _event(logging.ERROR, "seal_failed", f"cannot list days to seal: {exc}")
            self.seal["failures"] += 1
            return
        for day in days:
            self.seal["running"] = day
            try:
                report = await asyncio.to_thread(seal_day, self.root, day,
                                                 options=self.cfg.seal.options, log=self._seal_log)
            except Exception as exc:  # noqa: BLE001 - a failed seal is retried next time
                self.seal["failures"] += 1
                self.seal["problems"] = [_first_line(exc)]
                _event(logging.ERROR, "seal_failed", f"seal of {day} failed: {_first_line(exc)}",
                       date=day)
                continue
            finally:
                self.seal["running"] = None
            self.seal["last_date"] = day
            self.seal["last_ok"] = report.ok
            if report.ok:
                self.seal["last_ok_ns"] = self.now()
                self.seal["problems"] = []
            else:
                self.seal["failures"] += 1
                self.seal["problems"] = report.problems[:20]
            _event(logging.INFO if report.ok else logging.ERROR,
                   "seal_done" if report.ok else "seal_failed",
                   f"seal of {day}: {'ok' if report.ok else 'verification FAILED'}",
                   date=day, ok=report.ok, partitions=sum(p.resealed for p in report.partitions),
                   rows=sum(p.rows for p in report.partitions),
                   runs_trimmed=len(report.runs_trimmed), seconds=round(report.seconds, 2),
                   problems=report.problems[:5])
        self.seal["unsealed"] = await asyncio.to_thread(compact.unsealed_days, self.root, today)

    def _seal_log(self, event: str, fields: dict[str, Any]) -> None:
        _event(logging.INFO, event, f"{event.replace('_', ' ')} {fields.get('date', '')}".strip(),
               **fields)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.now()
        today = date_of(now)
        return {
            "pid": os.getpid(), "started": iso(self.started_ns), "started_ns": self.started_ns,
            "updated": iso(now), "updated_ns": now, "wall_ns": time.time_ns(),
            "status_interval": self.cfg.status_interval, "root": str(self.root),
            "config": str(self.cfg.path) if self.cfg.path else None,
            "metrics": (f"http://127.0.0.1:{self.metrics.port}/metrics"
                        if self.metrics is not None else None),
            "feeds": {n: r.snapshot(now, today) for n, r in sorted(self.runners.items())},
            "seal": dict(self.seal),
        }

    def write_status(self) -> None:
        write_json(status_file(self.root), self.status())

    async def _status_loop(self) -> None:
        while True:
            try:
                snap = self.status()
                await asyncio.to_thread(write_json, status_file(self.root), snap)
            except OSError as exc:
                _event(logging.ERROR, "status_failed", f"cannot write the status file: {exc}")
            await asyncio.sleep(self.cfg.status_interval)


def _where(root: Path | StoreRoot) -> str:
    return root.uri if isinstance(root, StoreRoot) else str(root.resolve())


def run_daemon(config_path: Path | str, *, clock: RecvClock | None = None,
               root: str | None = None, journal: str | None = None) -> None:
    """Load the config and run until SIGTERM/SIGINT; SIGHUP reloads.

    ``root`` / ``journal`` override the config file's (``tickrec daemon --root``)."""
    cfg = load(config_path, root=root, journal=journal)
    daemon = Daemon(cfg, clock=clock, root=root, journal=journal)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)
        await daemon.run()

    asyncio.run(main())
