"""The capture pipeline of one recorder run: frame → journal → decode → rows → Parquet.

A *run* is one recorder process for one feed: it owns a journal directory
(``ROOT/journal/<feed>/<run>/``), a ``StoreWriter`` and a checkpoint. A *session*
is one connection inside the run (DESIGN.md: ``session`` is the connection a row
came from); its ``open`` record starts it and carries the gap accounting of the
session before (``resume``), so each session's raw frames decode on their own
to exactly the rows stored.

Every record reaches the journal before anything else happens to it. Live
capture and crash recovery push records through the same ``Normalizer``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import StoreError
from schemas.events import RawRecord, Status
from schemas.venues import make_decoder
from schemas.venues.base import Decoder, FastRun
from storage.atomic import read_json, write_json
from storage.fs import StoreRoot, as_store
from storage.journal import JournalWriter, read_header, read_journal
from storage.layout import host_name, journal_dir, new_session_id
from storage.writer import StoreWriter, recover_publish

DONE = "done"
BATCH_MAX = 4096        # pending pushes decoded at once at the latest
DECODE_AFTER_S = 0.1    # ... or once the oldest has waited this long (decode_due)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def store_failure(exc: BaseException) -> str:
    """One line for a failed store write: "disk full" for ENOSPC/EDQUOT."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    if isinstance(cause, OSError) and cause.errno in _FULL:
        return f"disk full ({cause.strerror or 'no space left'})"
    if isinstance(cause, OSError):
        return f"store write failed ({cause.strerror or cause})"
    return f"store write failed ({exc})"


class RecvClock:
    """Receive timestamps: wall clock anchored once, advanced by the monotonic clock.

    The wall clock is read once, here; after that only ``time.monotonic_ns`` moves
    the clock, so a wall clock stepping backwards (or forwards) during capture
    cannot reorder ``ts_recv``: values are strictly increasing within a run.
    ``floor`` is the last receive time of the feed's previous run: a wall clock
    that stepped back between two runs starts this run just after it instead
    (``held_back_ns`` says by how much), so ``ts_recv`` never decreases within a
    feed, across restarts too. ``start_ns`` anchors the clock at another wall time
    than now (tests: a clock that starts just before midnight and then advances in
    real time); one instance may be shared by several runs (the daemon), which
    keeps their times increasing across all of them.
    """

    def __init__(self, start_ns: int | None = None, floor: int = 0) -> None:
        self._wall0 = time.time_ns() if start_ns is None else start_ns
        self._mono0 = time.monotonic_ns()
        self.held_back_ns = max(0, floor - self._wall0)
        self._wall0 += self.held_back_ns
        self._last = floor

    @property
    def last(self) -> int:
        """The last time handed out (the floor before any)."""
        return self._last

    def now(self) -> int:
        t = self._wall0 + time.monotonic_ns() - self._mono0
        if t <= self._last:
            t = self._last + 1
        self._last = t
        return t

    def stamps(self, n: int) -> int:
        """Receive times for ``n`` frames read together: the first is ``now()``, the
        others follow it 1 ns apart (still strictly increasing); returns the first."""
        t = self.now()
        self._last = t + n - 1
        return t


@dataclass
class _Session:
    id: str
    url: str
    symbols: list[str]
    opened: int
    last_ts: int
    frames_in: int = 0
    frames_out: int = 0


