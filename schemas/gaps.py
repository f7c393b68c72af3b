"""Sequence, disconnect and staleness accounting: pure, one instance per decoder.

A *stream* is whatever carries one sequence counter (AllTick: a symbol's trades
and depth together; Futu: market+code). The tracker remembers, per stream, the
last sequence number and the last receive time, and turns what it sees into gap
descriptions:

- ``sequence``   seq jumped forward on a contiguous stream: ``missing`` = the jump.
- ``duplicate``  seq repeated (the row is still stored; ``missing`` = 0).
- ``regression`` seq went backwards (stored; ``missing`` = 0).
- ``disconnect`` the connection closed; reported on the stream's first frame
  after it (``ts_start`` = last frame before, ``ts_end`` = first after), with the
  sequence jump across the outage folded into ``missing`` when the stream is
  contiguous. A stream that never comes back is reported by ``flush_pending``.
- ``stale``      no frame for longer than the stream's allowed silence.

A stream is *contiguous* while every sequence number it uses reaches us (AllTick:
both trades and depth of the symbol subscribed). While it is not, frames are
counted (``held``) against the last contiguous ``anchor``; when contiguity
returns (after a resubscribe), the numbers neither seen nor held are reported
as one ``sequence`` gap, so loss across a reconnect is counted exactly.

``state()``/``load()`` carry the accounting across process restarts so the
outage between two recorder runs is a gap too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Stream:
    symbol: str
    last_seq: int | None = None        # highest seq seen
    last_ts: int | None = None
    down_since: int | None = None      # ts of the disconnect, while one is pending
    down_reason: str = ""
    anchor: int | None = None          # last seq seen while the stream was contiguous
    held: int = 0                      # new seqs seen since, while it was not


@dataclass(frozen=True, slots=True)
class GapSpec:
    """A gap before it is given its place (session, frame, pos) in the stream."""
    stream: str
    symbol: str
    kind: str
    ts_start: int | None
    ts_end: int | None
    seq_from: int | None = None
    seq_to: int | None = None
    missing: int | None = None
    detail: str | None = None


class SequenceTracker:
    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def observe(self, stream: str, symbol: str, seq: int | None, ts: int, *,
                contiguous: bool = True, stale_after_ns: int | None = None) -> list[GapSpec]:
        """Account for one data event of ``stream`` received at ``ts``."""
        st = self._streams.get(stream)
        if st is None:
            st = self._streams[stream] = _Stream(symbol)
        out: list[GapSpec] = []
        last = st.last_seq
        fresh = seq is not None and (last is None or seq > last)
        jump = None       # numbers between the anchor and seq never seen
        if contiguous and fresh and st.anchor is not None and seq is not None:
            jump = seq - st.anchor - 1 - st.held
        folded = st.down_since is not None      # the jump is part of the disconnect gap
        if folded:
            out.append(GapSpec(stream, symbol, "disconnect", st.last_ts or st.down_since, ts,
                               last + 1 if last is not None else None,
                               seq - 1 if seq is not None else None,
                               jump if contiguous else None, st.down_reason or None))
            st.down_since = None
        elif (stale_after_ns is not None and st.last_ts is not None
              and ts - st.last_ts > stale_after_ns):
            out.append(GapSpec(stream, symbol, "stale", st.last_ts, ts,
                               detail=f"silent for {(ts - st.last_ts) / 1e9:.1f}s"))
        if seq is not None and last is not None:
            if seq == last:
                out.append(GapSpec(stream, symbol, "duplicate", ts, ts, seq, seq, 0,
                                   f"seq {seq} repeated"))
            elif seq < last:
                out.append(GapSpec(stream, symbol, "regression", ts, ts, last, seq, 0,
                                   f"seq went back from {last} to {seq}"))
            elif jump and not folded:
                assert st.anchor is not None
                out.append(GapSpec(stream, symbol, "sequence", st.last_ts, ts, st.anchor + 1,
                                   seq - 1, jump, None if st.held == 0 else
                                   f"{st.held} frames seen while not all streams were subscribed"))
        if fresh:
            st.last_seq = seq
            if contiguous:
                st.anchor, st.held = seq, 0
            elif st.anchor is not None:
                st.held += 1
        st.last_ts = ts
        return out

    def disconnect(self, ts: int, reason: str = "") -> None:
        """The connection closed at ``ts``: every known stream owes a disconnect gap."""
        for st in self._streams.values():
            if st.down_since is None:
                st.down_since = ts
                st.down_reason = reason

    def flush_pending(self, ts: int | None = None) -> list[GapSpec]:
        """Report disconnects that no later frame closed (``ts_end`` = ``ts`` or None)."""
        out = []
        for name, st in self._streams.items():
            if st.down_since is not None:
                out.append(GapSpec(name, st.symbol, "disconnect", st.last_ts or st.down_since, ts,
                                   detail=(st.down_reason or "") + " (no data since)"))
                st.down_since = None
        return out

    def streams(self) -> list[tuple[str, str]]:
        """(stream, symbol) of every stream seen so far, this session or before."""
        return [(name, st.symbol) for name, st in self._streams.items()]

    def state(self) -> dict[str, Any]:
        return {k: [s.symbol, s.last_seq, s.last_ts, s.down_since, s.down_reason, s.anchor, s.held]
                for k, s in self._streams.items()}

    def load(self, state: dict[str, Any]) -> None:
        for k, values in state.items():
            self._streams[k] = _Stream(*values)
