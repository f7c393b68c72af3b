"""Where things live in a store root, and names that never collide.

    ROOT/journal/<feed>/<session>/NNNNNN.tjr      write-ahead journal segments
    ROOT/journal/<feed>/<session>/checkpoint.json last frame published to Parquet
    ROOT/journal/<feed>/carry.json                gap accounting carried to the next run
    ROOT/<table>/venue=<venue>/date=<YYYY-MM-DD>/<session>-<n>.parquet

A session id holds the UTC start time, the host name, the process id and random
bits, so two hosts or two runs writing to one root never pick the same file name.
Symbols are data, never path components.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from schemas.errors import ConfigError

DAY_NS = 86_400 * 1_000_000_000
VENUES = ("alltick", "finazon", "noren", "hedgetech", "futu")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_root() -> Path:
    return Path(os.environ.get("TICKREC_ROOT") or "./data")


def host_name() -> str:
    return _SAFE.sub("-", os.environ.get("TICKREC_HOST") or socket.gethostname())[:40] or "host"


def new_session_id(now_ns: int | None = None) -> str:
    now = datetime.fromtimestamp((now_ns or time.time_ns()) / 1e9, tz=UTC)
    return f"{now:%Y%m%dT%H%M%S}-{host_name()}-{os.getpid()}-{secrets.token_hex(3)}"


def safe_name(name: str) -> str:
    """A feed name usable as one path component; raises ConfigError otherwise."""
    if not name or _SAFE.search(name) or name in (".", ".."):
        raise ConfigError(f"feed name {name!r} may only use letters, digits, '_', '-', '.'")
    return name


@lru_cache(maxsize=64)
def _date_of_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def date_of(ts_ns: int) -> str:
    """The UTC date (YYYY-MM-DD) of a nanosecond timestamp: the partition key."""
    return _date_of_day(ts_ns // DAY_NS)


def partition_dir(root: Path, table: str, venue: str, date: str) -> Path:
    return root / table / f"venue={venue}" / f"date={date}"


def journal_dir(root: Path, feed: str, session: str | None = None) -> Path:
    base = root / "journal" / safe_name(feed)
    return base / session if session else base


def parse_date(text: str) -> str:
    try:
        return datetime.strptime(text, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"bad date {text!r}: expected YYYY-MM-DD") from None