@dataclass
class Normalizer:
    """Journal records of one run → events and rows, session by session."""
    venue: str
    feed: str
    writer: StoreWriter | None
    carry: dict[str, Any] = field(default_factory=dict)
    session: _Session | None = None
    decoder: Decoder | None = None
    rows: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    rejected: int = 0

    def ingest(self, rec: RawRecord, write: bool = True) -> list[Any]:
        if rec.kind == "open":
            note = json.loads(rec.note or "{}")
            self.session = _Session(note.get("session", ""), rec.text(), note.get("symbols", []),
                                    rec.ts_recv, rec.ts_recv)
            self.decoder = make_decoder(self.venue, self.session.id)
        if self.session is None or self.decoder is None:
            return []   # records before any open cannot belong to a session
        s = self.session
        s.last_ts = rec.ts_recv
        if rec.direction == "in":
            s.frames_in += 1
        elif rec.direction == "out":
            s.frames_out += 1
        events = self.decoder.feed(rec)
        if write and self.writer is not None:
            self.writer.add_raw(s.id, rec)
            self._write(events)
        if rec.kind == "close":
            self.carry = self.decoder.tracker.state()
            if write and self.writer is not None:
                info = json.loads(rec.note or "{}")
                self.writer.add_session({
                    "ts_recv": s.opened, "session": s.id, "feed": self.feed, "host": host_name(),
                    "url": s.url, "subscriptions": list(s.symbols), "opened": s.opened,
                    "closed": rec.ts_recv, "close_code": info.get("code"),
                    "close_reason": info.get("reason"), "frames_in": s.frames_in,
                    "frames_out": s.frames_out})
            self.session = None
        return events

    def ingest_many(self, recs: Sequence[RawRecord], write: bool = True,
                    events: bool = True) -> list[Any]:
        """``ingest`` for a run of incoming frames of the open session, through the
        decoder's ``feed_batch`` (same rows, same state). ``events=False`` skips
        building the event objects of fast-decoded rows (nobody consumes them)."""
        s, writer = self.session, self.writer if write else None
        if s is None or self.decoder is None:
            return []
        s.last_ts = recs[-1].ts_recv
        s.frames_in += len(recs)
        if writer is not None:
            writer.add_raw_many(s.id, recs)
        out: list[Any] = []
        for item in self.decoder.feed_batch(recs):
            if isinstance(item, FastRun):
                for table, rows in item.tables.items():
                    if writer is not None:
                        writer.add_table(table, rows)
                        self.rows += rows.num_rows
                        self.rows_by_table[table] = self.rows_by_table.get(table, 0) + rows.num_rows
                if events:
                    out += item.events()
            else:
                if writer is not None:
                    self._write(item)
                out += item
        return out

    def _write(self, events: list[Any]) -> None:
        assert self.writer is not None
        for ev in events:
            if not isinstance(ev, Status):
                self.writer.add_event(ev)
                self.rows += 1
                self.rows_by_table[ev.TABLE] = self.rows_by_table.get(ev.TABLE, 0) + 1
                if ev.TABLE == "gaps":
                    self.gaps += 1
                    self.rejected += ev.kind == "rejected"


