"""The gap tracker: every sequence number of a contiguous stream is seen or counted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.gaps import SequenceTracker


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_seen_plus_missing_equals_span(steps: list[tuple[int, bool, bool]]) -> None:
    """Increasing seqs with random jumps, losses and disconnects: seen + missing == span."""
    tr = SequenceTracker()
    seq, ts, missing = 0, 0, 0
    seen: list[int] = []
    for jump, drop_before, delivered in steps:
        seq += jump
        ts += 1
        if drop_before:
            tr.disconnect(ts, "test")
        if not delivered:
            continue
        for g in tr.observe("A", "A", seq, ts):
            assert g.kind in ("sequence", "disconnect")
            assert g.ts_start is not None and g.ts_end == ts and g.ts_start <= g.ts_end
            missing += g.missing or 0
        seen.append(seq)
    if seen:
        assert len(seen) + missing == seen[-1] - seen[0] + 1
    else:
        assert missing == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=1, max_size=80))
def test_exact_accounting_with_partial_subscription_windows(
        steps: list[tuple[int, bool]]) -> None:
    """Between the first and the last frame seen while contiguous, every number is
    either delivered or counted missing, whatever the windows of partial subscription."""
    tr = SequenceTracker()
    seq, missing = 0, 0
    delivered: list[int] = []
    contiguous_seqs: list[int] = []
    for ts, (jump, contiguous) in enumerate(steps, start=1):
        seq += jump
        for g in tr.observe("A", "A", seq, ts, contiguous=contiguous):
            missing += g.missing or 0
        delivered.append(seq)
        if contiguous:
            contiguous_seqs.append(seq)
    if not contiguous_seqs:
        assert missing == 0
        return
    c0, cl = contiguous_seqs[0], contiguous_seqs[-1]
    inside = [s for s in delivered if c0 <= s <= cl]
    assert missing == (cl - c0 + 1) - len(inside)


def test_jump_across_a_resubscribe_window_is_counted_exactly() -> None:
    tr = SequenceTracker()
    tr.observe("A", "A", 1, 1)
    tr.observe("A", "A", 2, 2)
    tr.disconnect(3, "lost")
    # after reconnect only depth is subscribed: 5 and 7 arrive, 3, 4, 6 went to trades
    [disc] = tr.observe("A", "A", 5, 4, contiguous=False)
    assert disc.kind == "disconnect" and disc.missing is None and disc.ts_start == 2
    assert tr.observe("A", "A", 7, 5, contiguous=False) == []
    # trades subscribed again: 9 arrives; 3, 4, 6, 8 were never seen
    [seq_gap] = tr.observe("A", "A", 9, 6, contiguous=True)
    assert (seq_gap.kind, seq_gap.seq_from, seq_gap.seq_to, seq_gap.missing) == ("sequence", 3, 8, 4)


def test_stale_gap_has_the_silence_as_bounds() -> None:
    tr = SequenceTracker()
    assert tr.observe("A", "A", None, 10, stale_after_ns=100) == []
    assert tr.observe("A", "A", None, 60, stale_after_ns=100) == []
    [g] = tr.observe("A", "A", None, 500, stale_after_ns=100)
    assert (g.kind, g.ts_start, g.ts_end) == ("stale", 60, 500)


def test_state_round_trip_keeps_pending_disconnects() -> None:
    tr = SequenceTracker()
    tr.observe("A", "A", 10, 1)
    tr.disconnect(2, "stopped")
    again = SequenceTracker()
    again.load(tr.state())
    [g] = again.observe("A", "A", 15, 9)
    assert (g.kind, g.ts_start, g.ts_end, g.missing) == ("disconnect", 1, 9, 4)
