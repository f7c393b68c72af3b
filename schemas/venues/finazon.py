"""Finazon: 1-minute bars over WebSocket, JSON events in both directions.

PROTOCOLS.md (Finazon) and vendor-docs/finazon.txt. The client sends events
``subscribe`` / ``unsubscribe`` (``dataset``, ``tickers``, ``channel:"bars"``,
``frequency`` 1s/10s/1m, ``aggregation:"1m"``, optional ``request_id``),
``heartbeat`` and ``reset``. The server answers with
``{"status":"success","code":"SUCCESS_SUBSCRIPTION"|"SUCCESS_UNSUBSCRIPTION",data,request_id}``,
``{"event":"heartbeat","status":"success",...}`` or ``{"status":"error","message":...}``
(bad key, unknown ticker, already subscribed: one bad ticker leaves the good
ones subscribed), and pushes bar updates ``{d|p, ch, f, aggr, s, t, o, h, l, c, v}``.

Every bar update is a ``bars`` row (``ts_event`` = ``t``, the bar's open time;
``interval`` = ``aggr`` without its stray spaces); the same open bar is re-sent
every ``f`` and ``bars_final`` keeps the last update of each bar.

There are no sequence numbers, so gaps are time-based (``TimeTracker``), per
stream = (dataset, ticker, aggregation, frequency):
- ``stale``: silent for more than ``stale_factor`` x ``f`` (default 3x), from
  its last update to its next one; ``missing`` = whole bars never seen between
  the two updates' bar open times;
- ``disconnect``: the connection dropped; ``missing`` likewise counts the whole
  bars the outage swallowed (``detail`` says which open times).
A ticker's silence after the client unsubscribed it (or sent ``reset``) is not
staleness.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from schemas.errors import ConfigError, ProtocolError
from schemas.events import Bar, Event, RawRecord, Status
from schemas.gaps import GapSpec
from schemas.venues.base import Client, Decoder, Dial, FrameContext, Outgoing, Reply, ServerSession
from schemas.venues.timegaps import TimeTracker
from schemas.venues.urls import redact_url, with_query
from schemas.venues.values import epoch_ns, json_object, num

VENUE = "finazon"
FREQUENCIES = ("1s", "10s", "1m")
AGGREGATIONS = ("1m",)
DEFAULT_DATASET = "us_stocks_essential"
DEFAULT_FREQUENCY = "1s"
DEFAULT_STALE_FACTOR = 3.0
EVENTS_PER_MINUTE = 100
MAX_EVENT_BYTES = 100_000
# Words of an error message that mean the key itself was refused: reconnecting won't help.
AUTH_WORDS = ("api key", "apikey", "api_key", "unauthorized", "unauthorised", "authenticat",
              "forbidden", "invalid key")
_DURATION = re.compile(r"\s*(\d{1,6})\s*(s|m|h|d)\s*", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: Any) -> int | None:
    """Seconds of "1s", "10s", "1m", "1h", "1d"; None when it is not such a text."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * _UNIT[m.group(2).lower()]


def split_symbol(symbol: str, default_dataset: str) -> tuple[str, str]:
    """``"huobi:BTC/USDT"`` → ("huobi", "BTC/USDT"); a bare ticker gets ``default_dataset``."""
    dataset, sep, ticker = symbol.partition(":")
    return (dataset, ticker) if sep and dataset and ticker else (default_dataset, symbol)



def _text(value: Any, limit: int = 200) -> str:
    return " ".join(str(value).split())[:limit]


def _tickers(value: Any) -> list[str]:
    return [str(t) for t in value] if isinstance(value, list) else []


