"""What ``tickrec serve`` needs to know about each venue beyond its codec.

The protocol itself is the venue's own sans-I/O ``ServerSession`` (the same class
the simulator serves): handshake and token check, replies to requests,
heartbeats, idle timeout, and ``wants(symbol, stream)``. A ``ServeVenue`` adds:

- the transport (``ws`` or ``tcp``), the URL path printed, how a finished
  replay closes the connection (``end``);
- ``session(token)``: a fresh server session for one client, configured as the
  vendor's (``options`` may relax it, e.g. AllTick's request spacing in tests);
- ``subscribed(session)``: whether the client has subscribed to anything yet;
  the first time it has, that client's replay starts;
- Noren only: the instrument state to answer a subscribe with a ``tk`` / ``dk``
  snapshot (``prepare`` builds the state at the replay start, ``observe`` keeps a
  client's copy current as its frames are released).

End of the range (``end``): WebSocket venues close with 1000 (normal closure) and
the reason "end of replay", the code the venue sessions already use for a
connection they end on purpose (AllTick's and Noren's idle timeouts), which
clients take as a clean end. A client that reconnects is served the range again
from the start. Futu closes the TCP connection (FIN), as OpenD does when it exits,
``linger`` (1 s) after the last packet went out: on a disconnect the ``futu-api``
SDK throws away the pushes its handler thread has not processed yet, so a close
right behind the last packet would cost a client its last ticks. The SDK then
reconnects and subscribes again, and is served the range again. A client slower
than that (a loaded machine) loses its last ticks on every connection: the
``linger`` option sets a longer wait.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

from schemas.errors import ConfigError
from schemas.venues import VenueSpec, get
from schemas.venues.base import ServerSession

END_CODE, END_REASON = 1000, "end of replay"
Route = Callable[[bytes | str], "tuple[str, str] | None"]


class ServeVenue:
    """Defaults: a WebSocket venue whose sessions report subscriptions via ``subs``."""
    transport = "ws"
    path = "/"
    end: tuple[int, str] = (END_CODE, END_REASON)
    linger = 0.0                # seconds between the last frame sent and the close

    def __init__(self, spec: VenueSpec, options: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.route: Route = spec.route
        self.options = dict(options or {})
        self.linger = float(self.options.get("linger", type(self).linger))

    def session(self, token: str | None) -> ServerSession:
        session: ServerSession = self.spec.server(token)
        return session

    def subscribed(self, session: Any) -> bool:
        return bool(session.subs)

    def framer(self) -> Any:
        """TCP venues: a new packet splitter for one client's byte stream."""
        raise TypeError(f"{self.name} is a WebSocket venue: it has no TCP packet framer")

    def prepare(self, frames: Any, symbols: set[str] | None) -> None:
        """Learn what must be known at the replay start from the frames before it
        (an iterable of ``RawRow``); most venues need nothing."""

    def observe(self, session: Any, symbol: str, stream: str, payload: bytes) -> None:
        """A data frame of this client's replay was released (sent or not)."""

    @property
    def needs_prepare(self) -> bool:
        return False


class AllTick(ServeVenue):
    path = "/quote-stock-b-ws-api"

    def session(self, token: str | None) -> ServerSession:
        from schemas.venues.alltick import AllTickServer
        return AllTickServer(token, idle_timeout=float(self.options.get("idle_timeout", 30.0)),
                             request_interval=float(self.options.get("request_interval", 1.0)))

    def subscribed(self, session: Any) -> bool:
        return bool(session.depth or session.trades)


class Finazon(ServeVenue):
    path = "/v1"


class HedgeTech(ServeVenue):
    """The query string of the handshake is the subscription: the replay starts at once."""
    path = "/data-engine/ime/live/data/websocket/contract/name"

    def subscribed(self, session: Any) -> bool:
        return session.sub is not None


