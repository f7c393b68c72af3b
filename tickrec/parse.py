"""``tickrec parse``: frames in, normalized events out, state kept across lines."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING

from recorder.capture import RecvClock
from schemas.errors import ConfigError
from schemas.events import RawRecord, Status
from schemas.venues import make_decoder

if TYPE_CHECKING:
    from schemas.venues.base import Decoder


def records_from_lines(lines: Iterable[bytes], records: bool) -> Iterator[tuple[str, RawRecord]]:
    """(session, record) pairs: bare frames become incoming text frames of one session."""
    clock = RecvClock()
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r\n")
        if not records:
            if line:
                yield "parse", RawRecord(clock.now(), i, "in", "text", line)
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            payload = (base64.b64decode(obj["payload_b64"]) if "payload_b64" in obj
                       else str(obj.get("payload", "")).encode())
            yield str(obj["session"]), RawRecord(int(obj["ts_recv"]), int(obj["frame"]),
                                                 obj["direction"], obj["kind"], payload,
                                                 obj.get("note"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"line {i + 1} is not a raw record: {exc}") from None


def parse_lines(venue: str, stream: IO[bytes], records: bool = False) -> Iterator[str]:
    decoders: dict[str, Decoder] = {}
    for session, rec in records_from_lines(stream, records):
        dec = decoders.get(session)
        if dec is None:
            dec = decoders[session] = make_decoder(venue, session)
        for ev in dec.feed(rec):
            if isinstance(ev, Status):
                yield json.dumps({"type": "status", "kind": ev.kind, "detail": ev.detail})
            else:
                yield ev.to_json()
