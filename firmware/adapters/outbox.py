"""The durable event outbox: a SQLite ``EventSink`` that the MQTT publisher drains.

Usage flow::

    outbox = SqliteOutbox(state_dir / "outbox.sqlite", max_events=300_000)
    stored = outbox.append(event)          # scan loop: committed (fsync) before it returns
    rows = outbox.pending(after_seq=0, limit=100)   # publisher thread: [(seq, json_text)]
    outbox.mark_sent([seq, ...])           # only after a successful PUBACK
    outbox.mark_acked(acked_through)       # app_ack only: the consumer stored every seq <= it
    outbox.requeue_unacked(before_s)       # app_ack only: published too long ago, not acknowledged
    outbox.prune(now_s)                    # delivered rows, by age and size, small batches
    outbox.close()

Storage (``outbox.sqlite`` in the state directory): WAL journal, ``synchronous=FULL``, one
``events`` table keyed by ``seq`` (the rowid, so appends go to the end of the B-tree), the
event JSON as text, a ``sent`` flag and a partial index over unsent rows only, so
``pending`` and the backlog figures cost O(batch) whatever the number of stored events.
Each ``append`` is one transaction that assigns ``seq`` and ``event_id``.

Application-level acknowledgement (``app_ack=True``, config ``mqtt.app_ack``): a PUBACK only
proves the broker took the event, so a row then moves to a third state, "published, awaiting
the consumer's ack". The ``sent`` column holds ``SENT_NO`` (0, not yet PUBACKed), ``SENT_DONE``
(1, delivered: PUBACKed with app_ack off, or acknowledged by the consumer with app_ack on) or
``SENT_AWAITING`` (2, PUBACKed, consumer ack outstanding; ``published_s`` holds the wall time of
the PUBACK). ``mark_acked(n)`` moves to ``SENT_DONE`` every row with ``seq <= n`` that this gate
has itself had PUBACKed (awaiting the ack, or requeued after one: ``published_s`` set), and
never a row it has not published: an ack names only what the consumer stored, and what the
consumer stored under this gate's seq may have been forged (issue 10, attack 1). The highest
seq ever PUBACKed is kept in ``meta`` (``published_high``, ``published_high`` property) so the
publisher can ignore acks above it, across restarts and pruning;
``requeue_unacked(before_s)`` moves rows published before ``before_s`` back to ``SENT_NO`` so
they are published again (at least once; consumers drop duplicates on ``event_id``). Two more
partial indexes (over awaiting rows by ``seq`` and by ``published_s``) keep both O(batch).
Existing files gain the ``published_s`` column (``ALTER TABLE``, NULL default) and the indexes
at open; their sent rows (1) stay delivered. Opening with app_ack off turns awaiting rows into
delivered ones (that is what a PUBACK means without app_ack).

``seq`` never goes backwards and is never reused: the ``meta`` table keeps its high-water
mark across pruning, and a small file beside the database (``outbox.seq``, written
atomically) reserves seq numbers in blocks of ``SEQ_RESERVE_BLOCK``. A fresh database
(deleted or quarantined file) starts above that reservation, so a consumer sees a gap,
never a repeated ``seq``.

Skipped reservations: when a fresh database jumps over a reservation, the range it will
never use is recorded, before the jump is committed, in ``outbox.skips`` beside it (JSON,
written atomically, 0600; ``firmware.core.seq_skips``): ``quarantined_outbox`` when the old
file was just quarantined, ``new_outbox`` when it was missing or empty. A quarantined file is
read read-only (``highest_seq_in``): if its highest seq H (events and ``meta``) can be read,
the skip is ``H+1..reserved`` and exact, and its unsent events up to H are not part of it
(they are recoverable from the file); if it cannot be read, or the file was gone, the skip is
the whole last block (``reserved - SEQ_RESERVE_BLOCK + 1 .. reserved``), marked not exact.
The jump and the schema of the fresh database are one transaction, so a crash in between
never lets seq restart at 1; a skip already recorded for the same reservation is not recorded
twice. ``skips`` lists them (at most ``MAX_SKIPS``, oldest dropped); the publisher publishes
them signed (``<prefix>/<device_id>/skips``).

Budget: ``max_events`` counts stored rows, sent and unsent. Delivered rows are pruned first
(oldest first); when the undelivered rows alone fill the budget, ``append`` raises
``StorageFull`` (a ``StoreError``): the gate service then refuses grants with reason
``storage_full``. Undelivered rows are never dropped. It recovers by itself as soon as the
publisher marks rows sent. Alarms are raised at 50 % and 80 % of the budget (undelivered rows).
"Undelivered" (the ``unsent`` figure, the backlog) means not yet PUBACKed with app_ack off, and
not yet acknowledged by the consumer (not PUBACKed, or PUBACKed and awaiting the ack) with
app_ack on; only delivered rows are ever pruned.

Corruption: a database that cannot be opened, fails ``PRAGMA quick_check`` or has the
wrong schema is renamed ``outbox.sqlite.corrupt-<UTC time>`` (with its ``-wal``), an alarm
is raised, and a fresh outbox starts with ``seq`` above the reserved high-water mark.
The alarm ``outbox_quarantined`` is raised at start while a quarantined file is in the state
directory; while it is there the gate fails closed (``firmware.features.device_monitor``: every code refused
with ``fail_closed``). An operator clears it by moving the file away once it has been
recovered (seen at the next start, or on ``reload``, which calls ``quarantined_files()``).
``read_bodies`` reads a quarantined file's events read-only for that (``qrgate outbox export``).

Threads: one writer (the scan loop) and the publisher thread share one connection behind
a lock; every critical section is one short transaction. ``stats()`` is called several
times a second (status, field state, retained state), so it never takes that lock and
never does I/O: this object is the only writer of the database, so it keeps the figures
in memory (row counts, the oldest unsent row, the alarm level), updates them after each
committed append, mark_sent and prune, and publishes them as one immutable tuple. The
state directory is globbed for quarantined files only at open (where a quarantine
happens) and by ``quarantined_files()``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from firmware.adapters.atomic_files import fsync_dir, write_atomic
from firmware.core.errors import StoreError
from firmware.core.events import new_event_id, rfc3339_ms
from firmware.core.model import OutboxStats, ScanEvent
from firmware.core.seq_skips import MAX_SKIPS, SeqSkip, SkipsError, describe, skipped_range

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SENT_NO, SENT_DONE, SENT_AWAITING = 0, 1, 2
SEQ_RESERVE_BLOCK = 1000
PRUNE_BATCH = 500
# Sent rows are pruned down to this share of the budget, so appends rarely prune themselves.
PRUNE_TARGET_SHARE = 0.9
ALARM_LEVELS = (0.5, 0.8)
QUARANTINE_INFIX = ".corrupt-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    created_s REAL NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL,
    published_s REAL
);
CREATE INDEX IF NOT EXISTS events_unsent ON events(seq) WHERE sent = 0;
"""
# Applied after _SCHEMA (and after adding published_s to an older file).
_SCHEMA_APP_ACK = """
CREATE INDEX IF NOT EXISTS events_awaiting ON events(seq) WHERE sent = 2;
CREATE INDEX IF NOT EXISTS events_awaiting_age ON events(published_s) WHERE sent = 2;
"""


