"""Trading hours: when a venue's market is open, as a small pure helper.

``TradingHours.parse("Sat-Wed 09:00-15:00 Asia/Tehran")`` describes a market
open on the listed weekdays between two local wall-clock times of a named zone
(holidays are not modelled). Used to tell a quiet closed market from a stale
feed (``open_ns``), and by anything that has to know whether a market is open
now (``is_open``). No I/O, no clock: every answer depends only on its arguments.

Zones come from ``zoneinfo``. Minimal systems may have no time-zone database;
then ``zone()`` falls back to a fixed offset for the zones in ``FIXED_OFFSETS``
(Asia/Tehran = +03:30, right since Iran dropped daylight saving in 2022) and
raises ``ConfigError`` for any other name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")      # index = date.weekday()
FIXED_OFFSETS = {"Asia/Tehran": timedelta(hours=3, minutes=30), "UTC": timedelta(0)}
ALWAYS = ("", "always", "24/7", "none", "off")
_NS = 1_000_000_000
_MAX_DAYS = 3700            # a silence longer than ~10 years is simply "open" all along


@lru_cache(maxsize=32)
def zone(name: str) -> tzinfo:
    """The IANA zone ``name``; a fixed offset for known zones when tzdata is missing."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        if name in FIXED_OFFSETS:
            return timezone(FIXED_OFFSETS[name], name)
        raise ConfigError(f"unknown time zone {name!r} (is the tzdata package installed?)"
                          ) from None


def _days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.strip().partition("-")
        try:
            a = DAYS.index(first[:3])
            b = DAYS.index(last[:3]) if last else a
        except ValueError:
            raise ConfigError(f"bad weekdays {text!r}: expected e.g. Sat-Wed or Mon,Tue") from None
        while True:
            out.add(a)
            if a == b:
                break
            a = (a + 1) % 7
    return frozenset(out)


def _time(text: str) -> time:
    try:
        return time.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"bad time of day {text!r}: expected HH:MM") from None


@dataclass(frozen=True)
class TradingHours:
    """Open on ``days`` (0 = Monday) from ``opens`` to ``closes`` local time in ``zone_name``."""
    days: frozenset[int]
    opens: time
    closes: time
    zone_name: str = "UTC"

    @classmethod
    def parse(cls, spec: str) -> TradingHours:
        """``"DAYS HH:MM-HH:MM [ZONE]"``, e.g. ``"Sat-Wed 09:00-15:00 Asia/Tehran"``."""
        words = spec.split()
        if len(words) not in (2, 3):
            raise ConfigError(f"bad trading hours {spec!r}: "
                              "expected e.g. 'Sat-Wed 09:00-15:00 Asia/Tehran'")
        days = frozenset(range(7)) if words[0].lower() == "daily" else _days(words[0])
        start, sep, end = words[1].partition("-")
        if not sep:
            raise ConfigError(f"bad trading hours {words[1]!r}: expected HH:MM-HH:MM")
        hours = cls(days, _time(start), _time(end), words[2] if len(words) == 3 else "UTC")
        if hours.opens >= hours.closes:
            raise ConfigError(f"trading hours {words[1]!r} close before they open")
        zone(hours.zone_name)       # fail now, not at the first stale check
        return hours

    def __str__(self) -> str:
        days = ",".join(DAYS[d].title() for d in sorted(self.days))
        return f"{days} {self.opens:%H:%M}-{self.closes:%H:%M} {self.zone_name}"

    def _session(self, day: date) -> tuple[int, int]:
        tz = zone(self.zone_name)
        o = datetime.combine(day, self.opens, tzinfo=tz).timestamp()
        c = datetime.combine(day, self.closes, tzinfo=tz).timestamp()
        return int(o * _NS), int(c * _NS)

    def is_open(self, ts_ns: int) -> bool:
        """Whether the market is open at ``ts_ns`` (epoch ns)."""
        local = datetime.fromtimestamp(ts_ns / _NS, zone(self.zone_name))
        return local.weekday() in self.days and self.opens <= local.time() < self.closes

    def open_ns(self, start_ns: int, end_ns: int) -> int:
        """How many nanoseconds of [start_ns, end_ns) fall inside trading hours."""
        if end_ns <= start_ns:
            return 0
        tz = zone(self.zone_name)
        first = datetime.fromtimestamp(start_ns / _NS, tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end_ns / _NS, tz).date() + timedelta(days=1)
        if (last - first).days > _MAX_DAYS:
            return end_ns - start_ns
        total, day = 0, first
        while day <= last:
            if day.weekday() in self.days:
                o, c = self._session(day)
                total += max(0, min(c, end_ns) - max(o, start_ns))
            day += timedelta(days=1)
        return total


def parse_schedule(spec: str | None) -> TradingHours | None:
    """None for "always open" (None, "", "always", "24/7", "none", "off"), else the hours."""
    if spec is None or spec.strip().lower() in ALWAYS:
        return None
    return TradingHours.parse(spec)