class Capture:
    """One recorder run. Not thread-safe: drive it from one event loop (``publish``
    alone may run in a worker thread, on a batch already taken).

    When the store cannot be written (disk full: a journal flush or a Parquet
    publish fails), the capture is *blocked*: ``blocked`` says why, nothing
    buffered is dropped (the journal keeps its buffer, a failed batch goes back in
    front of the rows), and the driver should stop reading until a retry
    (``retry()``) succeeds. The pause is then journaled as an ``error`` record
    whose note is ``{"pause": {"since": ts, "reason": ...}}``, from which the
    decoder derives one ``stale`` gap per stream (see ``Decoder.on_pause``).
    """

    def __init__(self, root: Path | str | StoreRoot, venue: str, feed: str | None = None, *,
                 flush_rows: int = 250_000, flush_seconds: float = 30.0,
                 clock: RecvClock | None = None, events: bool = True) -> None:
        self.store = as_store(root)
        self.root = self.store.journal      # the journal is always local (storage.fs)
        self.venue = venue
        self.feed = feed or venue
        self.run = new_session_id()
        self.dir = journal_dir(self.root, self.feed, self.run)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.journal = JournalWriter(self.dir, {"venue": venue, "feed": self.feed,
                                                "run": self.run, "host": host_name()})
        self.writer = StoreWriter(self.store, venue, self.run, self.dir)
        carry = read_json(journal_dir(self.root, self.feed) / "carry.json", {}) or {}
        self.norm = Normalizer(venue, self.feed, self.writer, carry.get("state", {}))
        # A clock given by the caller (the daemon shares one across runs) is kept
        # as it is; otherwise this run starts after the feed's last receive time.
        self.clock = clock or RecvClock(floor=int(carry.get("last_ts") or 0))
        self.records = 0
        self.last_in_ns: int | None = None     # ts_recv of the last frame in (health)
        self.frames_in = 0
        self._frame = 0
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._last_publish = time.monotonic()
        self.blocked: str | None = None         # why the store cannot be written, if so
        self.blocked_since: int | None = None
        self.pauses = 0
        self._unpublished = False               # a failed batch is back in the buffer
        self._pause_note: str | None = None     # a pause that ended between sessions
        # Hot pushes journaled but not yet decoded (Decoder.batchable): decoded together
        # by decode_pending, before any other record and before a publish takes rows.
        self.pending: list[RawRecord] = []
        self._ingested = 0                      # records whose rows are in the writer
        self._undelivered: list[Any] = []       # events decoded but not handed out yet
        self.events = events                    # build event objects of fast-decoded rows
        self._pending_since = 0.0

    # -- records ----------------------------------------------------------------------
    def _record(self, direction: str, kind: str, payload: bytes, note: str | None = None) -> list[Any]:
        rec = RawRecord(self.clock.now(), self._frame, direction, kind, payload, note)
        self._frame += 1
        self.journal.append(rec)        # first: nothing happens to a frame before this
        self.records += 1
        if direction == "in":
            self.frames_in += 1
            self.last_in_ns = rec.ts_recv
            decoder = self.norm.decoder
            if decoder is not None and decoder.batchable(rec):
                return self._hand_out(self._enqueue(rec))
        return self._ingest_now(rec)

    def _enqueue(self, rec: RawRecord) -> list[Any]:
        """Queue a hot push for the next batch decode; when the queue is full, decode it
        and return the events handed out (``decode_pending``), else nothing."""
        if not self.pending:
            self._pending_since = time.monotonic()
        self.pending.append(rec)
        return self.decode_pending() if len(self.pending) >= BATCH_MAX else []

    def _ingest_now(self, rec: RawRecord) -> list[Any]:
        """Decode ``rec`` on its own, after the pending pushes; the events not handed out yet."""
        self.decode_pending(deliver=False)
        events = self.norm.ingest(rec)
        self._ingested += 1
        self.writer.mark(self._ingested)
        return self._hand_out(events)

    def _hand_out(self, events: list[Any]) -> list[Any]:
        if not self._undelivered:
            return events
        out, self._undelivered = self._undelivered + events, []
        return out

    @property
    def buffered_rows(self) -> int:
        """Rows waiting for Parquet, counting each pending push as the two rows it will
        at least make (its raw row and its event): what the reader's cap compares."""
        return self.writer.buffered + 2 * len(self.pending)

    def decode_due(self) -> bool:
        """Pending pushes have waited ``DECODE_AFTER_S``: time to decode them."""
        return bool(self.pending) and time.monotonic() - self._pending_since >= DECODE_AFTER_S

    def decode_pending(self, deliver: bool = True) -> list[Any]:
        """Decode the pending pushes (one ``feed_batch``); their events, and any not
        handed out before, in order. ``deliver=False`` keeps them for the next caller
        that hands events out (``frame_in`` and the like)."""
        if self.pending:
            recs, self.pending = self.pending, []
            self._undelivered += self.norm.ingest_many(recs, events=self.events)
            self._ingested += len(recs)
            self.writer.mark(self._ingested)
        return self._hand_out([]) if deliver else []

    def open_session(self, redacted_url: str, symbols: Sequence[str],
                     decoder: dict[str, Any] | None = None) -> str:
        session = new_session_id()
        self._frame = 0
        note: dict[str, Any] = {"session": session, "symbols": list(symbols),
                                "resume": self.norm.carry}
        if decoder:
            note["decoder"] = decoder
        self._record("event", "open", redacted_url.encode(), json.dumps(note))
        if self._pause_note is not None:
            self._record("event", "error", b"", self._pause_note)
            self._pause_note = None
        return session

    def frame_in(self, payload: bytes | str, text: bool | None = None) -> list[Any]:
        """One frame received: ``str`` is a text frame, ``bytes`` binary unless
        ``text`` says it was a text frame (one that is not valid UTF-8). Never raises
        for the payload: a ``str`` holding a lone surrogate is kept as its bytes (and
        rejected by the decoder)."""
        if isinstance(payload, str):
            return self._record("in", "text", payload.encode("utf-8", "surrogatepass"))
        return self._record("in", "text" if text else "binary", payload)

    def batch_in(self, batch: Sequence[tuple[bytes, bool]]) -> list[Any]:
        """Frames read together, ``(payload, is_text)`` each, in order: stamped
        (``RecvClock.stamps``) and journaled first, then handled as ``frame_in`` would
        one after the other; their events."""
        n = len(batch)
        if not n:
            return []
        ts0, frame0 = self.clock.stamps(n), self._frame
        self.journal.append_in(ts0, frame0, batch)    # first: nothing happens to a frame before this
        self._frame += n
        self.records += n
        self.frames_in += n
        self.last_in_ns = ts0 + n - 1
        decoder = self.norm.decoder
        events: list[Any] = []
        for i, (payload, text) in enumerate(batch):
            rec = RawRecord(ts0 + i, frame0 + i, "in", "text" if text else "binary", payload)
            if decoder is not None and decoder.batchable(rec):
                events += self._enqueue(rec)
            else:
                events += self._ingest_now(rec)
        return events + self._hand_out([])

    def frame_out(self, stored: bytes, kind: str = "text") -> list[Any]:
        return self._record("out", kind, stored)

    def error(self, message: str) -> None:
        self._record("event", "error", b"",
                     message.encode("utf-8", "replace").decode()[:500])

    def close_session(self, code: int | None, reason: str) -> list[Any]:
        if self.norm.session is None:
            return []
        return self._record("event", "close", b"", json.dumps({"code": code, "reason": reason}))

    # -- flushing -----------------------------------------------------------------------
    def flush_journal(self) -> bool:
        """Hand the buffered records to the OS; False (and blocked) if the write failed."""
        try:
            self.journal.flush()
        except StoreError as exc:
            self.block(exc)
            return False
        return True

    def block(self, exc: BaseException) -> bool:
        """Note that the store failed; True the first time (until ``retry`` succeeds)."""
        if self.blocked is not None:
            return False
        self.blocked = store_failure(exc)
        self.blocked_since = self.clock.now()
        return True

    def publish_due(self) -> bool:
        return (self.writer.buffered >= self.flush_rows or self._unpublished
                or time.monotonic() - self._last_publish >= self.flush_seconds)

    def take(self) -> Any:
        """Swap out the buffered rows for ``publish`` (journal flushed first); None
        when the journal cannot be written (the capture is blocked)."""
        if not self.flush_journal():
            return None
        self.decode_pending(deliver=False)
        self._last_publish = time.monotonic()
        return self.writer.take()

    def publish(self, batch: Any) -> list[Path]:
        return self.writer.publish(batch)

    def publish_failed(self, batch: Any, exc: BaseException) -> bool:
        """A ``publish`` raised: keep the batch's rows (unless its intent was recorded,
        then the next publish finishes it) and block. True if newly blocked."""
        if not batch.intent:
            self.writer.restore(batch)
        self._unpublished = True
        return self.block(exc)

    def retry(self) -> bool:
        """While blocked: flush the journal and, if a publish failed, publish again.
        Run on the loop (the publish is synchronous here). True when both worked:
        the capture is unblocked and the pause journaled (see ``resumed``)."""
        if self.blocked is None:
            return True
        try:
            self.journal.flush()
            if self._unpublished:
                self._last_publish = time.monotonic()
                self.decode_pending(deliver=False)
                batch = self.writer.take()
                try:
                    self.writer.publish(batch)
                except BaseException:
                    if not batch.intent:
                        self.writer.restore(batch)
                    raise
                self._unpublished = False
        except Exception:  # noqa: BLE001 - still failing: stay blocked, try again later
            return False
        return True

    def resumed(self) -> list[Any]:
        """After a successful ``retry``: journal the pause; its gaps as events."""
        since, reason = self.blocked_since, self.blocked
        self.blocked = self.blocked_since = None
        self.pauses += 1
        note = json.dumps({"pause": {"since": since, "reason": reason}})
        if self.norm.session is None:
            self._pause_note = note     # journaled right after the next open record
            return []
        return self._record("event", "error", b"", note)

    def close(self) -> None:
        """Publish everything, keep the carry for the next run, mark the run done.

        Raises ``StoreError``/``OSError`` if the store still cannot be written: the
        run then stays unsealed and the next start recovers what reached the journal.
        """
        self.close_session(None, "recorder stopped")
        self.journal.sync()
        self.publish(self.take())
        self.journal.close()
        write_json(journal_dir(self.root, self.feed) / "carry.json",
                   {"run": self.run, "state": self.norm.carry, "last_ts": self.clock.last})
        (self.dir / DONE).touch()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


