"""Reading what a trace needs from the history store, and the append-only trace audit.

Works on both databases through the store's own ``_fetch``/``_write`` (the same SQL; ``?``
becomes ``%s`` on PostgreSQL). A trace reads only:

1. the case's granted scans (index ``events_subject``) from ``reach`` before the window to
   ``reach`` after it, ``reach`` being the longest possible interval
   (``TraceRules.reach_ms``);
2. the granted scans with a subject at the case's venues only, from ``reach`` before each of
   the case's visits to ``reach`` after it (index ``events_venue_ts``; overlapping spans of a
   venue are read once).

Every trace and every quarantine appends one row to ``trace_audit`` (who, when, what for,
what was searched, what was found). The table refuses ``UPDATE`` and ``DELETE`` (and
``TRUNCATE`` on PostgreSQL) with a trigger, so no qrgate tool can edit the trail; the
database's owner can still drop the trigger, which is the database's own audit's business.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from firmware.core.errors import StoreError
from provisioning.history.sql_store import SqlHistoryStore
from provisioning.history.tracing import Presence, TraceResult, TraceRules, Visit, presence_of, trace

SUBJECTS_PER_QUERY = 500
_AUDIT_LOCK_KEY = 0x71726761746541

_SQLITE_AUDIT = (
    "CREATE TABLE IF NOT EXISTS trace_audit ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, operator TEXT NOT NULL,"
    " action TEXT NOT NULL, reason TEXT NOT NULL, searched TEXT NOT NULL, result TEXT NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS trace_audit_no_update BEFORE UPDATE ON trace_audit"
    " BEGIN SELECT RAISE(ABORT, 'trace_audit is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS trace_audit_no_delete BEFORE DELETE ON trace_audit"
    " BEGIN SELECT RAISE(ABORT, 'trace_audit is append-only'); END",
)
_PG_AUDIT = (
    "CREATE TABLE IF NOT EXISTS trace_audit ("
    " id BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, operator TEXT NOT NULL,"
    " action TEXT NOT NULL, reason TEXT NOT NULL, searched TEXT NOT NULL, result TEXT NOT NULL)",
    "CREATE OR REPLACE FUNCTION trace_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'trace_audit is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER trace_audit_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON trace_audit"
    " FOR EACH STATEMENT EXECUTE FUNCTION trace_audit_append_only()",
)
_SCAN_COLUMNS = "subject, venue_id, direction, ts_ms, event_id, display"


@dataclass(frozen=True)
class AuditRecord:
    """One row of ``trace_audit``."""

    id: int
    at_ms: int
    operator: str
    action: str
    reason: str
    searched: dict[str, Any]
    result: dict[str, Any]


@dataclass(frozen=True)
class TraceFound:
    """A trace's answer with the masked displays it needs.

    Attributes:
        result: the visits and contacts.
        displays: (subject, venue_id) -> the latest masked display seen in the scans read.
        rows_read: how many scans the trace read (for the benchmark and the audit).
    """

    result: TraceResult
    displays: dict[tuple[str, str], str]
    rows_read: int


def _is_postgres(store: SqlHistoryStore) -> bool:
    return type(store).__name__ == "PostgresHistoryStore"


def ensure_audit_table(store: SqlHistoryStore) -> None:
    """Create ``trace_audit`` and its append-only triggers if missing (idempotent).

    Raises:
        StoreError: the database refused.
    """
    if _is_postgres(store):
        # CREATE OR REPLACE of one function from two processes at once fails; serialise it.
        store._fetch("SELECT pg_advisory_lock(?)", [_AUDIT_LOCK_KEY])
        try:
            for ddl in _PG_AUDIT:
                store._write(ddl, [])
        finally:
            store._fetch("SELECT pg_advisory_unlock(?)", [_AUDIT_LOCK_KEY])
        return
    for ddl in _SQLITE_AUDIT:
        store._write(ddl, [])


def append_audit(store: SqlHistoryStore, *, at_ms: int, operator: str, action: str, reason: str,
                 searched: dict[str, Any], result: dict[str, Any]) -> None:
    """Append one audit row (creating the table first if needed).

    Raises:
        StoreError: the database refused; the caller must not show the trace then.
    """
    ensure_audit_table(store)
    store._write("INSERT INTO trace_audit (at_ms, operator, action, reason, searched, result)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 [at_ms, operator, action, reason, json.dumps(searched, sort_keys=True),
                  json.dumps(result, sort_keys=True)])


def audit_records(store: SqlHistoryStore) -> list[AuditRecord]:
    """Every audit row, oldest first."""
    ensure_audit_table(store)
    rows = store._fetch("SELECT id, at_ms, operator, action, reason, searched, result FROM trace_audit ORDER BY id")
    return [AuditRecord(int(i), int(at), str(op), str(act), str(why), json.loads(s), json.loads(r))
            for i, at, op, act, why, s, r in rows]


def _scans(rows: Iterable[Sequence[Any]], displays: dict[tuple[str, str], tuple[int, str]]) -> list[Presence]:
    found = []
    for subject, venue_id, direction, ts_ms, event_id, display in rows:
        p = presence_of(subject, venue_id, direction, "granted", int(ts_ms), event_id)
        if p is None:
            continue
        found.append(p)
        key = (p.subject, p.venue_id)
        if key not in displays or displays[key][0] <= p.ts_ms:
            displays[key] = (p.ts_ms, str(display))
    return found


def merged_spans(visits: Iterable[Visit], reach_ms: int) -> list[tuple[str, int, int]]:
    """Per venue, the spans ``[from - reach, to + reach]`` of the visits, overlapping ones merged."""
    spans: list[tuple[str, int, int]] = []
    for v in sorted(visits, key=lambda v: (v.venue_id, v.from_ms)):
        start, end = v.from_ms - reach_ms, v.to_ms + reach_ms
        if spans and spans[-1][0] == v.venue_id and start <= spans[-1][2]:
            spans[-1] = (v.venue_id, spans[-1][1], max(spans[-1][2], end))
        else:
            spans.append((v.venue_id, start, end))
    return spans


def run_trace(store: SqlHistoryStore, case_subjects: frozenset[str], since_ms: int, until_ms: int,
              rules: TraceRules) -> TraceFound:
    """Find the case's visits in ``[since_ms, until_ms)`` and their contacts (see module docstring).

    Raises:
        StoreError: the database refused.
    """
    displays: dict[tuple[str, str], tuple[int, str]] = {}
    reach = rules.reach_ms
    subjects = sorted(case_subjects)
    case_scans: list[Presence] = []
    with store._lock:
        for i in range(0, len(subjects), SUBJECTS_PER_QUERY):
            chunk = subjects[i:i + SUBJECTS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            rows = store._fetch(f"SELECT {_SCAN_COLUMNS} FROM events WHERE subject IN ({marks})"
                                " AND ts_ms >= ? AND ts_ms < ? AND decision = 'granted'",
                                [*chunk, since_ms - reach, until_ms + reach])
            case_scans.extend(_scans(rows, displays))
        first = trace(case_scans, [], case_subjects, since_ms, until_ms, rules)
        venue_scans: list[Presence] = []
        for venue_id, start, end in merged_spans(first.visits, reach):
            rows = store._fetch(f"SELECT {_SCAN_COLUMNS} FROM events WHERE venue_id = ? AND ts_ms >= ?"
                                " AND ts_ms <= ? AND decision = 'granted' AND subject IS NOT NULL",
                                [venue_id, start, end])
            venue_scans.extend(_scans(rows, displays))
    result = trace(case_scans, venue_scans, case_subjects, since_ms, until_ms, rules)
    return TraceFound(result, {k: d for k, (_, d) in displays.items()}, len(case_scans) + len(venue_scans))


def venue_secrets(store: SqlHistoryStore) -> dict[str, bytes]:
    """The back office's per-venue HMAC secrets (``personal_venuesecret``), by venue id.

    Only when the history lives in the back office's database (``--config``); empty otherwise.
    """
    try:
        rows = store._fetch("SELECT v.venue_id, s.secret_hex FROM personal_venuesecret s"
                            " JOIN venues_venue v ON v.id = s.venue_id")
    except StoreError:  # no back office tables in this database
        return {}
    found = {}
    for venue_id, secret_hex in rows:
        try:
            found[str(venue_id)] = bytes.fromhex(str(secret_hex))
        except ValueError:
            continue
    return found
