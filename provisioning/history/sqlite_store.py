"""The SQLite history store (standard library): one file, WAL, ``synchronous=FULL``.

The collector acknowledges a message to the broker only after ``add`` returns, so
``add`` commits with a full sync before it returns.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firmware.core.errors import StoreError
from provisioning.history.events import COLUMNS, HistoryEvent
from provisioning.history.sql_store import INDEXES, SCHEMA_VERSION, SqlHistoryStore, contact_rows, source_updates

log = logging.getLogger(__name__)

CACHE_KIB = 64 * 1024

_TABLES = (
    "CREATE TABLE IF NOT EXISTS events ("
    " event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, venue_id TEXT NOT NULL,"
    " direction TEXT NOT NULL, ts TEXT NOT NULL, ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " boot_id TEXT NOT NULL, time_synced INTEGER NOT NULL, decision TEXT NOT NULL,"
    " reason TEXT NOT NULL, credential TEXT NOT NULL, subject TEXT, display TEXT NOT NULL,"
    " person_key TEXT NOT NULL, latency_ms REAL NOT NULL, code_sha256 TEXT NOT NULL,"
    " received_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sources ("
    " venue_id TEXT NOT NULL, device_id TEXT NOT NULL, first_ms INTEGER NOT NULL,"
    " last_ms INTEGER NOT NULL, last_received_ms INTEGER NOT NULL, PRIMARY KEY (venue_id, device_id))",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS written_off ("
    " device_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
    " reason TEXT NOT NULL, written_ms INTEGER NOT NULL, PRIMARY KEY (device_id, first_seq))",
    "CREATE TABLE IF NOT EXISTS devices ("
    " device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, source TEXT NOT NULL, added_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS enrolments ("
    " nonce TEXT PRIMARY KEY, device_id TEXT NOT NULL, venue_id TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " used_ms INTEGER, used_key TEXT, used_by TEXT)",
    # The sealed contacts (privacy.escrow_key): own table, deleted with their event (retention).
    "CREATE TABLE IF NOT EXISTS event_contacts (event_id TEXT PRIMARY KEY, contact_sealed TEXT NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS events_drop_contact AFTER DELETE ON events"
    " BEGIN DELETE FROM event_contacts WHERE event_id = OLD.event_id; END",
    "CREATE TABLE IF NOT EXISTS quarantine ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER NOT NULL, topic TEXT NOT NULL,"
    " device_id TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL, payload_bytes INTEGER NOT NULL)",
)
_INSERT = ("INSERT INTO events (" + ", ".join(COLUMNS) + ") VALUES (" + ", ".join("?" for _ in COLUMNS)
           + ") ON CONFLICT (event_id) DO NOTHING")
_INSERT_CONTACT = ("INSERT INTO event_contacts (event_id, contact_sealed) VALUES (?, ?)"
                   " ON CONFLICT (event_id) DO NOTHING")
_UPSERT_SOURCE = (
    "INSERT INTO sources (venue_id, device_id, first_ms, last_ms, last_received_ms) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (venue_id, device_id) DO UPDATE SET first_ms = min(first_ms, excluded.first_ms),"
    " last_ms = max(last_ms, excluded.last_ms),"
    " last_received_ms = max(last_received_ms, excluded.last_received_ms)"
)


class SqliteHistoryStore(SqlHistoryStore):
    """History in one SQLite file.

    Args:
        path: the database file; created with its tables if missing (unless ``readonly``).
        readonly: refuse writes (``PRAGMA query_only``); the file must exist.

    Raises:
        StoreError: the file cannot be opened, created or is not a history database.
    """

    def __init__(self, path: Path, readonly: bool = False) -> None:
        super().__init__()
        self.path = path
        if readonly and not path.exists():
            raise StoreError(f"history database {path} does not exist; start `qrgate history collect "
                             f"--db {path}` first or check the path")
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
                # 0600 like the exports: the history holds masked names, phones and subjects.
                # SQLite gives its -wal and -shm files the database file's mode.
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                except FileExistsError:
                    pass
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                       timeout=10.0)
            self._db.execute("PRAGMA busy_timeout = 10000")
            # Index pages of a million events do not fit the 2 MB default; ingest slows 5x without this.
            self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            if readonly:
                self._db.execute("PRAGMA query_only = 1")
            else:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                for ddl in (*_TABLES, *INDEXES):
                    self._db.execute(ddl)
                self._db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                                 " ON CONFLICT (key) DO NOTHING", [str(SCHEMA_VERSION)])
        except sqlite3.Error as err:
            raise StoreError(f"cannot open history database {path}: {err}; check the path and its "
                             "permissions") from err

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, list(params)).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"history query failed on {self.path}: {err}") from err

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        try:
            cur = self._db.execute(sql, list(params))
            return cur.rowcount
        except sqlite3.Error as err:
            raise StoreError(f"history write failed on {self.path}: {err}") from err

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(sql, [list(r) for r in rows])
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(f"history write failed on {self.path}: {err}") from err

    def add(self, events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
        """Store the new events (by ``event_id``) in one committed transaction; return them."""
        if not events:
            return []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                fresh: list[HistoryEvent] = []
                for ev in events:
                    cur = self._db.execute(_INSERT, [getattr(ev, c) for c in COLUMNS])
                    if cur.rowcount == 1:
                        fresh.append(ev)
                if fresh:
                    self._db.executemany(_UPSERT_SOURCE, source_updates(fresh))
                self._db.executemany(_INSERT_CONTACT, contact_rows(events))
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot store {len(events)} events in {self.path}: {err}") from err
        return fresh

    def optimize(self) -> None:
        """Refresh the planner's statistics (``PRAGMA optimize``; cheap, run after retention)."""
        with self._lock:
            try:
                self._db.execute("PRAGMA analysis_limit = 1000")
                self._db.execute("PRAGMA optimize")
            except sqlite3.Error as err:
                raise StoreError(f"PRAGMA optimize failed on {self.path}: {err}") from err

    def close(self) -> None:
        """Close the file. Safe to call twice."""
        with self._lock:
            self._db.close()
