"""The one exception root of tickrec and its families.

    TickrecError
    ├── ConfigError          bad command-line input, unknown venue, bad dates, bad config
    ├── StoreError           the store cannot be read or written
    │   └── JournalCorrupt   a journal segment is damaged beyond its torn tail
    ├── ProtocolError        a frame or packet a codec cannot accept (kept raw, counted)
    └── FeedError            a live feed failed
        └── PermanentFeedError   bad credentials, 1008: reconnecting will not help

Third-party errors are translated at the boundary (``raise X(...) from exc``), and
every message is one line with no secret in it.
"""

from __future__ import annotations


class TickrecError(Exception):
    """Root of every error tickrec raises on purpose."""


class ConfigError(TickrecError):
    """Input from the user (arguments, config, environment) is not usable."""


class StoreError(TickrecError):
    """The store cannot be read or written."""


class JournalCorrupt(StoreError):
    """A journal segment is damaged somewhere other than its torn tail."""


class ProtocolError(TickrecError):
    """A frame does not follow the venue's protocol."""


class FeedError(TickrecError):
    """A live feed failed; the recorder may reconnect."""


class PermanentFeedError(FeedError):
    """A live feed failed in a way reconnecting cannot fix (bad token, 1008)."""
