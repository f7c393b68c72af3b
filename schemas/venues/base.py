"""The seams every venue codec fills: a Decoder, a Client and a ServerSession.

All three are sans-I/O (STYLE.md, websockets' protocol core): bytes or text go
in, events and frames to send come out; nothing here touches a socket, a clock
or a file. The recorder, the replay server, the simulator, ``tickrec parse`` and
journal recovery all drive the same classes.

Decoder
    ``feed(rec)`` takes every journal record of a session in order (frames in
    both directions and the open/close events) and returns the events it
    produced. State depends only on the records fed, so re-feeding a session's
    journal or its ``raw`` rows reproduces the stored rows exactly. ``feed``
    never raises: a frame it cannot accept becomes a ``rejected`` gap.
    ``feed_batch(recs)`` is the same for a run of incoming frames, with a venue's
    optional columnar fast path (``FastRun``) for its hot pushes.
Client
    What a recorder sends: the dial target (URL, headers) with its redacted
    twin, opening frames, heartbeats, answers to what arrived, and whether a
    close is worth reconnecting after.
ServerSession
    One connection of the venue's server side: authentication, replies to
    client frames, which pushes the client wants, idle timeout.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from schemas.errors import ProtocolError
from schemas.events import EVENT_CLASSES, Event, Gap, RawRecord, Status
from schemas.gaps import GapSpec, SequenceTracker

MAX_FRAME_BYTES = 1 << 20
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _fields_of(cls: type, kinds: tuple[str, ...]) -> tuple[str, ...]:
    hints = {n: str(t) for n, t in getattr(cls, "__annotations__", {}).items()}
    for base in cls.__mro__[1:]:
        for n, t in getattr(base, "__annotations__", {}).items():
            hints.setdefault(n, str(t))
    ours = ("TABLE", "venue", "session", "ts_recv", "frame", "pos", "depth", "kind")
    return tuple(n for n, t in hints.items() if n not in ours and t.split(" | ")[0] in kinds)


# Per event table: the fields that become int64 columns, text columns, int64 lists.
_INTS = {t: _fields_of(c, ("int",)) for t, c in EVENT_CLASSES.items()}
_TEXTS = {t: _fields_of(c, ("str",)) for t, c in EVENT_CLASSES.items()}
_INT_LISTS = {t: _fields_of(c, ("list[int]",)) for t, c in EVENT_CLASSES.items()}
_FLOATS = {t: _fields_of(c, ("float",)) for t, c in EVENT_CLASSES.items()}
_FLOAT_LISTS = {t: _fields_of(c, ("list[float]",)) for t, c in EVENT_CLASSES.items()}


def _i64(v: int | None) -> int | None:
    return v if v is None or _INT64_MIN <= v <= _INT64_MAX else None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def check_text(payload: bytes) -> None:
    """Raise ``ProtocolError`` for a JSON frame whose text is not valid Unicode.

    Two ways lead there past ``json.loads``: bytes that encode a surrogate (JSON's
    decoder lets them through) and a ``\\ud800``-style escape that is not half of
    a pair. Either would put an unstorable string into the venue's state and rows.
    Any frame kind (a JSON venue may send binary frames); a payload that is not
    JSON is left to the venue's decoder. Fast for ordinary frames: two byte scans;
    the exact check (parse and walk) runs only when one of them hits.
    """
    suspect = False
    if b"\xed" in payload:
        try:
            payload.decode()
        except UnicodeDecodeError:
            suspect = True
    if not suspect and _SURROGATE_ESCAPE.search(payload) is None:
        return
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return          # not JSON: the venue's decoder rejects it in its own words
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                raise ProtocolError(f"text is not valid Unicode (a lone surrogate): "
                                    f"{v[:40]!r}") from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def check_storable(events: Sequence[Event | Status]) -> None:
    """Raise ``ProtocolError`` if an event holds a value its Parquet column cannot, or
    one that is never data: an integer outside int64, text that is not valid Unicode
    (a lone surrogate, from a JSON ``\\ud800`` escape), a NaN or infinite number.
    Run on every record fed, so no decoded value can fail a publish; cheap (ASCII
    text, small ints and finite floats are the fast path)."""
    for ev in events:
        table = ev.TABLE
        if table == "status":
            continue
        for name in _FLOATS[table]:
            v = getattr(ev, name)
            if v is not None and v - v != 0.0:          # NaN or ±inf
                raise ProtocolError(f"{name} is not finite: {v!r}")
        for name in _FLOAT_LISTS[table]:
            total = sum(getattr(ev, name) or ())
            if total - total != 0.0:
                raise ProtocolError(f"{name} holds a number that is not finite")
        for name in _INTS[table]:
            v = getattr(ev, name)
            if v is not None and not _INT64_MIN <= v <= _INT64_MAX:
                raise ProtocolError(f"{name} out of the int64 range: {str(v)[:40]}")
        for name in _TEXTS[table]:
            v = getattr(ev, name)
            if v is not None and not v.isascii():
                try:
                    v.encode()
                except UnicodeEncodeError:
                    raise ProtocolError(f"{name} is not valid Unicode: {v[:40]!r}") from None
        for name in _INT_LISTS[table]:
            for v in getattr(ev, name) or ():
                if not _INT64_MIN <= v <= _INT64_MAX:
                    raise ProtocolError(f"{name} out of the int64 range: {str(v)[:40]}")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame to send; ``stored`` is what the journal keeps (secrets removed)."""
    payload: bytes | str
    stored: bytes

    @classmethod
    def text(cls, obj: Any, redacted: Any | None = None) -> Outgoing:
        wire = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        kept = wire if redacted is None else json.dumps(redacted, separators=(",", ":"),
                                                         ensure_ascii=False)
        return cls(wire, kept.encode())

    @property
    def kind(self) -> str:
        return "text" if isinstance(self.payload, str) else "binary"