def _stale_factor(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = num(value, "stale_factor")
    except ProtocolError:
        f = None
    if f is None or not f > 0 or f == float("inf"):
        raise ConfigError(f"stale_factor must be a positive number, not {value!r}")
    return f


class FinazonDecoder(Decoder):
    venue = VENUE

    def __init__(self, session: str = "") -> None:
        super().__init__(session)
        self.tracker: TimeTracker = TimeTracker()
        self.stale_factor: float | None = DEFAULT_STALE_FACTOR
        self.seen: set[tuple[str, str]] = set()      # (dataset, ticker) updated this session
        self.paused: set[tuple[str, str]] = set()    # unsubscribed: their silence is no gap

    def configure(self, options: Mapping[str, Any]) -> None:
        if "stale_factor" in options:
            self.stale_factor = _stale_factor(options["stale_factor"])

    def on_outgoing(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        event = obj.get("event")
        if event == "unsubscribe":
            dataset = str(obj.get("dataset") or "")
            self.paused.update((dataset, t) for t in _tickers(obj.get("tickers")))
        elif event == "reset":
            self.paused |= self.seen

    def on_incoming(self, rec: RawRecord, ctx: FrameContext) -> None:
        obj = json_object(rec.payload)
        if "status" in obj or "event" in obj:
            self._reply(obj, ctx)
        elif "s" in obj or "t" in obj or obj.get("ch") == "bars":
            self._bar(obj, rec, ctx)
        else:
            raise ProtocolError("neither a bar update nor a reply")

    def _reply(self, obj: dict[str, Any], ctx: FrameContext) -> None:
        status = _text(obj.get("status") or "").lower()
        code = _text(obj.get("code") or "")
        event = obj.get("event")
        rid = obj.get("request_id")
        about = f" (request {_text(rid, 40)})" if rid is not None else ""
        tickers = _tickers(obj.get("data"))
        shown = ", ".join(tickers[:10])
        if len(tickers) > 10:
            shown += f" and {len(tickers) - 10} more"
        if status == "error":
            message = _text(obj.get("message") or obj.get("error") or code or "error")
            fatal = any(w in f"{message} {code}".lower() for w in AUTH_WORDS)
            ctx.status("fatal" if fatal else "error", f"Finazon: {message}{about}")
        elif code == "SUCCESS_SUBSCRIPTION" or (event == "subscribe" and status == "success"):
            ctx.status("subscribed", f"Finazon: subscribed {shown}{about}")
        elif code == "SUCCESS_UNSUBSCRIPTION" or (event == "unsubscribe" and status == "success"):
            ctx.status("unsubscribed", f"Finazon: unsubscribed {shown}{about}")
        elif status != "success" and event not in ("heartbeat", "reset"):
            raise ProtocolError(f"reply with unknown status {status!r}")

    def _bar(self, obj: dict[str, Any], rec: RawRecord, ctx: FrameContext) -> None:
        symbol = obj.get("s")
        if not isinstance(symbol, str) or not symbol:
            raise ProtocolError("bar update without a ticker (s)")
        dataset = obj.get("d") or obj.get("p") or ""
        if not isinstance(dataset, str):
            raise ProtocolError("dataset (d/p) is not a string")
        aggr, freq = obj.get("aggr", "1m"), obj.get("f", "")
        if not isinstance(aggr, str) or not isinstance(freq, str):
            raise ProtocolError("aggr or f is not a string")
        interval = aggr.strip() or "1m"
        freq = freq.strip()
        ts_event = epoch_ns(obj.get("t"), "t")
        if ts_event is None:
            raise ProtocolError("bar update without its open time (t)")
        values = {k: num(obj.get(src), src) for k, src in
                  (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c"), ("volume", "v"))}
        stream = f"{dataset}|{symbol}|{interval}|{freq}"
        key = (dataset, symbol)
        period = duration_s(freq)
        stale = (int(self.stale_factor * period * 1e9)
                 if period and self.stale_factor and key not in self.paused else None)
        self.paused.discard(key)
        self.seen.add(key)
        bar_open = ts_event // 1_000_000_000
        last_open = self.tracker.marks.get(stream)
        specs = [self._count_bars(g, last_open, bar_open, interval)
                 for g in self.tracker.observe_time(stream, symbol, rec.ts_recv, stale)]
        self.tracker.marks[stream] = bar_open if last_open is None else max(last_open, bar_open)
        ctx.gaps(specs)
        ctx.add(Bar, symbol=symbol, ts_event=ts_event, seq=None, interval=interval, **values)

    @staticmethod
    def _count_bars(gap: GapSpec, last_open: int | None, bar_open: int, interval: str) -> GapSpec:
        """A gap's ``missing``: whole bars whose open time lies strictly between the
        last bar seen before it and the first bar after it."""
        step = duration_s(interval)
        if gap.kind not in ("stale", "disconnect") or last_open is None or step is None:
            return gap
        skipped = max(0, (bar_open - last_open) // step - 1)
        detail = gap.detail
        if skipped:
            note = (f"bar open time jumped {last_open} -> {bar_open} (epoch s): "
                    f"{skipped} whole {interval} bar(s) never seen")
            detail = f"{detail}; {note}" if detail else note
        return replace(gap, missing=skipped, detail=detail)


class FinazonClient(Client):
    """Subscribes ``symbols`` (``ticker`` or ``dataset:ticker``) in few batched events.

    Options: ``dataset`` (for bare tickers, default us_stocks_essential),
    ``frequency`` (1s/10s/1m, default 1s), ``stale_factor`` (default 3; None = off).
    At most one event per ``request_interval`` (0.65 s) keeps a connection under
    Finazon's 100 events a minute whatever happens (60 / 0.65 = 92).
    """
    venue = VENUE
    heartbeat_interval = 20.0
    idle_timeout = 45.0          # heartbeat replies arrive every 20 s on a live connection
    reconnect_min = 3.0
    request_interval = 0.65

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.dataset = str(self.options.get("dataset", DEFAULT_DATASET))
        self.frequency = str(self.options.get("frequency", DEFAULT_FREQUENCY))
        if self.frequency not in FREQUENCIES:
            raise ConfigError(f"finazon frequency {self.frequency!r}: expected one of "
                              f"{', '.join(FREQUENCIES)}")
        self.stale_factor = _stale_factor(self.options.get("stale_factor", DEFAULT_STALE_FACTOR))
        wanted: dict[str, dict[str, None]] = {}         # dataset -> tickers, ordered, unique
        for sym in self.symbols:
            dataset, ticker = split_symbol(sym, self.dataset)
            wanted.setdefault(dataset, {})[ticker] = None
        self.by_dataset = {d: list(tickers) for d, tickers in wanted.items()}
        self._request_id = 0

    def _event(self, obj: dict[str, Any]) -> Outgoing:
        self._request_id += 1
        return Outgoing.text({**obj, "request_id": self._request_id})

    def dial(self, url: str) -> Dial:
        key = self.credentials.get("token")
        full = with_query(url, apikey=key) if key else url
        return Dial(full, redact_url(full))

    def on_open(self) -> list[Outgoing]:
        out = []
        for dataset, tickers in self.by_dataset.items():
            for chunk in batches(tickers):
                out.append(self._event({"event": "subscribe", "dataset": dataset, "tickers": chunk,
                                        "channel": "bars", "frequency": self.frequency,
                                        "aggregation": "1m"}))
        return out

    def heartbeat(self) -> Outgoing:
        return self._event({"event": "heartbeat"})

    def decoder_options(self) -> dict[str, Any]:
        return {"stale_factor": self.stale_factor}

    def permanent(self, close_code: int | None,
                  events: Sequence[Event | Status] = ()) -> str | None:
        for ev in events:
            if isinstance(ev, Status) and ev.kind == "fatal":
                return f"{ev.detail} (check TICKREC_FINAZON_TOKEN)"
        return super().permanent(close_code)


def batches(tickers: Sequence[str], limit: int = MAX_EVENT_BYTES * 9 // 10) -> Iterable[list[str]]:
    """``tickers`` cut into lists whose subscribe event stays under ``limit`` bytes."""
    chunk: list[str] = []
    size = 0
    for t in tickers:
        n = len(json.dumps(t, ensure_ascii=False).encode()) + 1
        if chunk and size + n > limit - 300:
            yield chunk
            chunk, size = [], 0
        chunk.append(t)
        size += n
    if chunk:
        yield chunk


# --- server side (simulator and wire replay) ------------------------------------------

def encode_bar(dataset: str, ticker: str, frequency: str, t: int, o: float, h: float, lo: float,
               c: float, v: float, *, publisher_only: bool = False, aggr: str = "1m") -> str:
    """A bar update as Finazon sends it (``publisher_only``: older servers' ``p`` without ``d``)."""
    head: dict[str, Any] = {"p": dataset} if publisher_only else {"d": dataset, "p": dataset}
    return json.dumps({**head, "ch": "bars", "f": frequency, "aggr": aggr, "s": ticker, "t": t,
                       "o": o, "h": h, "l": lo, "c": c, "v": v}, separators=(",", ":"))


def route(payload: bytes | str) -> tuple[str, str] | None:
    """(ticker, "dataset|frequency") of a bar update: what ``FinazonServer.wants`` matches."""
    try:
        obj = json.loads(payload)
        if isinstance(obj, dict) and "status" not in obj and isinstance(obj.get("s"), str):
            return obj["s"], f"{obj.get('d') or obj.get('p') or ''}|{str(obj.get('f', '')).strip()}"
    except (ValueError, TypeError, RecursionError):
        pass
    return None


def _error(message: str, event: Any = None, rid: Any = None, data: list[str] | None = None) -> str:
    obj: dict[str, Any] = {"status": "error", "message": message}
    if event is not None:
        obj = {"event": event, **obj}
    if data is not None:
        obj["data"] = data
    if rid is not None:
        obj["request_id"] = rid
    return json.dumps(obj, separators=(",", ":"))


class FinazonServer(ServerSession):
    """Server side of one Finazon connection: key check, subscriptions, the event budget.

    ``tickers`` is the universe the server knows (empty: any ticker is known).
    """

    def __init__(self, token: str | None = None, *, tickers: Iterable[str] = (),
                 events_per_minute: int = EVENTS_PER_MINUTE) -> None:
        super().__init__(token)
        self.universe = set(tickers)
        self.subs: dict[tuple[str, str], str] = {}       # (dataset, ticker) -> frequency
        self.events_per_minute = events_per_minute
        self._recent: deque[float] = deque()

    def accept(self, path: str, headers: Mapping[str, str]) -> Reply:
        key = dict(parse_qsl(urlsplit(path).query)).get("apikey")
        if self.token is not None and key != self.token:
            return Reply([_error("Invalid API key")], close=(1008, "invalid api key"))
        return Reply()

    def on_frame(self, data: bytes | str, now: float) -> Reply:
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        self._recent.append(now)
        if len(self._recent) > self.events_per_minute:
            return Reply([_error(f"Rate limit exceeded: at most {self.events_per_minute} "
                                 "events per minute")])
        if len(data) > MAX_EVENT_BYTES:
            return Reply([_error(f"Event is larger than {MAX_EVENT_BYTES // 1000} kB")])
        try:
            obj = json_object(data)
        except ProtocolError:
            return Reply([_error("Invalid JSON")])
        event, rid = obj.get("event"), obj.get("request_id")
        if event == "heartbeat":
            return Reply([json.dumps({"event": "heartbeat", "status": "success", "request_id": rid},
                                     separators=(",", ":"))])
        if event == "reset":
            self.subs.clear()
            return Reply()          # "Server doesn't reply to this message"
        if event in ("subscribe", "unsubscribe"):
            return self._subscription(event, obj, rid)
        return Reply([_error(f"Unknown event {_text(event, 40)!r}", event, rid)])

    def _subscription(self, event: str, obj: dict[str, Any], rid: Any) -> Reply:
        dataset, tickers = obj.get("dataset"), obj.get("tickers")
        if not isinstance(dataset, str) or not dataset:
            return Reply([_error("dataset is required", event, rid)])
        if (not isinstance(tickers, list) or not tickers
                or not all(isinstance(t, str) for t in tickers)):
            return Reply([_error("tickers must be a non-empty array of strings", event, rid)])
        if obj.get("channel") != "bars":
            return Reply([_error("channel must be bars", event, rid)])
        freq = obj.get("frequency")
        if freq not in FREQUENCIES:
            return Reply([_error(f"frequency must be one of {', '.join(FREQUENCIES)}", event, rid)])
        if obj.get("aggregation") not in AGGREGATIONS:
            return Reply([_error("aggregation must be 1m", event, rid)])
        tickers = list(dict.fromkeys(tickers))
        frames: list[bytes | str] = []
        if event == "subscribe":
            unknown = [t for t in tickers if self.universe and t not in self.universe]
            already = [t for t in tickers if (dataset, t) in self.subs]
            good = [t for t in tickers if t not in unknown and t not in already]
            for t in good:
                self.subs[(dataset, t)] = freq
            code = "SUCCESS_SUBSCRIPTION"
            problems = [("Unknown tickers: ", unknown), ("Already subscribed: ", already)]
        else:
            good = [t for t in tickers if (dataset, t) in self.subs]
            for t in good:
                del self.subs[(dataset, t)]
            code = "SUCCESS_UNSUBSCRIPTION"
            problems = [("Not subscribed: ", [t for t in tickers if t not in good])]
        if good:
            frames.append(json.dumps({"event": event, "status": "success", "code": code,
                                      "data": good, "request_id": rid}, separators=(",", ":")))
        frames += [_error(what + ", ".join(bad), event, rid, bad) for what, bad in problems if bad]
        return Reply(frames)

    def wants(self, symbol: str, stream: str) -> bool:
        dataset, _, freq = stream.partition("|")
        return self.subs.get((dataset, symbol)) == freq

    def variants(self) -> set[tuple[str, str]]:
        """(dataset, frequency) pairs this client subscribed to: what a server must render."""
        return {(d, f) for (d, _), f in self.subs.items()}


from schemas.venues import VenueSpec  # last: the registry imports this module lazily

SPEC = VenueSpec(VENUE, FinazonDecoder, FinazonClient, FinazonServer, route,
                 {"token": "TICKREC_FINAZON_TOKEN"})
