"""Noren OMS (Jainam, Shoonya and other Indian brokers): touchline and depth over WebSocket.

PROTOCOLS.md, Noren section; vendor-docs/jainam-noren.txt. JSON text frames,
every value a string.

Client frames: ``c`` login ``{t, uid, actid, susertoken, source}``; ``t`` / ``d``
subscribe touchline / depth and ``u`` / ``ud`` unsubscribe, keys ``EXCHANGE|token``
joined by ``#``; ``h`` heartbeat ``{"k":"","t":"h"}``.
Server frames: ``ck`` login ack (``s`` "OK"; some brokers send ``cf`` with ``k``),
``tk`` / ``dk`` FULL snapshots, ``tf`` / ``df`` only the fields that changed,
``uk`` / ``udk`` unsubscribe acks.

Merge. The decoder keeps one state per (``e|tk``, stream), stream being
``touchline`` or ``depth``: a snapshot replaces it, an update is laid over it
(a field absent from the update keeps its value; a field present as ``""`` or
``"NA"`` becomes null). Every snapshot or update that lands on a state yields
full rows built from the merged state — ``tk``/``tf``: a ``tickers`` row and a
level-1 ``book`` row when the state has a bid or an ask; ``dk``/``df``: a
five-level ``book`` row with order counts and a ``tickers`` row. Symbol =
``e|tk``. A frame that is rejected leaves the state untouched.

Staleness. There are no sequence numbers (a lost ``tf`` cannot be seen), so the
gaps are disconnects and staleness. A state is only valid inside the session
whose snapshot built it. A stream is *stale* from the moment its connection
closed (known through the tracker's resume state: a stream with a pending
disconnect) or, for a stream never seen before, from its first update without a
snapshot, until a fresh ``tk``/``dk`` arrives. Updates that arrive while the
stream is stale are *held back*: they produce no rows (their raw frames stay in
``raw``) because the snapshot supersedes them. The snapshot emits one ``stale``
gap (``ts_start`` = disconnect or first held update, ``ts_end`` = the snapshot,
the count of held updates in ``detail``). A session that closes while a stream
is stale after receiving held updates closes the gap on the ``close`` record.
Tracker stream names are ``e|tk:touchline`` and ``e|tk:depth``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.errors import ConfigError, ProtocolError
from schemas.events import Book, Event, RawRecord, Status, Ticker
from schemas.gaps import GapSpec
from schemas.venues.base import Client, Decoder, Dial, FrameContext, Outgoing, Reply, ServerSession
from schemas.venues.noren_fields import (
    DEPTH,
    LEVELS,
    TOUCHLINE,
    book_columns,
    event_time,
    precision,
    ticker_columns,
)
from schemas.venues.values import json_object

VENUE = "noren"
SNAPSHOTS = {"tk": TOUCHLINE, "dk": DEPTH}
UPDATES = {"tf": TOUCHLINE, "df": DEPTH}
SUBSCRIBE = {TOUCHLINE: "t", DEPTH: "d"}
UNSUBSCRIBE = {TOUCHLINE: "u", DEPTH: "ud"}
UNSUB_ACK = {"u": "uk", "ud": "udk"}
LOGIN_ACKS = ("ck", "cf")
IGNORED = frozenset({"uk", "udk", "h", "ok", "om"})   # acks, heartbeat echo, order feed
CHUNK = 50
REDACTED = "***"



def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ProtocolError(f"{name} missing or not a string")
    text = str(value).strip()
    if not text:
        raise ProtocolError(f"{name} is empty")
    return text


def split_keys(value: Any) -> list[str]:
    """``"NSE|22#NFO|35003"`` → ``["NSE|22", "NFO|35003"]`` (empty parts dropped)."""
    if not isinstance(value, str):
        return []
    return [k.strip() for k in value.split("#") if k.strip()]


def jainam_token(session_token: str) -> str:
    """Jainam's ``susertoken``: the WebSocket session id hashed twice (SHA-256, hex of hex)."""
    once = hashlib.sha256(session_token.encode()).hexdigest()
    return hashlib.sha256(once.encode()).hexdigest()


def api_user(user: str) -> str:
    """Jainam's user id form: ``<USER_ID>_API``."""
    return user if user.endswith("_API") else f"{user}_API"


@dataclass(slots=True)
class _Stale:
    symbol: str
    since: int
    reason: str
    held: int = 0           # updates held back in this session
    seen: bool = False      # the tracker has seen the stream in this session


