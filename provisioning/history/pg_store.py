"""The PostgreSQL history store (psycopg 3), for a venue chain or a city.

Same tables and the same queries as the SQLite store. A lost connection is reopened on
the next call; the failed call raises ``StoreError`` (the collector keeps the batch and
retries, and has not acknowledged it to the broker).

**Partitions (issue 17).** ``events`` is partitioned by day (declarative ``PARTITION BY RANGE
(ts_ms)``, one table ``events_pYYYYMMDD`` per UTC day of the gate's time, plus
``events_default`` for everything else), so retention drops a whole day's table instead of
deleting a million rows one by one:

- A day's partition is made when the first event of that day arrives whose day is within
  ``AUTO_PARTITION_DAYS`` of the day it arrived (the collector's clock), in its own short
  transaction under an advisory lock (several collectors), moving any rows of that day out of
  the default partition first. Events stamped by a gate whose clock is far off (1970, a
  forged 2099) go to ``events_default``: a hostile clock cannot make the store create a table
  per day it names.
- **Idempotency by ``event_id``.** PostgreSQL only enforces unique keys that contain the
  partition key, so the primary key is ``(event_id, ts_ms)``: a duplicate from the gate's
  at-least-once outbox carries the same signed body, hence the same ``ts_ms``, and lands on
  the same row (``ON CONFLICT DO NOTHING``). The insert also skips an ``event_id`` already
  stored under another ``ts_ms`` (``NOT EXISTS``, one index probe per partition), so an id is
  kept once whatever time a later copy claims, as in the unpartitioned table.
- **Retention** (``prune``) drops every day's partition that lies wholly before the cutoff
  once no event in it arrived after the cutoff (an event is old only when both its gate time
  and its arrival are, as before): an event is deleted at the first pass after its whole UTC
  day is older than the retention, so it is kept between N and N + 1 days. Each batch adds
  its new events to ``event_days`` (per day: how many, and the latest arrival), so a day's
  table is dropped on that one row's word, without reading the day's million rows. Events in the
  default partition are deleted row by row by the exact rule, and events stamped more than a
  day after they arrived by their arrival time (``FUTURE_SLACK_MS``).
- **Upgrade.** A database made before partitions (a plain ``events`` table) is migrated
  at the first writable open when it holds at most ``AUTO_MIGRATE_MAX_ROWS`` rows; a
  bigger one refuses to open for writing until ``qrgate history migrate --db URL`` is run
  once with the collectors stopped (``migrate``; one transaction, all or nothing). Read-only
  opens (the pages) work on either layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from firmware.core.errors import StoreError
from provisioning.history.events import COLUMNS, HistoryEvent
from provisioning.history.sql_store import (
    FUTURE_SLACK_MS,
    INDEXES,
    SCHEMA_VERSION,
    SHARED_TABLES,
    SqlHistoryStore,
    source_updates,
)

log = logging.getLogger(__name__)

_EVENT_COLUMNS = (
    " event_id TEXT NOT NULL, device_id TEXT NOT NULL, venue_id TEXT NOT NULL,"
    " direction TEXT NOT NULL, ts TEXT NOT NULL, ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL,"
    " boot_id TEXT NOT NULL, time_synced BOOLEAN NOT NULL, decision TEXT NOT NULL,"
    " reason TEXT NOT NULL, credential TEXT NOT NULL, subject TEXT, display TEXT NOT NULL,"
    " person_key TEXT NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, code_sha256 TEXT NOT NULL,"
    " received_ms BIGINT NOT NULL"
)
_EVENTS = (
    "CREATE TABLE IF NOT EXISTS events (" + _EVENT_COLUMNS + ", PRIMARY KEY (event_id, ts_ms))"
    " PARTITION BY RANGE (ts_ms)",
    "CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT",
)
_TABLES = (
    # Per day of the gate's time: the events stored and the latest arrival, kept by each batch, so
    # retention drops a day without reading its million rows.
    "CREATE TABLE IF NOT EXISTS event_days (day BIGINT PRIMARY KEY, events BIGINT NOT NULL,"
    " last_received_ms BIGINT NOT NULL, first_received_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sources ("
    " venue_id TEXT NOT NULL, device_id TEXT NOT NULL, first_ms BIGINT NOT NULL,"
    " last_ms BIGINT NOT NULL, last_received_ms BIGINT NOT NULL, PRIMARY KEY (venue_id, device_id))",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS written_off ("
    " device_id TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " reason TEXT NOT NULL, written_ms BIGINT NOT NULL, PRIMARY KEY (device_id, first_seq))",
    "CREATE TABLE IF NOT EXISTS devices ("
    " device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, source TEXT NOT NULL, added_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS enrolments ("
    " nonce TEXT PRIMARY KEY, device_id TEXT NOT NULL, venue_id TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " used_ms BIGINT, used_key TEXT, used_by TEXT)",
    # The sealed contacts (privacy.escrow_key): own table, deleted with their event by retention.
    # No foreign key: the events' unique key is (event_id, ts_ms) and a referenced partition could
    # not simply be dropped; ts_ms is kept here so a dropped day's contacts go by one range delete.
    "CREATE TABLE IF NOT EXISTS event_contacts (event_id TEXT PRIMARY KEY, ts_ms BIGINT NOT NULL,"
    " contact_sealed TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS event_contacts_ts ON event_contacts (ts_ms)",
    "CREATE TABLE IF NOT EXISTS quarantine ("
    " id BIGSERIAL PRIMARY KEY, received_ms BIGINT NOT NULL, topic TEXT NOT NULL,"
    " device_id TEXT NOT NULL, reason TEXT NOT NULL, payload BYTEA NOT NULL, payload_bytes INTEGER NOT NULL)",
)
_PG_TYPES = {
    "ts_ms": "bigint", "seq": "bigint", "received_ms": "bigint", "time_synced": "boolean",
    "latency_ms": "float8",
}
# NOT EXISTS: an event_id stored under another ts_ms (another partition) is not stored again.
_INSERT = (
    "INSERT INTO events (" + ", ".join(COLUMNS) + ") SELECT * FROM unnest("
    + ", ".join(f"%s::{_PG_TYPES.get(c, 'text')}[]" for c in COLUMNS)
    + ") AS n(" + ", ".join(COLUMNS) + ")"
    " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = n.event_id)"
    " ON CONFLICT (event_id, ts_ms) DO NOTHING RETURNING event_id"
)
DAY_MS = 86_400_000
PARTITION_PREFIX = "events_p"
DEFAULT_PARTITION = "events_default"
# A day gets its own partition only when an event of that day arrives within this many days
# of it (by the collector's clock); anything else goes to the default partition.
AUTO_PARTITION_DAYS = 1
# A database from before partitions is migrated at open up to this many rows (estimated);
# a bigger one needs `qrgate history migrate`.
AUTO_MIGRATE_MAX_ROWS = 200_000
# How long retention waits for the lock that dropping a partition needs before trying later.
DROP_LOCK_TIMEOUT = "10s"
_PRUNE_DEFAULT = (f"DELETE FROM {DEFAULT_PARTITION} WHERE (event_id, ts_ms) IN (SELECT event_id, ts_ms"
                  f" FROM {DEFAULT_PARTITION} WHERE ts_ms < %s AND received_ms < %s ORDER BY ts_ms LIMIT %s)")
# Only rows not already old by their own time: those are the default partition's or a dropped day's.
_PRUNE_FUTURE_PG = ("DELETE FROM events WHERE (event_id, ts_ms) IN (SELECT event_id, ts_ms FROM events"
                    " WHERE ts_ms >= %s AND received_ms < %s AND ts_ms > received_ms + %s LIMIT %s)")
_COUNT_DAYS = (
    "INSERT INTO event_days (day, events, last_received_ms, first_received_ms)"
    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
    " ON CONFLICT (day) DO UPDATE SET events = event_days.events + excluded.events,"
    " last_received_ms = GREATEST(event_days.last_received_ms, excluded.last_received_ms),"
    " first_received_ms = LEAST(event_days.first_received_ms, excluded.first_received_ms)"
)
_CHILDREN = ("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
             " WHERE i.inhparent = to_regclass('events') ORDER BY c.relname")
# One statement per batch (a fleet's batch names hundreds of gates): the (venue, device) pairs
# are distinct (source_updates), so no row is updated twice.
_INSERT_CONTACTS = ("INSERT INTO event_contacts (event_id, ts_ms, contact_sealed)"
                    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[]) ON CONFLICT (event_id) DO NOTHING")
_UPSERT_SOURCE = (
    "INSERT INTO sources (venue_id, device_id, first_ms, last_ms, last_received_ms)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
    " ON CONFLICT (venue_id, device_id) DO UPDATE SET"
    " first_ms = LEAST(sources.first_ms, excluded.first_ms),"
    " last_ms = GREATEST(sources.last_ms, excluded.last_ms),"
    " last_received_ms = GREATEST(sources.last_received_ms, excluded.last_received_ms)"
)
# Serialises table creation when several collectors start at once.
_DDL_LOCK_KEY = 0x71726761746548


def partition_name(day: int) -> str:
    """The table of one UTC day (``day`` = Unix ms // ``DAY_MS``): ``events_p20261126``."""
    return PARTITION_PREFIX + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def partition_day(name: str) -> int | None:
    """The day of a partition's name, or None if it is not a daily partition's name."""
    if not name.startswith(PARTITION_PREFIX) or len(name) != len(PARTITION_PREFIX) + 8:
        return None
    try:
        moment = datetime.strptime(name[len(PARTITION_PREFIX):], "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) // 86_400


def day_counts(events: Sequence[HistoryEvent]) -> list[list[int]]:
    """The ``event_days`` update of a batch of new events: [days], [counts], [latest arrivals],
    [earliest arrivals]."""
    days: dict[int, list[int]] = {}
    for ev in events:
        entry = days.setdefault(ev.ts_ms // DAY_MS, [0, ev.received_ms, ev.received_ms])
        entry[0] += 1
        entry[1] = max(entry[1], ev.received_ms)
        entry[2] = min(entry[2], ev.received_ms)
    ordered = sorted(days.items())
    return [[d for d, _ in ordered], *([v[i] for _, v in ordered] for i in range(3))]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


def _redact(url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


class PostgresHistoryStore(SqlHistoryStore):
    """History in a PostgreSQL database (tables in the connection's ``search_path`` schema).

    Args:
        url: a libpq URL, e.g. ``postgresql://qrgate@db.lan/history``.
        readonly: open every transaction read-only (the web page uses this).
        auto_migrate_max_rows: an unpartitioned events table (from before partitions) of at
            most this many rows is migrated at open; a bigger one raises ``StoreError``. None:
            migrate whatever its size (``qrgate history migrate``).

    Raises:
        StoreError: the server is unreachable or refuses.
    """

    def __init__(self, url: str, readonly: bool = False,
                 auto_migrate_max_rows: int | None = AUTO_MIGRATE_MAX_ROWS) -> None:
        super().__init__()
        self.migrated: tuple[int, int] | None = None  # (events moved, partitions made) by this open
        self._url = url
        self._readonly = readonly
        self._db = self._connect()
        self._days: set[int] = set()  # days (Unix ms // DAY_MS) known to have a partition
        if not readonly:
            try:
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK_KEY])
                    layout = self._layout()
                    if layout == "plain":
                        rows = self._estimated_rows()
                        if auto_migrate_max_rows is not None and rows > auto_migrate_max_rows:
                            raise StoreError(
                                f"the history in {_redact(url)} has an unpartitioned events table of about "
                                f"{rows:,} rows (made before partitions by day); stop the collectors and run "
                                f"`qrgate history migrate --db URL` once, then start them again")
                        self.migrated = self._migrate_locked()
                    for ddl in (*_EVENTS, *_TABLES, *SHARED_TABLES, *INDEXES):
                        self._db.execute(ddl)
                    self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                                     " ON CONFLICT (key) DO NOTHING", [str(SCHEMA_VERSION)])
            except psycopg.Error as err:
                self._db.close()
                raise StoreError(f"cannot create the history tables in {_redact(url)}: {err}") from err
            except StoreError:
                self._db.close()
                raise
            self._days = self._partition_days()

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            if self._readonly:
                conn.execute("SET default_transaction_read_only = on")
            return conn
        except psycopg.Error as err:
            raise StoreError(f"cannot connect to PostgreSQL at {_redact(self._url)}: {err}; check the "
                             "URL, that the server runs, and that the user may connect") from err

    def _conn(self) -> psycopg.Connection:
        if self._db.closed or self._db.broken:
            log.warning("PostgreSQL connection lost; reconnecting")
            self._db = self._connect()
        return self._db

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(_pg(sql), list(params)).fetchall()
        except psycopg.Error as err:
            raise StoreError(f"history query failed on PostgreSQL: {err}") from err

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        try:
            return self._conn().execute(_pg(sql), list(params)).rowcount
        except psycopg.Error as err:
            raise StoreError(f"history write failed on PostgreSQL: {err}") from err

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            conn = self._conn()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_pg(sql), [list(r) for r in rows])
        except psycopg.Error as err:
            raise StoreError(f"history write failed on PostgreSQL: {err}") from err

    def add(self, events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
        """Store the new events (by ``event_id``) in one committed transaction; return them."""
        if not events:
            return []
        arrays = [[getattr(ev, c) for ev in events] for c in COLUMNS]
        with self._lock:
            self._ensure_partitions(events)
            try:
                conn = self._conn()
                with conn.transaction():
                    cur = conn.execute(_INSERT, arrays)
                    new_ids = {row[0] for row in cur.fetchall()}
                    fresh, seen = [], set()
                    for ev in events:
                        if ev.event_id in new_ids and ev.event_id not in seen:
                            seen.add(ev.event_id)
                            fresh.append(ev)
                    if fresh:
                        conn.execute(_UPSERT_SOURCE, [list(column) for column in zip(*source_updates(fresh), strict=True)])
                        conn.execute(_COUNT_DAYS, day_counts(fresh))
                    # Every event of the batch is now stored (just now, or before under its id).
                    contacts = list({ev.event_id: (ev.event_id, ev.ts_ms, ev.contact_sealed) for ev in events
                                     if ev.contact_sealed is not None}.values())
                    if contacts:
                        conn.execute(_INSERT_CONTACTS, [list(column) for column in zip(*contacts, strict=True)])
            except psycopg.Error as err:
                raise StoreError(f"cannot store {len(events)} events in PostgreSQL: {err}") from err
        return fresh

    # -- partitions by day (issue 17) ------------------------------------------------------
    def _layout(self) -> str:
        """``"none"`` (no events table yet), ``"plain"`` (from before partitions) or ``"partitioned"``."""
        row = self._db.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('events')").fetchone()
        if row is None:
            return "none"
        return "partitioned" if row[0] in ("p", b"p") else "plain"

    def _estimated_rows(self) -> int:
        row = self._db.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass('events')").fetchone()
        estimate = int(row[0]) if row and row[0] is not None else -1
        if estimate < 0:  # never analysed: count (small tables are what this is for)
            estimate = int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])
        return estimate

    def _partition_days(self) -> set[int]:
        """The days that have a partition, from the catalogue."""
        try:
            names = [str(r[0]) for r in self._conn().execute(_CHILDREN).fetchall()]
        except psycopg.Error as err:
            raise StoreError(f"cannot list the history's partitions on PostgreSQL: {err}") from err
        return {day for day in map(partition_day, names) if day is not None}

    def partitions(self) -> list[tuple[str, int]]:
        """The daily partitions as (table name, row count estimate), oldest first (for tools and benches)."""
        with self._lock:
            found = self._fetch("SELECT c.relname, c.reltuples FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                                " WHERE i.inhparent = to_regclass('events') ORDER BY c.relname")
        return [(str(n), int(max(0, t))) for n, t in found if partition_day(str(n)) is not None]

    def _ensure_partitions(self, events: Sequence[HistoryEvent]) -> None:
        """Make the partitions of the days these events belong to, when the day is near their arrival."""
        wanted = {ev.ts_ms // DAY_MS for ev in events
                  if abs(ev.ts_ms // DAY_MS - ev.received_ms // DAY_MS) <= AUTO_PARTITION_DAYS}
        missing = wanted - self._days
        if not missing:
            return
        self._days = self._partition_days()  # another collector may have made them
        for day in sorted(missing - self._days):
            self._create_day(day)
            self._days.add(day)

    def _create_day(self, day: int) -> None:
        """Create the partition of one day, taking that day's rows out of the default partition."""
        name, low, high = partition_name(day), day * DAY_MS, (day + 1) * DAY_MS
        try:
            conn = self._conn()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK_KEY])
                if conn.execute("SELECT to_regclass(%s)", [name]).fetchone()[0] is not None:
                    return
                columns = ", ".join(self._event_columns(conn))
                conn.execute(f'CREATE TABLE "{name}" (LIKE events INCLUDING DEFAULTS)')
                moved = conn.execute(f'INSERT INTO "{name}" ({columns}) SELECT {columns} FROM {DEFAULT_PARTITION}'
                                     " WHERE ts_ms >= %s AND ts_ms < %s", [low, high]).rowcount
                if moved:
                    conn.execute(f"DELETE FROM {DEFAULT_PARTITION} WHERE ts_ms >= %s AND ts_ms < %s", [low, high])
                conn.execute(f'ALTER TABLE events ATTACH PARTITION "{name}" FOR VALUES FROM ({low}) TO ({high})')
            log.info("history: made the partition %s%s", name, f" ({moved} events moved in)" if moved else "")
        except psycopg.Error as err:
            raise StoreError(f"cannot create the history partition {name} on PostgreSQL: {err}") from err

    @staticmethod
    def _event_columns(conn: psycopg.Connection) -> list[str]:
        """The events table's columns in order (a bench may have added one)."""
        rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('events')"
                            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()
        return [f'"{r[0]}"' for r in rows]

    def migrate(self) -> tuple[int, int]:
        """Move an unpartitioned events table (from before issue 17) into partitions by day.

        One transaction: the old table is renamed, the partitioned one made with a partition
        for every day that has events near their arrival, the rows copied, the old table
        dropped. Run it with the collectors stopped (it locks the table while it copies).

        Returns:
            (events moved, daily partitions made); (0, 0) when the table is already partitioned.

        Raises:
            StoreError: the database refused; nothing changed.
        """
        with self._lock:
            try:
                conn = self._conn()
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK_KEY])
                    if self._layout() != "plain":
                        return 0, 0
                    moved, made = self._migrate_locked()
                    for ddl in (*_EVENTS, *INDEXES):
                        conn.execute(ddl)
            except psycopg.Error as err:
                raise StoreError(f"cannot move the history into partitions on PostgreSQL: {err}") from err
            self._days = self._partition_days()
        return moved, made

    def _migrate_locked(self) -> tuple[int, int]:
        """The migration's statements, in the caller's transaction (which holds the DDL lock)."""
        conn = self._db
        old = "events_unpartitioned"
        conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        conn.execute(f"ALTER TABLE events RENAME TO {old}")
        constraint = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s)"
                                  " AND contype = 'p'", [old]).fetchone()
        if constraint is not None:  # its index name (events_pkey) is wanted by the new table
            conn.execute(f'ALTER TABLE {old} DROP CONSTRAINT "{constraint[0]}"')
        for ddl in INDEXES:  # the index names too
            conn.execute("DROP INDEX IF EXISTS " + ddl.split(" IF NOT EXISTS ", 1)[1].split(" ON ", 1)[0])
        for ddl in (*_EVENTS, *INDEXES):
            conn.execute(ddl)
        days = [int(r[0]) for r in conn.execute(
            f"SELECT DISTINCT ts_ms / {DAY_MS} FROM {old}"
            f" WHERE abs(ts_ms / {DAY_MS} - received_ms / {DAY_MS}) <= {AUTO_PARTITION_DAYS}").fetchall()]
        for day in sorted(days):
            conn.execute(f'CREATE TABLE "{partition_name(day)}" PARTITION OF events'
                         f" FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})")
        columns = ", ".join(COLUMNS)
        moved = conn.execute(f"INSERT INTO events ({columns}) SELECT {columns} FROM {old}").rowcount
        conn.execute(_TABLES[0])
        conn.execute(f"INSERT INTO event_days (day, events, last_received_ms, first_received_ms) SELECT"
                     f" ts_ms / {DAY_MS}, count(*), max(received_ms), min(received_ms) FROM {old} GROUP BY 1"
                     " ON CONFLICT (day) DO UPDATE SET events = excluded.events,"
                     " last_received_ms = excluded.last_received_ms, first_received_ms = excluded.first_received_ms")
        conn.execute(f"DROP TABLE {old}")
        log.warning("history: moved %d events into %d daily partitions (and the default one)", moved, len(days))
        return moved, len(days)

    def prune(self, before_ms: int, batch_rows: int = 5000) -> int:
        """Retention by whole days (see the module docstring): drop each day's partition wholly
        before ``before_ms`` once nothing in it arrived later; delete the default partition's old
        rows and far-future rows one batch at a time.

        Returns:
            How many events were deleted.

        Raises:
            StoreError: the database refused.
        """
        total = 0
        with self._lock:
            for day in sorted(self._partition_days()):
                if (day + 1) * DAY_MS > before_ms:
                    break
                total += self._drop_day(day, before_ms)
            self._days = self._partition_days()
            try:  # the rows of old days that have no table (default partition, dropped days)
                self._conn().execute("DELETE FROM event_days WHERE (day + 1) * %s <= %s AND NOT (day = ANY(%s))",
                                     [DAY_MS, before_ms, sorted(self._days)])
            except psycopg.Error as err:
                raise StoreError(f"history retention failed on PostgreSQL: {err}") from err
        # Far-future stamps (ts more than a day after arrival): in the default partition, or in a
        # day's table only if something of that day arrived before the day began (event_days).
        suspects = [DEFAULT_PARTITION] + [partition_name(int(d)) for (d,) in self._fetch(
            "SELECT day FROM event_days WHERE (day + 1) * ? > ? AND first_received_ms < day * ?",
            [DAY_MS, before_ms, DAY_MS]) if int(d) in self._days]
        jobs = [(_PRUNE_DEFAULT, [before_ms, before_ms])]
        jobs += [(_PRUNE_FUTURE_PG.replace("FROM events WHERE", f'FROM "{name}" WHERE'),
                  [before_ms, before_ms, FUTURE_SLACK_MS]) for name in suspects]
        for sql, args in jobs:
            while True:
                with self._lock:
                    try:
                        conn = self._conn()
                        with conn.transaction():
                            gone = conn.execute(sql + f" RETURNING event_id, ts_ms / {DAY_MS}",
                                                [*args, batch_rows]).fetchall()
                            days = [int(r[1]) for r in gone]
                            if gone:  # their sealed contacts go with them
                                conn.execute("DELETE FROM event_contacts WHERE event_id = ANY(%s)",
                                             [[str(r[0]) for r in gone]])
                            if days:  # event_days keeps counting only what is there
                                conn.execute("UPDATE event_days SET events = events - n.c FROM (SELECT d, count(*) AS c"
                                             " FROM unnest(%s::bigint[]) AS d GROUP BY d) AS n WHERE day = n.d", [days])
                    except psycopg.Error as err:
                        raise StoreError(f"history retention failed on PostgreSQL: {err}") from err
                deleted = len(days)
                total += deleted
                if deleted < batch_rows:
                    break
        if total:
            log.info("retention: deleted %d events older than %d ms", total, before_ms)
        return total

    def _drop_day(self, day: int, before_ms: int) -> int:
        """Drop one old day's partition unless an event in it arrived at or after ``before_ms``.

        Returns the number of events dropped (0 when it is kept for now)."""
        name = partition_name(day)
        try:
            conn = self._conn()
            with conn.transaction():
                # event_days, kept by every batch; a day without its row (filled some other way)
                # is read once instead
                known = conn.execute("SELECT events, last_received_ms FROM event_days WHERE day = %s",
                                     [day]).fetchone()
                count, newest = known if known is not None else conn.execute(
                    f'SELECT count(*), max(received_ms) FROM "{name}"').fetchone()
                if newest is not None and int(newest) >= before_ms:
                    log.info("retention: keeping %s for now: some of its events arrived after the cutoff", name)
                    return 0
                conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
                conn.execute(f'DROP TABLE "{name}"')
                conn.execute("DELETE FROM event_contacts WHERE ts_ms >= %s AND ts_ms < %s",
                             [day * DAY_MS, (day + 1) * DAY_MS])
                conn.execute("DELETE FROM event_days WHERE day = %s", [day])
        except pg_errors.LockNotAvailable:
            log.warning("retention: %s is busy (a long query holds the events table); dropping it on the next pass",
                        name)
            return 0
        except psycopg.Error as err:
            raise StoreError(f"history retention cannot drop {name} on PostgreSQL: {err}") from err
        log.info("retention: dropped the partition %s (%d events)", name, int(count))
        return int(count)

    def optimize(self) -> None:
        """Refresh the planner's statistics (``ANALYZE``; autovacuum does it too, this makes it prompt)."""
        with self._lock:
            try:
                self._conn().execute("ANALYZE events")
                self._conn().execute("ANALYZE sources")
            except psycopg.Error as err:
                raise StoreError(f"ANALYZE failed on PostgreSQL: {err}") from err

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        with self._lock:
            self._db.close()
