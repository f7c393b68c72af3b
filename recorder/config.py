"""The daemon's configuration: a TOML file (see docs/capture.example.toml).

``load(path)`` parses and checks it completely, so a bad file is one
``ConfigError`` line at start (or, on SIGHUP, a logged refusal that keeps the
running configuration). Secrets are never in the file: a feed names the
environment variables that hold its credentials (``token_env = "ALLTICK_TOKEN"``
or a ``[feeds.NAME.credentials]`` table ``key = "ENV_VAR"``); their values are
read only when the feed connects.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from schemas.errors import ConfigError
from schemas.schedule import TradingHours, zone
from schemas.venues import get
from storage.compact import SealOptions
from storage.fs import StoreRoot, is_s3
from storage.layout import safe_name

_NS = 1_000_000_000
_FEED_KEYS = {"venue", "url", "symbols", "options", "credentials", "schedule", "flush_seconds",
              "flush_rows", "idle_timeout", "reconnect_min", "stale_after", "enabled"}
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class FeedSchedule:
    """Trading windows (local times of ``zone_name``) on weekdays, minus holidays.

    Windows are ``TradingHours`` (schemas/schedule.py): "DAYS HH:MM-HH:MM"; a
    window that crosses midnight is written as two. Holidays are local dates.
    """
    windows: tuple[TradingHours, ...]
    holidays: frozenset[date] = frozenset()
    zone_name: str = "UTC"

    def _intervals(self, first: date, days: int) -> list[tuple[int, int]]:
        tz = zone(self.zone_name)
        out: list[tuple[int, int]] = []
        for i in range(days):
            day = first + timedelta(days=i)
            if day in self.holidays:
                continue
            for w in self.windows:
                if day.weekday() in w.days:
                    o = datetime.combine(day, w.opens, tzinfo=tz).timestamp()
                    c = datetime.combine(day, w.closes, tzinfo=tz).timestamp()
                    out.append((int(o * _NS), int(c * _NS)))
        merged: list[tuple[int, int]] = []
        for o, c in sorted(out):
            if merged and o <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(c, merged[-1][1]))
            else:
                merged.append((o, c))
        return merged

    def _local_day(self, ts_ns: int) -> date:
        return datetime.fromtimestamp(ts_ns / _NS, zone(self.zone_name)).date()

    def is_open(self, ts_ns: int) -> bool:
        first = self._local_day(ts_ns) - timedelta(days=1)
        return any(o <= ts_ns < c for o, c in self._intervals(first, 3))

    def next_change(self, ts_ns: int) -> int | None:
        """When the market next opens (if closed at ``ts_ns``) or closes (if open)."""
        first = self._local_day(ts_ns) - timedelta(days=1)
        for span in (16, 400):
            for o, c in self._intervals(first, span):
                if o <= ts_ns < c:
                    return c
                if o > ts_ns:
                    return o
        return None

    def __str__(self) -> str:
        hol = f" (+{len(self.holidays)} holiday(s))" if self.holidays else ""
        return "; ".join(str(w) for w in self.windows) + hol


@dataclass(frozen=True)
class FeedConfig:
    name: str
    venue: str
    url: str
    symbols: tuple[str, ...]
    credentials: tuple[tuple[str, str], ...] = ()     # (key, environment variable name)
    options: dict[str, Any] = field(default_factory=dict)
    schedule: FeedSchedule | None = None
    flush_seconds: float = 30.0
    flush_rows: int = 250_000
    idle_timeout: float | None = None
    reconnect_min: float | None = None
    stale_after: float | None = None                 # status "stale" after this silence
    enabled: bool = True


@dataclass(frozen=True)
class SealConfig:
    enabled: bool = True
    at_seconds: int = 300             # seconds after 00:00 UTC when yesterday is sealed
    roll_runs: bool = True            # start new journal runs at 00:00 UTC
    options: SealOptions = field(default_factory=SealOptions)


@dataclass(frozen=True)
class DaemonConfig:
    root: Path | StoreRoot          # StoreRoot for s3:// roots (journal on local disk)
    feeds: dict[str, FeedConfig]
    seal: SealConfig = field(default_factory=SealConfig)
    status_interval: float = 5.0
    metrics_port: int | None = None
    path: Path | None = None


def _type(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{where}: expected a number, not {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {getattr(kind, '__name__', 'a number')}, "
                          f"not {type(value).__name__}")
    return value


def _seconds_of_day(text: str, where: str) -> int:
    try:
        t = time.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected HH:MM or HH:MM:SS, not {text!r}") from None
    return t.hour * 3600 + t.minute * 60 + t.second


def _schedule(raw: Any, where: str) -> FeedSchedule:
    if isinstance(raw, str):
        raw = {"windows": [raw]}
    _type(raw, dict, where)
    unknown = set(raw) - {"zone", "windows", "holidays"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    zone_name = str(raw.get("zone", "UTC"))
    zone(zone_name)
    windows = raw.get("windows")
    if not isinstance(windows, list) or not windows:
        raise ConfigError(f"{where}.windows: expected a list like [\"Mon-Fri 09:30-16:00\"]")
    hours = []
    for w in windows:
        words = str(w).split()
        spec = str(w) if len(words) == 3 else f"{w} {zone_name}"
        hours.append(TradingHours.parse(spec))
    holidays = set()
    for h in raw.get("holidays", []):
        try:
            holidays.add(h if isinstance(h, date) else date.fromisoformat(str(h)))
        except ValueError:
            raise ConfigError(f"{where}.holidays: bad date {h!r} (YYYY-MM-DD)") from None
    return FeedSchedule(tuple(hours), frozenset(holidays), zone_name)


def _feed(name: str, raw: Any) -> FeedConfig:
    where = f"feeds.{name}"
    safe_name(name)
    _type(raw, dict, where)
    venue = str(raw.get("venue", ""))
    spec = get(venue) if venue else None
    if spec is None:
        raise ConfigError(f"{where}: 'venue' is required")
    cred_keys = {f"{k}_env" for k in spec.credentials}
    unknown = set(raw) - _FEED_KEYS - cred_keys
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    url = _type(raw.get("url"), str, f"{where}.url")
    symbols = _type(raw.get("symbols"), list, f"{where}.symbols")
    if not symbols or not all(isinstance(s, str) and s for s in symbols):
        raise ConfigError(f"{where}.symbols: expected a non-empty list of strings")
    creds: dict[str, str] = {}
    for k in spec.credentials:
        if f"{k}_env" in raw:
            creds[k] = _type(raw[f"{k}_env"], str, f"{where}.{k}_env")
    for k, env in _type(raw.get("credentials", {}), dict, f"{where}.credentials").items():
        creds[str(k)] = _type(env, str, f"{where}.credentials.{k}")
    for k, env in creds.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise ConfigError(f"{where}: credential {k!r} must name an environment variable "
                              f"(e.g. ALLTICK_TOKEN), not hold a value")
    reconnect_min = raw.get("reconnect_min")
    if reconnect_min is not None:
        _type(reconnect_min, (int, float), f"{where}.reconnect_min")
        floor = spec.client.reconnect_min
        if reconnect_min < floor and urlsplit(url).hostname not in _LOOPBACK:
            raise ConfigError(f"{where}.reconnect_min: {reconnect_min} is below {venue}'s floor "
                              f"of {floor}s (allowed only for loopback test servers)")

    def num(key: str, default: float) -> float:
        return float(_type(raw.get(key, default), (int, float), f"{where}.{key}"))

    def opt(key: str) -> float | None:
        return None if raw.get(key) is None else num(key, 0)

    feed = FeedConfig(
        name=name, venue=venue, url=url, symbols=tuple(symbols),
        credentials=tuple(sorted(creds.items())),
        options=dict(_type(raw.get("options", {}), dict, f"{where}.options")),
        schedule=_schedule(raw["schedule"], f"{where}.schedule") if "schedule" in raw else None,
        flush_seconds=num("flush_seconds", 30.0), flush_rows=int(num("flush_rows", 250_000)),
        idle_timeout=opt("idle_timeout"),
        reconnect_min=None if reconnect_min is None else float(reconnect_min),
        stale_after=opt("stale_after"),
        enabled=bool(_type(raw.get("enabled", True), bool, f"{where}.enabled")))
    spec.client(list(feed.symbols), {}, feed.options)      # let the venue check its options
    return feed


def _seal(raw: Any) -> SealConfig:
    _type(raw, dict, "seal")
    unknown = set(raw) - {"enabled", "at", "roll_runs", "trim_journal", "row_group_rows",
                          "file_rows", "memory_limit", "threads"}
    if unknown:
        raise ConfigError(f"seal: unknown key(s) {', '.join(sorted(unknown))}")
    d = SealOptions()
    rg = int(_type(raw.get("row_group_rows", d.row_group_rows), int, "seal.row_group_rows"))
    fr = int(_type(raw.get("file_rows", d.file_rows), int, "seal.file_rows"))
    if rg < 1 or fr < rg:
        raise ConfigError("seal: row_group_rows must be >= 1 and file_rows >= row_group_rows")
    opts = SealOptions(row_group_rows=rg, file_rows=fr,
                       memory_limit=str(raw.get("memory_limit", d.memory_limit)),
                       threads=int(raw.get("threads", 0)) or None,
                       trim_journal=bool(raw.get("trim_journal", True)))
    return SealConfig(enabled=bool(raw.get("enabled", True)),
                      at_seconds=_seconds_of_day(str(raw.get("at", "00:05")), "seal.at"),
                      roll_runs=bool(raw.get("roll_runs", True)), options=opts)


def parse(data: dict[str, Any], path: Path | None = None, *, root: str | None = None,
          journal: str | None = None) -> DaemonConfig:
    """The config in ``data`` (from ``path``); ``root``/``journal`` override its keys."""
    unknown = set(data) - {"root", "journal", "feeds", "seal", "status_interval", "metrics_port"}
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(sorted(unknown))}")
    store = _root(data, path, root, journal)
    feeds_raw = _type(data.get("feeds", {}), dict, "feeds")
    feeds = {name: _feed(name, raw) for name, raw in feeds_raw.items()}
    port = data.get("metrics_port")
    if port is not None and not (isinstance(port, int) and 0 <= port < 65536):
        raise ConfigError(f"metrics_port: expected 0..65535, not {port!r}")
    interval = float(_type(data.get("status_interval", 5.0), (int, float), "status_interval"))
    if interval <= 0:
        raise ConfigError("status_interval must be positive")
    return DaemonConfig(root=store, feeds=feeds, seal=_seal(data.get("seal", {})),
                        status_interval=interval, metrics_port=port, path=path)


def _root(data: dict[str, Any], path: Path | None, root: str | None,
          journal: str | None) -> Path | StoreRoot:
    """The store root: ``root`` (the command line), else the file's ``root`` (relative
    to the file's directory), else ``$TICKREC_ROOT``, else ``./data``. An ``s3://`` root
    keeps its journal (and the daemon's status and lock) in a local directory:
    ``journal`` (command line or file), else ``$TICKREC_JOURNAL``, else the XDG cache."""
    from_file = root is None and "root" in data
    text = (root or _type(data.get("root", ""), str, "root") or os.environ.get("TICKREC_ROOT")
            or "./data")
    if journal is None and "journal" in data:
        journal = _type(data["journal"], str, "journal")
        if path is not None and not Path(journal).is_absolute():
            journal = str(path.parent / journal)
    if is_s3(text):
        return StoreRoot.parse(text, journal)
    if journal:
        raise ConfigError("journal is only for s3:// roots (a local root keeps its journal "
                          "in ROOT/journal)")
    out = Path(text)
    if from_file and path is not None and not out.is_absolute():
        out = path.parent / out
    return out


def load(path: Path | str, *, root: str | None = None, journal: str | None = None
         ) -> DaemonConfig:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    return parse(data, path, root=root, journal=journal)
