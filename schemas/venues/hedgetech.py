"""HedgeTech HT Data Engine: IME and TSE/IFB snapshots over WebSocket, JSON frames.

PROTOCOLS.md (HedgeTech) and vendor-docs/hedgetech-ime.txt. The JWT travels as
the handshake header ``Authorization: <token>`` and everything else is in the
query string; there are no client messages after the handshake. Endpoints
(under ``/data-engine/``):

- IME ``ime/live/data/websocket/contract/name?contract_names=A&contract_names=B``
  (one revision spells it ``contract_name``) or ``…/contract/id?contract_id=…``;
  each message is a full snapshot ``{channel:"IME Stream", contractName|ContractId,
  timestamp, data:{BestLimit{"1".."3"}, Aggregate, AllowedPriceRange, ContractInfo}}``
  → one ``book`` row (empty levels are zeros: they become no level) and one
  ``tickers`` row (Aggregate prices, AllowedPriceRange as limits, open interest,
  the rest in ``extras``).
- TSE/IFB ``tse-ifb/live/data/websocket/symbol/isin|name`` with repeated
  ``channels=`` and ``symbol_isins=`` / ``symbol_names=``; one channel of one
  symbol per message ``{channel, symbolIsin|symbolName, timestamp, data}``:
  ``best-limit`` / ``order-book`` → ``book`` (with order counts), ``ohlcv-last-1m``
  → ``bars``, ``aggregate`` / ``contract-info`` / ``fund-info`` /
  ``institutional-vs-individual`` → ``tickers`` (what has no column in ``extras``).

``timestamp`` is ISO-8601 with microseconds, with or without a zone; a naive one
is Tehran local time. Prices of 0 in Aggregate mean "no trade yet" and are
stored as null. Close code 1008 (bad token, contract, symbol or channel) is
permanent. No sequence numbers and no heartbeat: gaps are disconnects and
staleness per (symbol, channel), where the quiet of a closed market (a
``TradingHours`` schedule, default Sat-Wed 09:00-15:00 Tehran) is no gap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from schemas.errors import ConfigError, ProtocolError
from schemas.events import Bar, Book, Event, RawRecord, Status, Ticker
from schemas.gaps import GapSpec
from schemas.schedule import TradingHours, parse_schedule, zone
from schemas.venues.base import Client, Decoder, Dial, FrameContext, Outgoing, Reply, ServerSession
from schemas.venues.timegaps import TimeTracker
from schemas.venues.urls import query_pairs, redact_url, with_pairs
from schemas.venues.values import integer, iso_ns, json_object, num

VENUE = "hedgetech"
IME_CHANNEL = "IME Stream"
TSE_CHANNELS = ("best-limit", "order-book", "ohlcv-last-1m", "aggregate",
                "institutional-vs-individual", "contract-info", "fund-info")
# Channels that change rarely (or only on news): their silence is never staleness.
SLOW_CHANNELS = frozenset(("institutional-vs-individual", "contract-info", "fund-info"))
TEHRAN = "Asia/Tehran"
DEFAULT_STALE_AFTER = 120.0
DEFAULT_SCHEDULE = "Sat-Wed 09:00-15:00 Asia/Tehran"
_MINUTE_NS = 60 * 1_000_000_000


@dataclass(frozen=True)
class Endpoint:
    market: str                 # "ime" | "tse"
    id_field: str               # the identifier field of this endpoint's messages
    params: tuple[str, ...]     # query parameters naming the symbols (first = default)


ENDPOINTS = {
    "/contract/name": Endpoint("ime", "contractName", ("contract_names", "contract_name")),
    "/contract/id": Endpoint("ime", "ContractId", ("contract_id", "contract_ids")),
    "/symbol/isin": Endpoint("tse", "symbolIsin", ("symbol_isins", "symbol_isin")),
    "/symbol/name": Endpoint("tse", "symbolName", ("symbol_names", "symbol_name")),
}
ID_FIELDS = tuple(e.id_field for e in ENDPOINTS.values())


@dataclass(frozen=True)
class Subscription:
    """What a HedgeTech URL asks for; the query is all there is of a subscription."""
    endpoint: Endpoint
    symbols: tuple[str, ...]
    channels: tuple[str, ...]

    @classmethod
    def from_url(cls, url: str) -> Subscription:
        """Parse a URL or request path; ``ConfigError`` for an endpoint that is none of the four.

        Values may repeat a parameter or be comma-separated (the docs show both).
        """
        path = urlsplit(url).path.rstrip("/")
        endpoint = next((e for suffix, e in ENDPOINTS.items() if path.endswith(suffix)), None)
        if endpoint is None:
            raise ConfigError(f"hedgetech URL path {path!r} must end in one of "
                              f"{', '.join(ENDPOINTS)}")
        symbols: list[str] = []
        channels: list[str] = []
        for key, value in query_pairs(url):
            if key not in endpoint.params and key != "channels":
                continue
            target = channels if key == "channels" else symbols
            for v in (v.strip() for v in value.split(",")):
                if v and v not in target:
                    target.append(v)
        if endpoint.market == "ime":
            channels = [IME_CHANNEL]
        return cls(endpoint, tuple(symbols), tuple(channels))

    def streams(self) -> set[str]:
        """The ``route`` streams this subscription receives."""
        e = self.endpoint
        if e.market == "ime":
            return {f"ime:{e.id_field}"}
        return {f"tse:{e.id_field}:{c}" for c in self.channels}



def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{name} is not an object")
    return value


def _price(value: Any, name: str) -> float | None:
    p = num(value, name)
    return None if p == 0 else p


def _count(value: Any, name: str) -> int | None:
    n = integer(value, name)
    if n is not None and not 0 <= n < 2**63:
        raise ProtocolError(f"{name} out of range: {n}")
    return n


def _extras(*parts: Mapping[str, Any]) -> str | None:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return json.dumps(merged, ensure_ascii=False, sort_keys=True, separators=(",", ":")) \
        if merged else None


def _rest(section: Mapping[str, Any], used: Iterable[str]) -> dict[str, Any]:
    skip = set(used)
    return {k: v for k, v in section.items() if k not in skip}


Side = tuple[list[float], list[float], list[int] | None]


def _side(levels: list[tuple[Any, Any, Any]], name: str, counts: bool) -> Side:
    """(price, size, count) triples → lists, dropping empty levels (price 0 or absent)."""
    px: list[float] = []
    sz: list[float] = []
    n: list[int | None] = []
    for p_raw, q_raw, c_raw in levels:
        p = num(p_raw, f"{name} price")
        q = num(q_raw, f"{name} quantity")
        c = _count(c_raw, f"{name} count") if counts else None
        if p is None or p == 0:
            continue
        px.append(p)
        sz.append(q or 0.0)
        n.append(c)
    have = [c for c in n if c is not None]
    return px, sz, (have if counts and len(have) == len(n) else None)


def _best_limit(levels: Any, counts: bool) -> dict[str, Any]:
    """BestLimit ``{"1": {buy_price, buy_quantity[, buy_order_count], sell_…}, …}`` → Book."""
    if not isinstance(levels, dict):
        raise ProtocolError("BestLimit is not an object")
    try:
        ordered = sorted((int(k), v) for k, v in levels.items())
    except (ValueError, TypeError):
        raise ProtocolError("BestLimit level keys are not numbers") from None
    rows = []
    for _, lvl in ordered:
        if not isinstance(lvl, dict):
            raise ProtocolError("BestLimit level is not an object")
        rows.append(lvl)
    bids = _side([(r.get("buy_price"), r.get("buy_quantity"), r.get("buy_order_count"))
                  for r in rows], "buy", counts)
    asks = _side([(r.get("sell_price"), r.get("sell_quantity"), r.get("sell_order_count"))
                  for r in rows], "sell", counts)
    return _book(bids, asks)


def _order_book(data: Mapping[str, Any]) -> dict[str, Any]:
    """OrderBook ``{"Buy": [{price, quantity, count}], "Sell": […]}`` → Book fields."""
    sides = []
    for name in ("Buy", "Sell"):
        levels = data.get(name)
        levels = [] if levels is None else levels
        if not isinstance(levels, list) or not all(isinstance(x, dict) for x in levels):
            raise ProtocolError(f"order-book {name} is not a list of levels")
        sides.append(_side([(x.get("price"), x.get("quantity"), x.get("count")) for x in levels],
                           name, True))
    return _book(sides[0], sides[1])


def _book(bids: Side, asks: Side) -> dict[str, Any]:
    return dict(depth=max(len(bids[0]), len(asks[0])), bid_px=bids[0], bid_sz=bids[1],
                bid_n=bids[2], ask_px=asks[0], ask_sz=asks[1], ask_n=asks[2])


_AGGREGATE = {"last": "last_price", "open": "open_price", "high": "high_price", "low": "low_price",
              "close": "closing_price", "prev_close": "previous_close"}


def _aggregate(agg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Aggregate → (Ticker fields, leftovers for extras)."""
    fields: dict[str, Any] = {k: _price(agg.get(src), src) for k, src in _AGGREGATE.items()}
    fields["volume"] = num(agg.get("total_volume"), "total_volume")
    fields["turnover"] = num(agg.get("total_value"), "total_value")
    return fields, _rest(agg, list(_AGGREGATE.values()) + ["total_volume", "total_value"])