@dataclass
class RecoveryReport:
    runs: list[str] = field(default_factory=list)
    records_replayed: int = 0
    rows_written: int = 0
    damage: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"recovered run {r}" for r in self.runs]
        if self.runs:
            out.append(f"recovery: {self.records_replayed} journal records re-read, "
                       f"{self.rows_written} rows sealed into Parquet")
        return out + [f"journal damage: {d}" for d in self.damage]


def recover(root: Path | str | StoreRoot, feed: str) -> RecoveryReport:
    """Seal every unfinished run of ``feed`` into Parquet (runs still locked are live)."""
    report = RecoveryReport()
    store = as_store(root)
    base = journal_dir(store.journal, feed)
    if not base.is_dir():
        return report
    for run_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        if (run_dir / DONE).exists():
            continue
        with open(run_dir / "lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue        # a live recorder owns it
            _recover_run(store, feed, run_dir, report)
    return report


def _recover_run(store: StoreRoot, feed: str, run_dir: Path, report: RecoveryReport) -> None:
    root = store.journal
    try:
        header = read_header(run_dir)
    except Exception:   # noqa: BLE001 - a run that never wrote a header holds nothing
        (run_dir / DONE).touch()
        return
    venue, run = header["venue"], header["run"]
    published = recover_publish(store, venue, run, run_dir)
    records, damage = read_journal(run_dir, repair=True)
    report.damage += [f"{d.segment.name} at byte {d.offset}: cut {d.bytes_cut} bytes ({d.reason})"
                      for d in damage]
    writer = StoreWriter(store, venue, run, run_dir)
    carry = read_json(journal_dir(root, feed) / "carry.json", {}) or {}
    norm = Normalizer(venue, feed, writer, carry.get("state", {}))
    redo = writer.redo      # S3: an interrupted publish, re-derived batch for batch
    for i, rec in enumerate(records):
        norm.ingest(rec, write=i >= published)
        if redo is not None and i + 1 == redo:
            writer.mark(redo)
            writer.publish(writer.take())
    total = len(records)
    if norm.session is not None:     # the run died mid-session: close it in its own journal
        jw = JournalWriter(run_dir, header)
        last = records[-1]
        close = RawRecord(last.ts_recv, last.frame + 1, "event", "close", b"",
                          json.dumps({"code": None, "reason": "recorder died; recovered from journal"}))
        jw.append(close)
        jw.close()
        norm.ingest(close)
        total += 1
    writer.mark(total)
    before = 0      # a fresh writer: every row it published is this recovery's
    writer.publish(writer.take())
    report.runs.append(run)
    report.records_replayed += total
    report.rows_written += writer.rows_published - before
    last_ts = max([int(carry.get("last_ts") or 0)] + [r.ts_recv for r in records[-1:]])
    write_json(journal_dir(root, feed) / "carry.json",
               {"run": run, "state": norm.carry, "last_ts": last_ts})
    (run_dir / DONE).touch()

