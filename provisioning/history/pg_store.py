"""The PostgreSQL history store (psycopg 3), for a venue chain or a city.

Same tables and the same queries as the SQLite store. A lost connection is reopened on
the next call; the failed call raises ``StoreError`` (the collector keeps the batch and
retries, and has not acknowledged it to the broker).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import psycopg

from firmware.core.errors import StoreError
from provisioning.history.events import COLUMNS, HistoryEvent
from provisioning.history.sql_store import INDEXES, SCHEMA_VERSION, SqlHistoryStore, contact_rows, source_updates

log = logging.getLogger(__name__)

_TABLES = (
    "CREATE TABLE IF NOT EXISTS events ("
    " event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, venue_id TEXT NOT NULL,"
    " direction TEXT NOT NULL, ts TEXT NOT NULL, ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL,"
    " boot_id TEXT NOT NULL, time_synced BOOLEAN NOT NULL, decision TEXT NOT NULL,"
    " reason TEXT NOT NULL, credential TEXT NOT NULL, subject TEXT, display TEXT NOT NULL,"
    " person_key TEXT NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, code_sha256 TEXT NOT NULL,"
    " received_ms BIGINT NOT NULL)",
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
    # The sealed contacts (privacy.escrow_key): own table, deleted with their event (retention).
    "CREATE TABLE IF NOT EXISTS event_contacts (event_id TEXT PRIMARY KEY"
    " REFERENCES events (event_id) ON DELETE CASCADE, contact_sealed TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS quarantine ("
    " id BIGSERIAL PRIMARY KEY, received_ms BIGINT NOT NULL, topic TEXT NOT NULL,"
    " device_id TEXT NOT NULL, reason TEXT NOT NULL, payload BYTEA NOT NULL, payload_bytes INTEGER NOT NULL)",
)
_PG_TYPES = {
    "ts_ms": "bigint", "seq": "bigint", "received_ms": "bigint", "time_synced": "boolean",
    "latency_ms": "float8",
}
_INSERT = (
    "INSERT INTO events (" + ", ".join(COLUMNS) + ") SELECT * FROM unnest("
    + ", ".join(f"%s::{_PG_TYPES.get(c, 'text')}[]" for c in COLUMNS)
    + ") ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
_INSERT_CONTACTS = ("INSERT INTO event_contacts (event_id, contact_sealed) SELECT * FROM unnest(%s::text[], %s::text[])"
                    " ON CONFLICT (event_id) DO NOTHING")
_UPSERT_SOURCE = (
    "INSERT INTO sources (venue_id, device_id, first_ms, last_ms, last_received_ms)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (venue_id, device_id) DO UPDATE SET"
    " first_ms = LEAST(sources.first_ms, excluded.first_ms),"
    " last_ms = GREATEST(sources.last_ms, excluded.last_ms),"
    " last_received_ms = GREATEST(sources.last_received_ms, excluded.last_received_ms)"
)
# Serialises table creation when several collectors start at once.
_DDL_LOCK_KEY = 0x71726761746548


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


def _redact(url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


class PostgresHistoryStore(SqlHistoryStore):
    """History in a PostgreSQL database (tables in the connection's ``search_path`` schema).

    Args:
        url: a libpq URL, e.g. ``postgresql://qrgate@db.lan/history``.
        readonly: open every transaction read-only (the web page uses this).

    Raises:
        StoreError: the server is unreachable or refuses.
    """

    def __init__(self, url: str, readonly: bool = False) -> None:
        super().__init__()
        self._url = url
        self._readonly = readonly
        self._db = self._connect()
        if not readonly:
            try:
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK_KEY])
                    for ddl in (*_TABLES, *INDEXES):
                        self._db.execute(ddl)
                    self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                                     " ON CONFLICT (key) DO NOTHING", [str(SCHEMA_VERSION)])
            except psycopg.Error as err:
                raise StoreError(f"cannot create the history tables in {_redact(url)}: {err}") from err

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
                        with conn.cursor() as upsert:
                            upsert.executemany(_UPSERT_SOURCE, source_updates(fresh))
                    contacts = contact_rows(events)
                    if contacts:
                        conn.execute(_INSERT_CONTACTS, [[e for e, _ in contacts], [c for _, c in contacts]])
            except psycopg.Error as err:
                raise StoreError(f"cannot store {len(events)} events in PostgreSQL: {err}") from err
        return fresh

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
