"""Gap accounting for venues without sequence numbers (Finazon, HedgeTech).

Only two things can be seen on such a feed: the connection dropped
(``disconnect``, from ``SequenceTracker``) and a stream fell silent while it
should have been updating (``stale``). ``TimeTracker`` adds to
``SequenceTracker``:

- ``observe_time``: a data event of a stream with no sequence number; it is
  ``stale`` when the silence since the stream's last event exceeds
  ``stale_after_ns``, counting, when a ``TradingHours`` schedule is given, only
  the time the market was open (a closed market's quiet is no gap);
- ``marks``: one integer per stream carried across sessions and recorder runs
  with the rest of the accounting (Finazon keeps the last bar's open time there,
  to count the bars an outage swallowed).
"""

from __future__ import annotations

from typing import Any

from schemas.gaps import GapSpec, SequenceTracker
from schemas.schedule import TradingHours

MARKS_KEY = "\u0000marks"      # never a stream name; holds the marks in state()


class TimeTracker(SequenceTracker):
    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, int] = {}

    def last_ts(self, stream: str) -> int | None:
        """Receive time of the stream's last event (this or an earlier session)."""
        st = self._streams.get(stream)
        return st.last_ts if st is not None else None

    def observe_time(self, stream: str, symbol: str, ts: int, stale_after_ns: int | None,
                     schedule: TradingHours | None = None) -> list[GapSpec]:
        """Account for one event of ``stream`` received at ``ts``; returns its gaps.

        The first event after a disconnect closes the disconnect gap (never also a
        stale one). ``stale_after_ns=None`` turns staleness off for this event.
        """
        last = self.last_ts(stream)
        if (stale_after_ns is not None and schedule is not None and last is not None
                and ts - last > stale_after_ns and schedule.open_ns(last, ts) <= stale_after_ns):
            stale_after_ns = None
        return self.observe(stream, symbol, None, ts, stale_after_ns=stale_after_ns)

    def state(self) -> dict[str, Any]:
        out = super().state()
        if self.marks:
            out[MARKS_KEY] = dict(self.marks)
        return out

    def load(self, state: dict[str, Any]) -> None:
        state = dict(state)
        marks = state.pop(MARKS_KEY, None)
        if isinstance(marks, dict):
            self.marks.update({str(k): int(v) for k, v in marks.items()})
        super().load(state)