class NorenDecoder(Decoder):
    """Merges snapshots and partial updates into full rows; see the module docstring."""

    venue = VENUE

    def __init__(self, session: str = "") -> None:
        super().__init__(session)
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.stale: dict[str, _Stale] = {}
        self._closing: list[GapSpec] = []

    # -- connection events -----------------------------------------------------------
    def feed(self, rec: RawRecord) -> list[Event | Status]:
        events = super().feed(rec)
        if self._closing:
            ctx = FrameContext(self.venue, self.session, rec)
            ctx.pos = len(events)
            ctx.gaps(self._closing)
            self._closing = []
            events = events + ctx.events
        return events

    def _on_open(self, rec: RawRecord) -> None:
        super()._on_open(rec)
        self._stale_from_tracker()

    def on_close(self, rec: RawRecord) -> None:
        try:
            super().on_close(rec)
        finally:       # even when the close note is unreadable: no state outlives its session
            closing = []
            for stream, st in self.stale.items():
                if st.seen:     # the tracker's disconnect was settled by a held update
                    closing.append(GapSpec(stream, st.symbol, "stale", st.since, rec.ts_recv,
                                           detail=f"no snapshot before the connection closed; "
                                                  f"{st.held} partial update(s) held back"))
            self.stale.clear()
            self.states.clear()
            self._stale_from_tracker()
            self._closing = closing

    def _stale_from_tracker(self) -> None:
        """Every stream with a pending disconnect has a stale state (or none at all)."""
        for stream, values in self.tracker.state().items():
            symbol, down_since, reason = values[0], values[3], values[4]
            if down_since is not None and stream not in self.stale:
                self.stale[stream] = _Stale(symbol, down_since, reason or "disconnect")

    # -- frames ----------------------------------------------------------------------
    def on_outgoing(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        t = obj.get("t")
        for stream, code in UNSUBSCRIBE.items():
            if t == code:      # no more updates will keep these states current
                for key in split_keys(obj.get("k")):
                    self.states.pop((key, stream), None)

    def on_incoming(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        t = obj.get("t")
        if t in SNAPSHOTS or t in UPDATES:
            self._data(obj, t, rec, ctx)
        elif t in LOGIN_ACKS:
            answer = obj.get("s", obj.get("k"))
            if isinstance(answer, str) and answer.strip().lower() == "ok":
                ctx.status("connected", "noren: login ok")
            else:
                emsg = obj.get("emsg")
                why = f"; {str(emsg)[:80]}" if emsg else ""
                ctx.status("fatal", f"noren: login failed ({t} {str(answer)[:20]!r}{why})")
        elif t in IGNORED:
            pass
        else:
            raise ProtocolError(f"unknown frame type {str(t)[:20]!r}")

    def _data(self, obj: dict[str, Any], t: str, rec: RawRecord, ctx: FrameContext) -> None:
        snapshot = t in SNAPSHOTS
        stream = SNAPSHOTS[t] if snapshot else UPDATES[t]
        symbol = f"{_text(obj.get('e'), 'e')}|{_text(obj.get('tk'), 'tk')}"
        fields: dict[str, Any] = {}
        for key, value in obj.items():
            if key == "t":
                continue
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise ProtocolError(f"field {key[:20]!r} is a {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ProtocolError(f"field {key[:20]!r} is {value}")    # extras stay JSON
            fields[key] = value
        name = f"{symbol}:{stream}"
        prev = self.states.get((symbol, stream))
        if not snapshot and prev is None:
            self._rows(fields, stream, symbol)       # held back, but checked like any frame
            st = self.stale.get(name)
            if st is None:
                st = self.stale[name] = _Stale(symbol, rec.ts_recv, "update before any snapshot")
            ctx.gaps(self.tracker.observe(name, symbol, None, rec.ts_recv))
            st.held += 1
            st.seen = True
            return
        state = fields if snapshot else {**(prev or {}), **fields}
        rows = self._rows(state, stream, symbol)       # raises before any state changes
        gaps = self.tracker.observe(name, symbol, None, rec.ts_recv)
        st = self.stale.pop(name, None) if snapshot else None
        if st is not None:
            gaps.append(GapSpec(name, symbol, "stale", st.since, rec.ts_recv,
                                detail=f"merged state stale ({st.reason[:120]}) until this "
                                       f"snapshot; {st.held} partial update(s) held back"))
        self.states[(symbol, stream)] = state
        ctx.gaps(gaps)
        for cls, kw in rows:
            ctx.add(cls, **kw)

    @staticmethod
    def _rows(state: Mapping[str, Any], stream: str,
              symbol: str) -> list[tuple[type, dict[str, Any]]]:
        """(event class, keyword arguments) of the rows of ``state``; ProtocolError if unusable."""
        pp = precision(state)
        common = dict(symbol=symbol, ts_event=event_time(state), seq=None)
        ticker = (Ticker, {**common, **ticker_columns(state, stream, pp)})
        book = book_columns(state, LEVELS if stream == DEPTH else 1, pp)
        rows: list[tuple[type, dict[str, Any]]] = [ticker]
        if book is not None:
            rows.insert(1 if stream == TOUCHLINE else 0, (Book, {**common, **book}))
        return rows


def rederive(raw_rows: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Re-decode stored ``raw`` rows (any order; sorted by (ts_recv, frame)) to their events.

    One fresh decoder per session, as the recorder did, so the result equals the
    stored ``tickers`` / ``book`` / ``gaps`` rows of those sessions exactly.
    """
    decoders: dict[str, NorenDecoder] = {}
    out: list[Event] = []
    for row in sorted(raw_rows, key=lambda r: (r["ts_recv"], r["frame"])):
        session = str(row["session"])
        dec = decoders.get(session)
        if dec is None:
            dec = decoders[session] = NorenDecoder(session)
        rec = RawRecord(int(row["ts_recv"]), int(row["frame"]), row["direction"], row["kind"],
                        bytes(row["payload"] or b""), row.get("note"))
        out += [ev for ev in dec.feed(rec) if not isinstance(ev, Status)]
    return out


# --- client ----------------------------------------------------------------------------

class NorenClient(Client):
    """Login with the first frame, subscribe once the server says OK.

    Credentials: ``uid``, ``actid`` (defaults to ``uid``), ``token`` (the
    ``susertoken``; with option ``jainam`` the WebSocket session id, which is
    hashed twice and the user ids get the ``_API`` suffix). Options: ``streams``
    (default both ``touchline`` and ``depth``), ``jainam`` (bool), ``source``
    (default ``API``), ``chunk`` (keys per subscribe frame, default 50).
    The journal keeps the login frame with ``susertoken`` = ``***``.
    """

    venue = VENUE
    heartbeat_interval = 50.0       # vendor: a text heartbeat every 50 s
    idle_timeout = 300.0            # quiet instruments are normal; pings catch dead links
    reconnect_min = 3.0
    request_interval = 0.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        for s in self.symbols:
            e, sep, tk = s.partition("|")
            if not sep or not e or not tk or "#" in s or "|" in tk:
                raise ConfigError(f"noren symbol {s!r} is not EXCHANGE|token (e.g. NSE|22)")
        self.streams = tuple(self.options.get("streams", (TOUCHLINE, DEPTH)))
        unknown = set(self.streams) - {TOUCHLINE, DEPTH}
        if unknown:
            raise ConfigError(f"noren streams are touchline and depth, not {sorted(unknown)}")
        self.jainam = bool(self.options.get("jainam", False))
        self.source = str(self.options.get("source", "API"))
        self.chunk = max(1, int(self.options.get("chunk", CHUNK)))

    def _secrets(self) -> list[str]:
        token = self.credentials.get("token") or ""
        return [s for s in (token, jainam_token(token) if token else "") if s]

    def dial(self, url: str) -> Dial:
        return Dial(url, url)       # the credentials travel in the first frame, not the URL

    def login(self) -> Outgoing:
        uid = self.credentials.get("uid", "")
        actid = self.credentials.get("actid") or uid
        token = self.credentials.get("token", "")
        if self.jainam:
            uid, actid, token = api_user(uid), api_user(actid), jainam_token(token)
        frame = {"t": "c", "uid": uid, "actid": actid, "susertoken": token, "source": self.source}
        return Outgoing.text(frame, {**frame, "susertoken": REDACTED})

    def subscriptions(self) -> list[Outgoing]:
        out = []
        for stream in self.streams:
            for i in range(0, len(self.symbols), self.chunk):
                keys = "#".join(self.symbols[i:i + self.chunk])
                out.append(Outgoing.text({"t": SUBSCRIBE[stream], "k": keys}))
        return out

    def on_open(self) -> list[Outgoing]:
        return [self.login()]

    def after(self, events: Any) -> list[Outgoing]:
        for ev in events:
            if isinstance(ev, Status) and ev.venue == VENUE and ev.kind == "connected":
                return self.subscriptions()
        return []

    def heartbeat(self) -> Outgoing:
        return Outgoing.text({"k": "", "t": "h"})

    def permanent(self, close_code: int | None,
                  events: Sequence[Event | Status] = ()) -> str | None:
        for ev in events:
            if isinstance(ev, Status) and ev.kind == "fatal":
                detail = ev.detail
                for secret in self._secrets():
                    detail = detail.replace(secret, REDACTED)
                return f"{detail} (check TICKREC_NOREN_UID / _ACTID / _TOKEN)"
        if close_code == 1008:
            return ("noren: server closed with 1008 (policy violation: login refused; "
                    "check TICKREC_NOREN_UID / _ACTID / _TOKEN)")
        return None


# --- server side (simulator and wire replay) ------------------------------------------

def encode(t: str, e: str, tk: str, fields: Mapping[str, str]) -> str:
    """A server data frame: ``t`` first, then ``e`` and ``tk``, then the fields."""
    body = {"t": t, "e": e, "tk": tk}
    body.update({k: v for k, v in fields.items() if k not in ("t", "e", "tk")})
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def route(payload: bytes | str) -> tuple[str, str] | None:
    """(``e|tk``, stream) of a data frame, for the server to decide who gets it."""
    try:
        obj = json.loads(payload)
        t = obj.get("t")
        stream = SNAPSHOTS.get(t) or UPDATES.get(t)
        if stream is not None:
            return f"{obj['e']}|{obj['tk']}", stream
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


Snapshot = Callable[[str, str], "str | None"]


class NorenServer(ServerSession):
    """Server side of one Noren connection.

    The first frame must be a ``c`` login; when the server has a token, with a
    non-empty ``uid`` and the right ``susertoken`` (``jainam``: the double hash of
    the token and user ids ending in ``_API``); without a token any login is OK. A refused login is answered
    ``{"t":"ck","s":"NOT_OK"}`` (``on_fail="notok"``, the connection stays open)
    or closed with 1008 (``on_fail="close"``); ``ack="cf"`` answers in the
    ``{"t":"cf","k":"OK"}`` style. Frames before a login are ignored. A
    subscribe is answered with one snapshot per known key (``snapshot(key,
    stream)``), an unsubscribe with ``uk`` / ``udk``. A connection on which
    nothing was sent or received for ``idle_timeout`` is closed.
    """

    def __init__(self, token: str | None = None, *, snapshot: Snapshot | None = None,
                 idle_timeout: float = 60.0, on_fail: str = "notok", ack: str = "ck",
                 jainam: bool = False) -> None:
        super().__init__(token)
        if on_fail not in ("notok", "close") or ack not in LOGIN_ACKS:
            raise ConfigError("noren server: on_fail is notok|close, ack is ck|cf")
        self.snapshot: Snapshot = snapshot or (lambda key, stream: None)
        self.idle_timeout = idle_timeout
        self.on_fail, self.ack, self.jainam = on_fail, ack, jainam
        self.logged_in = False
        self.subs: dict[str, set[str]] = {TOUCHLINE: set(), DEPTH: set()}
        self.last_active: float | None = None
        self._pushed = False

    def _ack(self, ok: bool) -> str:
        field = "s" if self.ack == "ck" else "k"
        body: dict[str, str] = {"t": self.ack, field: "OK" if ok else "NOT_OK"}
        if not ok:
            body["emsg"] = "Invalid Session Key"
        return json.dumps(body, separators=(",", ":"))

    def _login_ok(self, obj: Mapping[str, Any]) -> bool:
        if self.token is None:          # no credentials configured: anyone may log in
            return True
        uid, actid, token = obj.get("uid"), obj.get("actid"), obj.get("susertoken")
        if not isinstance(uid, str) or not uid or not isinstance(actid, str):
            return False
        if self.jainam and not (uid.endswith("_API") and actid.endswith("_API")):
            return False
        expected = jainam_token(self.token) if self.jainam else self.token
        return token == expected

    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        return Reply()

    def on_frame(self, data: bytes | str, now: float) -> Reply:
        self.last_active = now
        try:
            obj = json.loads(data)
            t = obj.get("t")
        except (ValueError, AttributeError, RecursionError):
            return Reply()
        if not self.logged_in:
            if t != "c":
                return Reply()
            if self._login_ok(obj):
                self.logged_in = True
                return Reply([self._ack(True)])
            if self.on_fail == "close":
                return Reply(close=(1008, "invalid session"))
            return Reply([self._ack(False)])
        keys = split_keys(obj.get("k"))
        for stream in (TOUCHLINE, DEPTH):
            if t == SUBSCRIBE[stream]:
                self.subs[stream].update(keys)
                frames = [self.snapshot(k, stream) for k in keys]
                return Reply([f for f in frames if f is not None])
            if t == UNSUBSCRIBE[stream]:
                self.subs[stream].difference_update(keys)
                return Reply([json.dumps({"t": UNSUB_ACK[t], "k": obj.get("k")},
                                         separators=(",", ":"))])
        return Reply()

    def wants(self, symbol: str, stream: str) -> bool:
        wanted = self.logged_in and symbol in self.subs.get(stream, ())
        self._pushed = self._pushed or wanted     # data about to be sent counts as activity
        return wanted

    def idle(self, now: float) -> Reply | None:
        if self.last_active is None or self._pushed:
            self.last_active, self._pushed = now, False
        if now - self.last_active > self.idle_timeout:
            return Reply(close=(1000, "idle connection"))
        return None


from schemas.venues import VenueSpec  # last: the registry imports this module lazily

SPEC = VenueSpec(VENUE, NorenDecoder, NorenClient, NorenServer, route,
                 {"uid": "TICKREC_NOREN_UID", "actid": "TICKREC_NOREN_ACTID",
                  "token": "TICKREC_NOREN_TOKEN"})