class StorageFull(StoreError):
    """The outbox budget is used up by unsent events; the new event was not stored."""




def _utc_stamp(wall_s: float) -> str:
    return datetime.fromtimestamp(wall_s, UTC).strftime("%Y%m%dT%H%M%SZ")


def read_seq_reservation(path: Path) -> int:
    """Return the seq reserved in ``outbox.seq`` (0 if missing or unreadable)."""
    try:
        return max(0, int(path.read_text().strip() or "0"))
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as err:
        log.error("seq reservation file %s is unreadable (%s); seq continues from the database only",
                  path, err)
        return 0


def write_seq_reservation(path: Path, seq: int) -> None:
    """Atomically replace ``outbox.seq`` with seq (temp file, fsync, rename, fsync dir).

    Raises:
        OSError: it could not be written.
    """
    write_atomic(path, f"{seq}\n".encode(), mode=0o600)


def read_seq_skips(path: Path) -> tuple[SeqSkip, ...]:
    """Return the skips recorded in ``outbox.skips`` (none if missing).

    A damaged file is logged and read as empty: the skips it held cannot be published again,
    and the history shows those ranges as gaps (nothing is ever written off by mistake).
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, list):
            raise SkipsError("not a list")
        return tuple(SeqSkip.from_json_dict(item) for item in doc)
    except FileNotFoundError:
        return ()
    except (OSError, ValueError, RecursionError) as err:
        log.error("seq skips file %s is unreadable (%s); the skips it held are no longer published, "
                  "so the history shows them as gaps", path, err)
        return ()


def write_seq_skips(path: Path, skips: Iterable[SeqSkip]) -> None:
    """Atomically replace ``outbox.skips`` with skips (temp file, fsync, rename, fsync dir; 0600).

    Raises:
        OSError: it could not be written.
    """
    text = json.dumps([s.to_json_dict() for s in skips], separators=(",", ":"), indent=None)
    write_atomic(path, (text + "\n").encode("utf-8"), mode=0o600)


def highest_seq_in(path: Path) -> int | None:
    """The highest seq an outbox file ever assigned (its events and its ``meta`` high-water
    mark, so pruned rows count), read without modifying it; None if that cannot be read.

    The file may be damaged (a quarantined outbox): only the table's rightmost path and the
    ``meta`` row are read, so a damaged index or an unrelated damaged page does not hide the
    answer, while a damaged path to it raises and gives None.
    """
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            conn.execute("PRAGMA query_only = 1")
            highest = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
            meta = conn.execute("SELECT value FROM meta WHERE key = 'seq_high'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if meta is None or (highest is not None and type(highest) is not int) or type(meta[0]) is not int:
        return None  # without its high-water mark, pruned rows could hide higher seqs
    return max(highest or 0, meta[0])


class SqliteOutbox:
    """The durable EventSink and publish queue. See the module docstring for the policies.

    Args:
        path: the database file (``<state_dir>/outbox.sqlite``).
        max_events: budget of stored rows (config ``outbox.max_events``).
        retention_s: sent rows older than this are pruned (config ``outbox.retention_days``).
        wall: wall clock (Unix seconds) for event ids, ``created_s`` and the quarantine name.
        random_bytes: randomness for event ids.
        seq_file: the seq reservation file (default ``outbox.seq`` beside ``path``).
        skips_file: where skipped reservations are recorded (default ``outbox.skips`` beside
            ``path``).
        on_alarm: called with (name, text or None) when an alarm is raised or cleared;
            it runs on the calling thread and must return quickly.
        app_ack: a PUBACK leaves a row awaiting the consumer's ack (config ``mqtt.app_ack``).

    Raises:
        StoreError: the state directory is unusable, a bad database could not be moved aside,
            or the seq range a fresh database skips could not be recorded in ``outbox.skips``.
    """

    def __init__(self, path: Path, *, max_events: int = 300_000, retention_s: float = 7 * 86400.0,
                 wall: Callable[[], float] = time.time, random_bytes: Callable[[int], bytes] = os.urandom,
                 seq_file: Path | None = None, skips_file: Path | None = None,
                 on_alarm: Callable[[str, str | None], None] | None = None,
                 app_ack: bool = False) -> None:
        self.path = Path(path)
        self.app_ack = app_ack
        self._awaiting = 0  # rows in SENT_AWAITING (app_ack)
        self._oldest_published_s: float | None = None  # the oldest published_s of an awaiting row
        self.max_events = max_events
        self.retention_s = retention_s
        self._wall = wall
        self._random = random_bytes
        self._seq_file = seq_file or self.path.with_name("outbox.seq")
        self._skips_file = skips_file or self.path.with_name("outbox.skips")
        self._on_alarm = on_alarm
        self._lock = threading.Lock()
        self._closed = False
        self._alarm_level = 0.0
        self._oldest_unsent: tuple[int, float] | None = None  # (seq, created_s) of the lowest unsent seq
        # What stats() reads, replaced whole after each change: (stored, unsent, oldest_unsent_s,
        # seq_high, alarm_level, awaiting). One attribute read, so never torn and never waiting
        # on the lock.
        self._figures: tuple[int, int, float | None, int, float, int] = (0, 0, None, 0, 0.0, 0)
        self._quarantined: tuple[str, ...] = ()
        self.quarantined_now: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the state directory {self.path.parent} ({err.strerror}); "
                             "check device.state_dir and its permissions") from err
        self._reserved = read_seq_reservation(self._seq_file)
        self.skips = read_seq_skips(self._skips_file)
        self.skipped_now: SeqSkip | None = None
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as err:
            if _is_busy(err):
                raise StoreError(f"outbox {self.path} is locked by another process; stop it "
                                 "(another qrgate daemon or tool)") from err
            self.quarantined_now = self._quarantine(err)
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as err2:
                raise StoreError(f"cannot create a fresh outbox at {self.path} ({err2}); check the "
                                 "state directory (disk full, read-only?)") from err2
        self._load_counters()
        self._update_alarm()
        self._publish_figures()
        quarantined = self.quarantined_files()
        if quarantined:
            self._alarm("outbox_quarantined",
                        f"{len(quarantined)} quarantined outbox file(s) in {self.path.parent}: "
                        f"{', '.join(quarantined)}; recover their unsent events, then move them away")

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        """Open (creating if needed) and verify the database; a fresh one jumps over the
        reservation (``_jump_over_reservation``)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"journal_mode is {mode}, WAL is required")
            conn.execute("PRAGMA synchronous = FULL")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            fresh = "events" not in tables
            if not fresh:
                check = conn.execute("PRAGMA quick_check").fetchall()
                if check != [("ok",)]:
                    raise sqlite3.DatabaseError(f"quick_check failed: {check[:3]}")
                cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
                if not {"seq", "event_id", "created_s", "sent", "body"} <= cols or "meta" not in tables:
                    raise sqlite3.DatabaseError(f"unexpected outbox schema (columns {sorted(cols)})")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            if "published_s" not in {r[1] for r in conn.execute("PRAGMA table_info(events)")}:
                conn.execute("ALTER TABLE events ADD COLUMN published_s REAL")  # a file from before app_ack
            for stmt in _SCHEMA_APP_ACK.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            if not self.app_ack:
                # Without app_ack a PUBACK means delivered: rows left awaiting by an app_ack run are done.
                conn.execute("UPDATE events SET sent = 1 WHERE sent = 2")
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('seq_high', 0)")
            if conn.execute("SELECT 1 FROM meta WHERE key = 'published_high'").fetchone() is None:
                # A file from before published_high: one scan at this open, then kept up to date.
                conn.execute("INSERT INTO meta(key, value) SELECT 'published_high', coalesce(max(seq), 0) "
                             "FROM events WHERE sent != 0 OR published_s IS NOT NULL")
            if fresh:
                self._jump_over_reservation(conn)
            conn.execute("COMMIT")
            return conn
        except BaseException:
            conn.close()
            raise

    def _jump_over_reservation(self, conn: sqlite3.Connection) -> None:
        """A fresh database: record the range it will never use, then start seq above it.

        Runs inside the schema transaction, so the jump commits with the schema or not at all.

        Raises:
            StoreError: the skip could not be recorded (the transaction is rolled back).
        """
        old = self.quarantined_now
        highest = highest_seq_in(old) if old is not None else None
        if highest is not None and highest > self._reserved:
            self._reserved = highest  # a reservation file older than the database: never reuse
        found = skipped_range(self._reserved, SEQ_RESERVE_BLOCK, highest)
        if found is not None and not any(s.last_seq == self._reserved for s in self.skips):
            first, last, exact = found
            skip = SeqSkip(first_seq=first, last_seq=last, exact=exact,
                           cause="quarantined_outbox" if old is not None else "new_outbox",
                           file=old.name if old is not None else "", declared_at=rfc3339_ms(self._wall()))
            skips = (*self.skips, skip)[-MAX_SKIPS:]
            try:
                write_seq_skips(self._skips_file, skips)
            except OSError as err:
                raise StoreError(f"cannot record the skipped seq {first}..{last} in {self._skips_file} "
                                 f"({err.strerror or err}); check free space and permissions on the "
                                 "state partition") from err
            self.skips, self.skipped_now = skips, skip
            log.warning("fresh outbox: seq %d..%d will never be used (%s); declared to the history as a "
                        "skipped reservation", first, last, describe(skip))
        if self._reserved > 0:
            conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'seq_high'", (self._reserved,))

    def _quarantine(self, err: Exception) -> Path:
        stamp = _utc_stamp(self._wall())
        target = self.path.with_name(f"{self.path.name}{QUARANTINE_INFIX}{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}{QUARANTINE_INFIX}{stamp}-{n}")
        try:
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(target) + suffix))
            if self.path.exists():
                os.replace(self.path, target)
            fsync_dir(self.path.parent)
        except OSError as move_err:
            raise StoreError(f"outbox {self.path} is unreadable ({err}) and cannot be moved aside "
                             f"({move_err.strerror}); move it away by hand") from move_err
        log.error("outbox %s was unreadable (%s); moved it to %s and started a fresh outbox",
                  self.path, err, target.name)
        return target

    def quarantined_files(self) -> tuple[str, ...]:
        """Names of quarantined outbox databases in the state directory (not their -wal/-shm).

        Globs the directory (without the lock) and refreshes what ``stats()`` reports."""
        prefix = self.path.name + QUARANTINE_INFIX
        found = tuple(sorted(p.name for p in self.path.parent.glob(prefix + "*")
                             if not p.name.endswith(("-wal", "-shm"))))
        self._quarantined = found
        return found

    def _load_counters(self) -> None:
        c = self._conn
        self._stored = c.execute("SELECT count(*) FROM events").fetchone()[0]
        self._unsent = c.execute("SELECT count(*) FROM events WHERE sent = 0").fetchone()[0]
        self._awaiting = c.execute("SELECT count(*) FROM events WHERE sent = 2").fetchone()[0]
        self._oldest_published_s = self._query_oldest_published()
        meta_high = c.execute("SELECT value FROM meta WHERE key = 'seq_high'").fetchone()[0]
        max_seq = c.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        self._seq_high = max(meta_high, max_seq)
        self._published_high = int(c.execute("SELECT value FROM meta WHERE key = 'published_high'").fetchone()[0])
        self._oldest_unsent = self._query_oldest_unsent()

    # ------------------------------------------------------------------ the sink

    def append(self, event: ScanEvent) -> ScanEvent:
        """Store the event in one committed transaction; return it with event_id and seq.

        Blocks for one fsync'd commit (a few ms), plus a small prune batch when the
        budget is reached.

        Raises:
            StorageFull: unsent events fill the budget (nothing was stored).
            StoreError: the database could not be written (disk full, I/O error, closed).
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"outbox {self.path} is closed")
            if self._stored >= self.max_events and self._stored > self._backlog:
                try:
                    self._prune_locked(self._wall(), int(self.max_events * PRUNE_TARGET_SHARE), max_batches=4)
                finally:
                    self._publish_figures()
            if self._backlog >= self.max_events or self._stored >= self.max_events:
                self._update_alarm()
                self._publish_figures()
                raise StorageFull(f"outbox is full: {self._backlog} undelivered events fill outbox.max_events = "
                                  f"{self.max_events}; they go out when the broker (and, with "
                                  "mqtt.app_ack, the consumer) is reachable (check [mqtt]), or raise the budget")
            seq = self._seq_high + 1
            now_s = self._wall()
            stored = replace(event, seq=seq, event_id=event.event_id or new_event_id(now_s, self._random(10)))
            body = json.dumps(stored.to_json_dict(), ensure_ascii=False, separators=(",", ":"))
            try:
                if seq > self._reserved:
                    write_seq_reservation(self._seq_file, seq + SEQ_RESERVE_BLOCK - 1)
                    self._reserved = seq + SEQ_RESERVE_BLOCK - 1
                with self._transaction():
                    self._conn.execute("INSERT INTO events(seq, event_id, created_s, sent, body) "
                                       "VALUES (?, ?, ?, 0, ?)", (seq, stored.event_id, now_s, body))
            except (sqlite3.Error, OSError) as err:
                raise StoreError(f"cannot store a scan event in {self.path} ({err}); check free space "
                                 "on the state partition") from err
            self._seq_high = seq
            self._stored += 1
            self._unsent += 1
            if self._oldest_unsent is None:
                self._oldest_unsent = (seq, now_s)
            self._update_alarm()
            self._publish_figures()
            return stored

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction on the shared connection (the caller holds the lock):
        BEGIN IMMEDIATE, COMMIT when the block ends, ROLLBACK if it raises anything."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction left to roll back (SQLite already did)

    # ------------------------------------------------------------------ the publisher side

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[tuple[int, str]]:
        """Return up to limit unsent events with seq > after_seq, in seq order, as (seq, json text).

        Raises:
            StoreError: the database could not be read.
        """
        with self._lock:
            try:
                return self._conn.execute(
                    "SELECT seq, body FROM events WHERE sent = 0 AND seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit)).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"cannot read the outbox {self.path} ({err})") from err

    def mark_sent(self, seqs: Iterable[int]) -> int:
        """Mark events sent (their PUBACK arrived with a success code), in one transaction.

        With app_ack off they are delivered; with app_ack on they await the consumer's ack
        (``published_s`` is set to now).

        Returns the number of rows that changed (already-sent or pruned seqs are ignored).

        Raises:
            StoreError: the database could not be written.
        """
        batch = [(s,) for s in seqs]
        if not batch:
            return 0
        with self._lock:
            now_s = self._wall()
            try:
                with self._transaction():
                    before = self._conn.total_changes
                    if self.app_ack:
                        self._conn.executemany("UPDATE events SET sent = 2, published_s = ? "
                                               "WHERE seq = ? AND sent = 0", [(now_s, s) for (s,) in batch])
                    else:
                        self._conn.executemany("UPDATE events SET sent = 1 WHERE seq = ? AND sent = 0", batch)
                    changed = self._conn.total_changes - before
                    published_high = max(self._published_high, max(s for (s,) in batch))
                    if published_high > self._published_high:
                        self._conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'published_high'",
                                           (published_high,))
                    oldest = self._oldest_unsent
                    if changed and not self.app_ack and oldest is not None and (oldest[0],) in batch:
                        oldest = self._query_oldest_unsent()  # one indexed row, in the same transaction
            except sqlite3.Error as err:
                raise StoreError(f"cannot mark events sent in {self.path} ({err})") from err
            self._unsent -= changed
            self._published_high = published_high
            if self.app_ack and changed:
                self._awaiting += changed
                if self._oldest_published_s is None:
                    self._oldest_published_s = now_s
            self._oldest_unsent = oldest
            self._update_alarm()
            self._publish_figures()
            return changed

    def mark_acked(self, acked_through: int) -> int:
        """app_ack: mark delivered every row with ``seq <= acked_through`` that this gate had
        PUBACKed (the consumer stored every seq up to it): awaiting its ack, or queued to be
        published again after one. A row never published stays unsent whatever the ack says:
        what the consumer holds under that seq did not come from this outbox.

        Returns the number of rows that changed. One transaction over the partial indexes.

        Raises:
            StoreError: the database could not be written.
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"outbox {self.path} is closed")
            try:
                with self._transaction():
                    before = self._conn.total_changes
                    self._conn.execute("UPDATE events SET sent = 1 WHERE sent = 2 AND seq <= ?", (acked_through,))
                    awaiting_done = self._conn.total_changes - before
                    self._conn.execute("UPDATE events SET sent = 1 WHERE sent = 0 AND seq <= ? "
                                       "AND published_s IS NOT NULL", (acked_through,))
                    unsent_done = self._conn.total_changes - before - awaiting_done
                    oldest_unsent = self._query_oldest_unsent()
                    oldest_published = self._query_oldest_published()
            except sqlite3.Error as err:
                raise StoreError(f"cannot mark events acknowledged in {self.path} ({err})") from err
            self._awaiting -= awaiting_done
            self._unsent -= unsent_done
            self._oldest_unsent = oldest_unsent
            self._oldest_published_s = oldest_published
            self._update_alarm()
            self._publish_figures()
            return awaiting_done + unsent_done

    def requeue_unacked(self, published_before_s: float, limit: int = PRUNE_BATCH) -> int | None:
        """app_ack: put up to limit rows published before ``published_before_s`` (wall time)
        and still not acknowledged back in the queue, so they are published again.

        Cheap when nothing is due (an in-memory check, no I/O).

        Returns:
            The lowest seq requeued, or None if none was due.

        Raises:
            StoreError: the database could not be written.
        """
        oldest = self._oldest_published_s
        if oldest is None or oldest >= published_before_s:
            return None
        with self._lock:
            if self._closed:
                raise StoreError(f"outbox {self.path} is closed")
            try:
                with self._transaction():
                    seqs = [r[0] for r in self._conn.execute(
                        "SELECT seq FROM events WHERE sent = 2 AND published_s < ? ORDER BY published_s LIMIT ?",
                        (published_before_s, limit))]
                    self._conn.executemany("UPDATE events SET sent = 0 WHERE seq = ? AND sent = 2",
                                           [(s,) for s in seqs])
                    oldest_published = self._query_oldest_published()
            except sqlite3.Error as err:
                raise StoreError(f"cannot requeue unacknowledged events in {self.path} ({err})") from err
            self._awaiting -= len(seqs)
            self._unsent += len(seqs)
            self._oldest_published_s = oldest_published
            self._publish_figures()
            return min(seqs) if seqs else None

    def prune(self, now_s: float, max_batches: int = 20) -> int:
        """Delete sent rows older than the retention, then the oldest sent rows while the
        store is above 90 % of its budget. Small batches, one transaction each.

        Returns the number of rows deleted. Unsent rows are never deleted.

        Raises:
            StoreError: the database could not be written.
        """
        deleted = 0
        for _ in range(max_batches):
            # The lock is taken per batch, so the scan loop's appends wait one batch at most.
            with self._lock:
                if self._closed:
                    break
                try:
                    n = self._prune_locked(now_s, int(self.max_events * PRUNE_TARGET_SHARE), 1)
                finally:
                    self._publish_figures()  # also after a failed batch: earlier deletes committed
            if n == 0:
                break
            deleted += n
        return deleted

    def _prune_locked(self, now_s: float, target: int, max_batches: int) -> int:
        deleted = 0
        # Age: look only at the oldest PRUNE_BATCH rows (rows are stored in time order), so a
        # store full of young sent rows costs one small read, not a scan of the table.
        # Size: the oldest sent rows, only while above the target and while sent rows exist.
        queries = [("SELECT seq FROM (SELECT seq, sent, created_s FROM events ORDER BY seq LIMIT ?) "
                    "WHERE sent = 1 AND created_s < ?",
                    lambda: (PRUNE_BATCH, now_s - self.retention_s), lambda: True),
                   ("SELECT seq FROM events WHERE sent = 1 ORDER BY seq LIMIT ?",
                    lambda: (min(PRUNE_BATCH, self._stored - target),), lambda: self._stored > target)]
        try:
            for sql, args, wanted in queries:
                for _ in range(max_batches):
                    if self._stored <= self._backlog or not wanted():
                        break
                    seqs = [r[0] for r in self._conn.execute(sql, args())]
                    if not seqs:
                        break
                    with self._transaction():
                        # Keep the high-water mark in meta: the deleted rows may include max(seq).
                        self._conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'seq_high'",
                                           (self._seq_high,))
                        self._conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(seqs))})",
                                           seqs)
                    deleted += len(seqs)
                    self._stored -= len(seqs)
        except sqlite3.Error as err:
            raise StoreError(f"cannot prune the outbox {self.path} ({err})") from err
        return deleted

    # ------------------------------------------------------------------ figures and alarms

    @property
    def _backlog(self) -> int:
        return int(self._unsent + self._awaiting)

    @property
    def unsent(self) -> int:
        """Number of undelivered events, the backlog (in memory, no I/O): not PUBACKed; with
        app_ack on, also those PUBACKed and awaiting the consumer's ack.

        Read from the figures published after each committed change, like ``stats()``: other
        threads never see a change half applied (a row moved from unsent to awaiting the ack
        counted in neither, so the backlog looked drained)."""
        return self._figures[1]

    @property
    def unpublished(self) -> int:
        """Number of events not yet PUBACKed (in memory, no I/O; consistent with ``stats()``)."""
        figures = self._figures
        return figures[1] - figures[5]

    @property
    def published_high(self) -> int:
        """The highest seq this outbox ever had PUBACKed (kept in ``meta``, survives pruning)."""
        return self._published_high

    @property
    def seq_high(self) -> int:
        """The highest seq assigned so far."""
        return self._seq_high

    def stats(self) -> OutboxStats:
        """A snapshot for status and state: in-memory figures only, no lock, no I/O."""
        stored, unsent, oldest_s, seq_high, level, awaiting = self._figures
        return OutboxStats(stored=stored, unsent=unsent, oldest_unsent_s=oldest_s, seq_high=seq_high,
                           max_events=self.max_events, fill=min(1.0, unsent / self.max_events),
                           alarm_level=level, quarantined=self._quarantined, awaiting_ack=awaiting)

    def _publish_figures(self) -> None:
        """Replace what stats() reads (call with the lock held, after a committed change)."""
        oldest = self._oldest_unsent
        self._figures = (self._stored, self._backlog, None if oldest is None else oldest[1],
                         self._seq_high, self._alarm_level, self._awaiting)

    def _query_oldest_unsent(self) -> tuple[int, float] | None:
        """The lowest undelivered row (unsent; with app_ack also awaiting), two indexed reads."""
        rows = [self._conn.execute(f"SELECT seq, created_s FROM events WHERE sent = {state} "
                                   "ORDER BY seq LIMIT 1").fetchone()
                for state in ((SENT_NO, SENT_AWAITING) if self.app_ack else (SENT_NO,))]
        found = [r for r in rows if r is not None]
        return None if not found else min((r[0], r[1]) for r in found)

    def _query_oldest_published(self) -> float | None:
        row = self._conn.execute("SELECT min(published_s) FROM events WHERE sent = 2").fetchone()
        return None if row is None else row[0]

    def _update_alarm(self) -> None:
        fill = self._backlog / self.max_events
        level = (1.0 if self._backlog >= self.max_events
                 else max([0.0] + [a for a in ALARM_LEVELS if fill >= a]))
        if level == self._alarm_level:
            return
        rising = level > self._alarm_level
        self._alarm_level = level
        if level == 0.0:
            log.info("outbox backlog back below %d %% of its budget", int(ALARM_LEVELS[0] * 100))
            self._alarm("outbox_fill", None)
            return
        text = ("outbox full: new scans are refused (storage_full)" if level >= 1.0 else
                f"outbox backlog at {int(level * 100)} % of its budget ({self._backlog} of {self.max_events})")
        (log.error if rising and level >= ALARM_LEVELS[-1] else log.warning)("%s", text)
        self._alarm("outbox_fill", text)

    def _alarm(self, name: str, text: str | None) -> None:
        if self._on_alarm is not None:
            self._on_alarm(name, text)

    def close(self) -> None:
        """Close the database. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error as err:
                log.warning("closing the outbox failed: %s", err)


def _is_busy(err: sqlite3.DatabaseError) -> bool:
    text = str(err).lower()
    return "locked" in text or "busy" in text


class UnavailableSink:
    """The fail-closed EventSink used when no outbox can be opened: every append raises.

    The gate keeps running (no crash loop); grants are refused because nothing can be
    recorded, and the reason is shown in the status and state.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def append(self, event: ScanEvent) -> ScanEvent:
        raise StoreError(f"no event store: {self.problem}")

    def stats(self) -> OutboxStats:
        """Nothing stored, nothing sendable; ``problem`` says why (the gate fails closed)."""
        return OutboxStats(stored=0, unsent=0, oldest_unsent_s=None, seq_high=0, max_events=0, fill=0.0,
                           alarm_level=0.0, quarantined=(), problem=self.problem)

    def close(self) -> None:
        return None


def read_events(path: Path) -> list[dict]:
    """Every event stored in an outbox file, in seq order, as JSON dicts (for tools and tests).

    Opens the file read-only; never modifies or quarantines it.

    Raises:
        StoreError: the file is missing or unreadable.
    """
    return [json.loads(body) for _seq, body in read_bodies(path)]


def read_bodies(path: Path) -> list[tuple[int, str]]:
    """Every event stored in an outbox file as ``(seq, body)``, the body being the exact JSON text
    the publisher signs, in seq order (``qrgate outbox export``). Opens the file read-only; never
    modifies or quarantines it, so a quarantined ``outbox.sqlite.corrupt-*`` can be read too.

    Raises:
        StoreError: the file is missing or unreadable.
    """
    if not Path(path).is_file():
        raise StoreError(f"outbox {path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [(int(seq), str(body)) for seq, body in conn.execute("SELECT seq, body FROM events ORDER BY seq")]
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"cannot read the outbox {path} ({err}); if it is damaged, copy what SQLite can still "
                         "read with `sqlite3 FILE .recover | sqlite3 RECOVERED` and export that") from err