class HedgeTechDecoder(Decoder):
    venue = VENUE

    def __init__(self, session: str = "") -> None:
        super().__init__(session)
        self.tracker: TimeTracker = TimeTracker()
        self.stale_after_ns: int | None = int(DEFAULT_STALE_AFTER * 1e9)
        self.schedule: TradingHours | None = parse_schedule(DEFAULT_SCHEDULE)
        self.zone = zone(TEHRAN)

    def configure(self, options: Mapping[str, Any]) -> None:
        if "stale_after" in options:
            self.stale_after_ns = _stale_after_ns(options["stale_after"])
        if "schedule" in options:
            self.schedule = parse_schedule(options["schedule"])

    def feed(self, rec: RawRecord) -> list[Event | Status]:
        events = super().feed(rec)
        if rec.kind == "close" and rec.note:
            try:
                info = json.loads(rec.note)
            except ValueError:
                info = {}
            if isinstance(info, dict) and info.get("code") == 1008:
                reason = " ".join(str(info.get("reason") or "policy violation").split())[:120]
                events.append(Status(VENUE, "fatal", rec.ts_recv,
                                     f"hedgetech: server closed with 1008 ({reason}): check "
                                     "TICKREC_HEDGETECH_TOKEN, the contracts/symbols and channels"))
        return events

    def on_incoming(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        field = next((f for f in ID_FIELDS if f in obj), None)
        symbol = obj.get(field) if field else None
        if isinstance(symbol, int) and not isinstance(symbol, bool):
            symbol = str(symbol)
        if not isinstance(symbol, str) or not symbol:
            raise ProtocolError("message without contractName/ContractId/symbolName/symbolIsin")
        channel = obj.get("channel")
        if channel is None and field in ("contractName", "ContractId"):
            channel = IME_CHANNEL
        if not isinstance(channel, str):
            raise ProtocolError("message without a channel")
        data = obj.get("data")
        if not isinstance(data, dict):
            raise ProtocolError(f"{channel} message without a data object")
        ts_event = iso_ns(obj.get("timestamp"), self.zone)
        rows = self._rows(channel, data, ts_event)
        stale = None if channel in SLOW_CHANNELS else self.stale_after_ns
        specs = self.tracker.observe_time(f"{symbol}|{channel}", symbol, rec.ts_recv, stale,
                                          self.schedule)
        ctx.gaps([self._explain(g) for g in specs])
        for cls, fields in rows:
            ctx.add(cls, symbol=symbol, seq=None, **{"ts_event": ts_event, **fields})

    def _rows(self, channel: str, data: Mapping[str, Any],
              ts_event: int | None) -> list[tuple[type, dict[str, Any]]]:
        """(event class, fields) of one message; raises ProtocolError before any state changes.
        A ``ts_event`` among the fields overrides the message's (bars: the open time)."""
        if channel == IME_CHANNEL:
            rows: list[tuple[type, dict[str, Any]]] = []
            if data.get("BestLimit") is not None:
                rows.append((Book, _best_limit(data["BestLimit"], counts=False)))
            fields, rest = _aggregate(_section(data, "Aggregate"))
            limits = _section(data, "AllowedPriceRange")
            info = _section(data, "ContractInfo")
            fields["lower_limit"] = num(limits.get("minAllowedPrice"), "minAllowedPrice")
            fields["upper_limit"] = num(limits.get("maxAllowedPrice"), "maxAllowedPrice")
            fields["open_interest"] = num(info.get("open_interest"), "open_interest")
            known = ("BestLimit", "Aggregate", "AllowedPriceRange", "ContractInfo")
            fields["extras"] = _extras(rest, _rest(limits, ("minAllowedPrice", "maxAllowedPrice")),
                                       _rest(info, ("open_interest",)), _rest(data, known))
            return rows + [(Ticker, fields)]
        if channel == "best-limit":
            return [(Book, _best_limit(data, counts=True))]
        if channel == "order-book":
            return [(Book, _order_book(data))]
        if channel == "ohlcv-last-1m":
            if ts_event is None:
                raise ProtocolError("ohlcv-last-1m without a timestamp")
            bar = {k: num(data.get(k), k) for k in ("open", "high", "low", "close", "volume")}
            return [(Bar, dict(interval="1m", ts_event=ohlcv_open_ns(ts_event), **bar))]
        if channel == "aggregate":
            fields, rest = _aggregate(data)
            return [(Ticker, dict(fields, extras=_extras(rest)))]
        if channel == "contract-info":
            return [(Ticker, dict(open_interest=num(data.get("open_interest"), "open_interest"),
                                  extras=_extras(_rest(data, ("open_interest",)))))]
        if channel in ("fund-info", "institutional-vs-individual"):
            return [(Ticker, dict(extras=_extras(data)))]
        raise ProtocolError(f"unknown channel {channel[:40]!r}")

    def _explain(self, gap: GapSpec) -> GapSpec:
        if (gap.kind != "stale" or self.schedule is None or gap.ts_start is None
                or gap.ts_end is None):
            return gap
        open_s = self.schedule.open_ns(gap.ts_start, gap.ts_end) / 1e9
        return replace(gap, detail=f"{gap.detail}, {open_s:.1f}s of it in trading hours "
                                   f"({self.schedule})")


def ohlcv_open_ns(ts_event: int) -> int:
    """An ``ohlcv-last-1m`` message's bar open time: its timestamp floored to the minute."""
    return ts_event - ts_event % _MINUTE_NS


def _stale_after_ns(value: Any) -> int | None:
    if value is None:
        return None
    try:
        f = num(value, "stale_after")
    except ProtocolError:
        f = None
    if f is None or not 0 < f < 1e9:
        raise ConfigError(f"stale_after must be a positive number of seconds, not {value!r}")
    return int(f * 1e9)


class HedgeTechClient(Client):
    """Dials ``url`` with ``symbols`` (and, for TSE/IFB, ``channels``) added to its query.

    Options: ``channels`` (TSE/IFB; default all seven), ``param`` (the spelling of the
    symbols parameter, e.g. ``contract_name``; default: what the URL already uses, else
    the vendor document's), ``stale_after`` (seconds, default 120; None = off) and
    ``schedule`` (trading hours, default "Sat-Wed 09:00-15:00 Asia/Tehran"; None =
    always open). There is no heartbeat message and a quiet connection is normal
    outside trading hours, so liveness comes from WebSocket pings, not a data watchdog.
    """
    venue = VENUE
    heartbeat_interval = 3600.0
    idle_timeout = 86400.0
    reconnect_min = 3.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        channels = self.options.get("channels", TSE_CHANNELS)
        self.channels = tuple(channels.split(",") if isinstance(channels, str) else channels)
        bad = [c for c in self.channels if c not in TSE_CHANNELS]
        if bad:
            raise ConfigError(f"unknown hedgetech channels {bad}: "
                              f"expected {', '.join(TSE_CHANNELS)}")
        self.param = self.options.get("param")
        self.stale_after = self.options.get("stale_after", DEFAULT_STALE_AFTER)
        _stale_after_ns(self.stale_after)
        hours = parse_schedule(self.options.get("schedule", DEFAULT_SCHEDULE))
        self.schedule = str(hours) if hours is not None else None

    def dial(self, url: str) -> Dial:
        sub = Subscription.from_url(url)
        pairs = query_pairs(url)
        used = [k for k, _ in pairs if k in sub.endpoint.params]
        param = self.param or (used[0] if used else sub.endpoint.params[0])
        if param not in sub.endpoint.params:
            raise ConfigError(f"hedgetech param {param!r} does not fit {urlsplit(url).path!r}: "
                              f"expected one of {', '.join(sub.endpoint.params)}")
        pairs += [(param, s) for s in self.symbols if s not in sub.symbols]
        if sub.endpoint.market == "tse" and not sub.channels:
            pairs += [("channels", c) for c in self.channels]
        full = with_pairs(url, pairs)
        token = self.credentials.get("token")
        return Dial(full, redact_url(full), {"Authorization": token} if token else {})

    def on_open(self) -> list[Outgoing]:
        return []

    def decoder_options(self) -> dict[str, Any]:
        return {"stale_after": self.stale_after, "schedule": self.schedule}

    def permanent(self, close_code: int | None,
                  events: Sequence[Event | Status] = ()) -> str | None:
        for ev in events:
            if isinstance(ev, Status) and ev.kind == "fatal":
                return ev.detail
        return super().permanent(close_code)


# --- server side (simulator and wire replay) ------------------------------------------

def encode(channel: str, id_field: str, symbol: str, timestamp: str,
           data: Mapping[str, Any]) -> str:
    """One message as the Data Engine sends it (UTF-8 JSON, Persian names unescaped)."""
    return json.dumps({"channel": channel, id_field: symbol, "timestamp": timestamp, "data": data},
                      ensure_ascii=False, separators=(",", ":"))


def route(payload: bytes | str) -> tuple[str, str] | None:
    """(symbol, stream) of a message: what ``HedgeTechServer.wants`` matches."""
    try:
        obj = json.loads(payload)
        field = next(f for f in ID_FIELDS if f in obj)
        channel = obj.get("channel")
        if channel == IME_CHANNEL:
            return str(obj[field]), f"ime:{field}"
        if channel in TSE_CHANNELS:
            return str(obj[field]), f"tse:{field}:{channel}"
    except (ValueError, TypeError, StopIteration, AttributeError, RecursionError):
        pass
    return None


def close_reason(text: str) -> str:
    """``text`` cut to the 123 bytes a WebSocket close reason may hold (UTF-8 safe)."""
    return text.encode()[:123].decode(errors="ignore")


class HedgeTechServer(ServerSession):
    """One client of the Data Engine: the header and the query decide everything.

    ``symbols`` is the universe the server knows (empty: any symbol is known). A bad
    token, an unknown contract/symbol or channel closes the connection with 1008.
    """

    def __init__(self, token: str | None = None, *, symbols: Iterable[str] = ()) -> None:
        super().__init__(token)
        self.universe = set(symbols)
        self.sub: Subscription | None = None
        self.streams: set[str] = set()

    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if auth is not None and auth.lower().startswith("bearer "):
            auth = auth[7:]
        if self.token is not None and auth != self.token:
            return Reply(close=(1008, "invalid or missing token"))
        try:
            sub = Subscription.from_url(path)
        except ConfigError:
            return Reply(close=(1008, "unknown endpoint"))
        what = "contract" if sub.endpoint.market == "ime" else "symbol"
        unknown = [s for s in sub.symbols if self.universe and s not in self.universe]
        if not sub.symbols or unknown:
            listed = ", ".join(unknown) or "none"
            return Reply(close=(1008, close_reason(f"invalid {what}s: {listed}")))
        bad = [c for c in sub.channels if c not in TSE_CHANNELS]
        if sub.endpoint.market == "tse" and (bad or not sub.channels):
            listed = ", ".join(bad) or "none"
            return Reply(close=(1008, close_reason(f"invalid channels: {listed}")))
        self.sub, self.streams = sub, sub.streams()
        return Reply()

    def on_frame(self, data: bytes | str, now: float) -> Reply:
        return Reply()      # the Data Engine reads nothing after the handshake

    def wants(self, symbol: str, stream: str) -> bool:
        return self.sub is not None and stream in self.streams and symbol in self.sub.symbols


from schemas.venues import VenueSpec  # last: the registry imports this module lazily

SPEC = VenueSpec(VENUE, HedgeTechDecoder, HedgeTechClient, HedgeTechServer, route,
                 {"token": "TICKREC_HEDGETECH_TOKEN"})