@dataclass(frozen=True, slots=True)
class Dial:
    url: str                       # what is dialled (may hold a token)
    redacted_url: str              # what is stored and logged
    headers: Mapping[str, str] = field(default_factory=dict)


class FrameContext:
    """Where the events of one record go, numbered by their position in it."""
    __slots__ = ("venue", "session", "rec", "events", "pos")

    def __init__(self, venue: str, session: str, rec: RawRecord) -> None:
        self.venue = venue
        self.session = session
        self.rec = rec
        self.events: list[Event | Status] = []
        self.pos = 0

    def add(self, cls: type, **kw: Any) -> None:
        self.events.append(cls(venue=self.venue, ts_recv=self.rec.ts_recv, session=self.session,
                               frame=self.rec.frame, pos=self.pos, **kw))
        self.pos += 1

    def gaps(self, specs: Sequence[GapSpec]) -> None:
        for g in specs:
            # sequence arithmetic on extreme (but int64) numbers can leave int64: unknown
            self.add(Gap, symbol=g.symbol, ts_event=None, seq=None, stream=g.stream, kind=g.kind,
                     ts_start=g.ts_start, ts_end=g.ts_end, seq_from=_i64(g.seq_from),
                     seq_to=_i64(g.seq_to), missing=_i64(g.missing), detail=g.detail)

    def status(self, kind: str, detail: str = "") -> None:
        self.events.append(Status(self.venue, kind, self.rec.ts_recv, detail))


def reject(ctx: FrameContext, exc: BaseException) -> None:
    """The frame's events become one ``rejected`` gap saying why."""
    reason = str(exc) if isinstance(exc, ProtocolError) else f"{type(exc).__name__}: {exc}"
    reason = reason.encode("utf-8", "replace").decode()     # storable whatever it quotes
    ctx.events.clear()
    ctx.pos = 0
    ts = ctx.rec.ts_recv
    ctx.gaps([GapSpec("", "", "rejected", ts, ts,
                      detail=reason.splitlines()[0][:300] if reason else "rejected")])


@dataclass
class FastRun:
    """What a columnar fast path decoded for consecutive incoming records, each of
    which gave exactly one row, at ``pos`` 0, and no other event: the rows per event
    table (Arrow, the table's schema, in record order) and, on demand, the same rows
    as the event objects ``feed`` returns (for a live consumer)."""
    tables: dict[str, pa.Table]
    events: Callable[[], list[Event]]