class Futu(ServeVenue):
    """OpenD over TCP. Recorded 3011 packets go out whole, header included: the SDK
    dispatches pushes by protocol id and never matches their serial numbers (only
    replies are matched to requests), so no re-framing is needed."""
    transport = "tcp"
    path = ""
    linger = 1.0

    def __init__(self, spec: VenueSpec, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, options)
        self._conn_ids = itertools.count(7_000_000_001)

    def session(self, token: str | None) -> ServerSession:
        from schemas.venues.futu_server import FutuServer
        # OpenD's TCP port takes no token; no cached first push: the recorded one is replayed
        return FutuServer(None, idle_timeout=float(self.options.get("idle_timeout", 30.0)),
                          conn_id=next(self._conn_ids))

    def framer(self) -> Any:
        from schemas.venues.futu import PacketSplitter
        return PacketSplitter()


class Noren(ServeVenue):
    """A subscribe is answered with a ``tk`` / ``dk`` snapshot of the instrument's state
    (as the vendor does): at the replay start that state is rebuilt from the frames
    recorded before ``--start`` by the Noren decoder's own merge, one decoder per
    recorded session (a state ends with its session, so an instrument whose session
    closed before the start has no state and gets no snapshot); afterwards each
    client's copy follows the frames of its replay (snapshots replace, updates are
    laid over). Without ``--start`` there is no earlier state: the recorded
    snapshots are replayed as they were."""
    path = "/NorenWSTP/"

    def __init__(self, spec: VenueSpec, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(spec, options)
        self.base: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def needs_prepare(self) -> bool:
        return True

    def session(self, token: str | None) -> ServerSession:
        from schemas.venues.noren import NorenServer
        state = ClientState(self.base)
        session = NorenServer(token, snapshot=state.snapshot,
                              idle_timeout=float(self.options.get("idle_timeout", 60.0)))
        # the client's state rides on its session (observe() finds it there);
        # NorenServer, a vendor codec, declares no such attribute
        session.replay_state = state            # type: ignore[attr-defined]
        return session

    def subscribed(self, session: Any) -> bool:
        return any(session.subs.values())

    def prepare(self, frames: Any, symbols: set[str] | None) -> None:
        from schemas.venues.noren import NorenDecoder
        decoders: dict[str, NorenDecoder] = {}
        latest: dict[tuple[str, str], str] = {}     # (key, stream) -> session of its last frame
        for row in frames:
            dec = decoders.get(row.session)
            if dec is None:
                dec = decoders[row.session] = NorenDecoder(row.session)
            dec.feed(row.record())
            if row.direction == "in":
                rt = self.route(row.payload)
                if rt is not None and (symbols is None or rt[0] in symbols):
                    latest[rt] = row.session
        self.base = {}
        for (key, stream), session in latest.items():
            state = decoders[session].states.get((key, stream))
            if state is not None:
                self.base[(key, stream)] = state

    def observe(self, session: Any, symbol: str, stream: str, payload: bytes) -> None:
        session.replay_state.observe(symbol, stream, payload)


class ClientState:
    """One Noren client's view of every instrument: the shared start state plus
    what its own replay released since (copy on write)."""

    def __init__(self, base: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        self.base = base
        self.live: dict[tuple[str, str], dict[str, Any]] = {}

    def observe(self, symbol: str, stream: str, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        fields = {k: v for k, v in obj.items() if k != "t"}
        key = (symbol, stream)
        if obj.get("t") in ("tk", "dk"):
            self.live[key] = fields
            return
        prev = self.live.get(key) or self.base.get(key)
        if prev is not None:                # an update without a state is held back, as
            self.live[key] = {**prev, **fields}     # the decoder does

    def snapshot(self, key: str, stream: str) -> str | None:
        state = self.live.get((key, stream)) or self.base.get((key, stream))
        if state is None:
            return None
        # the merged fields as they were sent (strings, as Noren sends them), "t" first
        body = {"t": "tk" if stream == "touchline" else "dk", "e": state.get("e"),
                "tk": state.get("tk")}
        body.update((k, v) for k, v in state.items() if k not in body)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


VENUES: dict[str, type[ServeVenue]] = {"alltick": AllTick, "finazon": Finazon,
                                       "hedgetech": HedgeTech, "noren": Noren, "futu": Futu}


def serve_venue(name: str, options: Mapping[str, Any] | None = None) -> ServeVenue:
    spec = get(name)             # ConfigError for an unknown venue or a missing SDK
    cls = VENUES.get(name)
    if cls is None:              # pragma: no cover - every registered venue is listed
        raise ConfigError(f"no wire replay for venue {name!r}")
    return cls(spec, options)