class Decoder(ABC):
    venue: ClassVar[str]

    def __init__(self, session: str = "") -> None:
        self.session = session
        self.tracker = SequenceTracker()

    def feed(self, rec: RawRecord) -> list[Event | Status]:
        ctx = FrameContext(self.venue, self.session, rec)
        try:
            if rec.direction == "in":
                if len(rec.payload) > MAX_FRAME_BYTES:
                    raise ProtocolError(f"frame of {len(rec.payload)} bytes is over the limit")
                check_text(rec.payload)
                self.on_incoming(rec, ctx)
            elif rec.direction == "out":
                check_text(rec.payload)
                self.on_outgoing(rec, ctx)
            elif rec.kind == "open":
                self._on_open(rec)
            elif rec.kind == "close":
                self.on_close(rec)
            elif rec.kind == "error" and rec.note and rec.note.startswith('{"pause"'):
                self.on_pause(rec, ctx)
            if ctx.events:
                check_storable(ctx.events)
        except Exception as exc:  # noqa: BLE001 - a bad frame must never stop a recorder
            reject(ctx, exc)
        return ctx.events

    def batchable(self, rec: RawRecord) -> bool:
        """Whether ``rec`` may wait for ``feed_batch`` (a hot push: its reference
        decoding never gives a ``Status``, so nothing the client reacts to is late)."""
        return False

    def feed_batch(self, recs: Sequence[RawRecord]) -> list[FastRun | list[Event | Status]]:
        """``feed`` for a run of incoming records, in order: per record its events, or a
        ``FastRun`` for consecutive records a fast path decoded. The rows (and events)
        are exactly those ``feed`` gives record by record, and so is the state after."""
        return [self.feed(rec) for rec in recs]

    def _on_open(self, rec: RawRecord) -> None:
        note = json.loads(rec.note) if rec.note else {}
        if "resume" in note:
            self.tracker.load(note["resume"])
        if note.get("decoder"):
            self.configure(note["decoder"])

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply the settings a client recorded in the session's open record
        (``Client.decoder_options``): staleness thresholds, schedules. Unknown keys
        are ignored, so old journals decode with newer code."""

    def on_pause(self, rec: RawRecord, ctx: FrameContext) -> None:
        """The recorder stopped reading because the store could not be written (disk
        full) from ``since`` until this record: one ``stale`` gap per known stream
        (one for the feed if none is known yet). Frames were delayed, not dropped;
        anything the venue dropped meanwhile shows as its own gap."""
        info = json.loads(rec.note or "{}")["pause"]
        since = int(info["since"])
        reason = " ".join(str(info.get("reason") or "store unavailable").split())[:120]
        detail = (f"{reason}: tickrec stopped reading for {(rec.ts_recv - since) / 1e9:.1f}s; "
                  "frames received after it arrived late")
        ctx.gaps([GapSpec(name, symbol, "stale", since, rec.ts_recv, detail=detail)
                  for name, symbol in self.tracker.streams() or [("", "")]])

    def on_close(self, rec: RawRecord) -> None:
        reason = ""
        if rec.note:
            info = json.loads(rec.note)
            reason = f"closed: code {info.get('code')} {info.get('reason') or ''}".strip()
        self.tracker.disconnect(rec.ts_recv, reason)

    @abstractmethod
    def on_incoming(self, rec: RawRecord, ctx: FrameContext) -> None: ...

    def on_outgoing(self, rec: RawRecord, ctx: FrameContext) -> None:
        """Most venues learn their subscriptions from what the client sent."""


class Framer(Protocol):
    """Splits a framed TCP byte stream into packets (``transport = "tcp"`` venues)."""

    def feed(self, data: bytes) -> list[bytes]: ...
    def rest(self) -> bytes: ...


class Client(ABC):
    venue: ClassVar[str]
    transport: ClassVar[str] = "ws"
    heartbeat_interval: float = 10.0           # an instance may retune it (futu: OpenD says)
    idle_timeout: ClassVar[float] = 30.0        # no frame for this long: reconnect
    reconnect_min: ClassVar[float] = 3.0        # vendor floor between connection attempts
    request_interval: ClassVar[float] = 0.0     # vendor floor between client requests

    def __init__(self, symbols: Sequence[str], credentials: Mapping[str, str] | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.symbols = list(symbols)
        self.credentials = dict(credentials or {})
        self.options = dict(options or {})

    @abstractmethod
    def dial(self, url: str) -> Dial: ...

    @abstractmethod
    def on_open(self) -> list[Outgoing]: ...

    def after(self, events: Sequence[Event | Status]) -> list[Outgoing]:
        """Frames to send in answer to what was just decoded (logins, acks)."""
        return []

    def heartbeat(self) -> Outgoing | None:
        return None

    def framer(self) -> Framer:
        """A fresh packet splitter for one connection; only ``tcp`` venues have one."""
        raise NotImplementedError(f"{self.venue} speaks {self.transport}, not framed TCP")

    def decoder_options(self) -> dict[str, Any]:
        """Settings the decoder needs (JSON values). The recorder writes them into each
        session's open record, so re-decoding the journal gives the same rows."""
        return {}

    def permanent(self, close_code: int | None, events: Sequence[Event | Status] = ()) -> str | None:
        """A one-line reason when the feed must stop instead of reconnecting."""
        if close_code == 1008:
            return "server closed with 1008 (policy violation: bad credentials or request)"
        return None


@dataclass
class Reply:
    frames: list[bytes | str] = field(default_factory=list)
    close: tuple[int, str] | None = None


class ServerSession(ABC):
    """One client connection on the venue's server side."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    @abstractmethod
    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        """Check the handshake; a ``close`` in the reply rejects the client."""

    @abstractmethod
    def on_frame(self, data: bytes | str, now: float) -> Reply: ...

    @abstractmethod
    def wants(self, symbol: str, stream: str) -> bool:
        """Whether this client subscribed to ``symbol``'s ``stream``."""

    def idle(self, now: float) -> Reply | None:
        return None
