"""Reading what a trace needs from the history store, and the append-only trace audit.

Works on both databases through the store's own ``_fetch``/``_write`` (the same SQL; ``?``
becomes ``%s`` on PostgreSQL). A trace reads only:

1. the case's granted scans (index ``events_subject``) from ``reach`` before the window to
   ``reach`` after it, ``reach`` being the longest possible interval
   (``TraceRules.reach_ms``), at the given venues only when ``run_trace`` gets ``venues``
   (a venue manager's trace);
2. at the case's venues only, from ``reach`` before each of the case's visits to ``reach``
   after it (index ``events_venue_ts``), the granted scans of the subjects who can have an
   interval overlapping the visit (``_VISIT_SCANS``: the subjects are chosen in the database).

Every trace and every quarantine appends one row to ``trace_audit`` (who, when, what for,
what was searched, what was found). The table refuses ``UPDATE`` and ``DELETE`` (and
``TRUNCATE`` on PostgreSQL) with a trigger, so no qrgate tool can edit the trail; the
database's owner can still drop the trigger, which is the database's own audit's business.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware.core.errors import StoreError
from provisioning.history.sql_store import SqlHistoryStore
from provisioning.history.tracing import Presence, TraceResult, TraceRules, Visit, trace

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
        scans: the scans the intervals were made of (the case's, then the others'), so a reveal
            can tell which events make up each visit.
    """

    result: TraceResult
    displays: dict[tuple[str, str], str]
    rows_read: int
    scans: tuple[Presence, ...] = field(default=(), repr=False)


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
    """Presences of rows already limited to granted scans with a subject (the hot loop of a trace)."""
    found = []
    for subject, venue_id, direction, ts_ms, event_id, display in rows:
        if not subject or (direction != "in" and direction != "out"):
            continue
        ts_ms = int(ts_ms)
        found.append(Presence(subject, venue_id, direction, ts_ms, event_id))
        key = (subject, venue_id)
        seen = displays.get(key)
        if seen is None or seen[0] <= ts_ms:
            displays[key] = (ts_ms, display)
    return found


# The scans of one case visit [a, b] at a venue that can make an overlapping interval: every scan
# from a - reach to b + reach of the subjects who have (1) a scan from a - dwell to b + dwell (an
# interval started by an in in that range, or an out-only interval [o - dwell, o] that overlaps), or
# (2) an in from a - reach to a - dwell and an out after a but before a - dwell + max dwell (a long
# stay ended by an out; pairing is left to the rules). Any interval that overlaps [a, b] is one of these (see the README), and
# the subjects are filtered in the database, so only the few candidates' scans reach Python.
_VISIT_SCANS = (
    f"SELECT {_SCAN_COLUMNS} FROM events WHERE venue_id = ? AND ts_ms >= ? AND ts_ms <= ?"
    " AND decision = 'granted' AND subject IN ("
    " SELECT subject FROM events WHERE venue_id = ? AND ts_ms >= ? AND ts_ms <= ? AND decision = 'granted'"
    " AND subject IS NOT NULL"
    " UNION SELECT subject FROM ("
    " SELECT subject FROM events WHERE venue_id = ? AND ts_ms >= ? AND ts_ms < ? AND direction = 'in'"
    " AND decision = 'granted' AND subject IS NOT NULL"
    " INTERSECT SELECT subject FROM events WHERE venue_id = ? AND ts_ms > ? AND ts_ms < ? AND direction = 'out'"
    " AND decision = 'granted' AND subject IS NOT NULL) AS long_stays)"
)


def visit_scan_params(visit: Visit, rules: TraceRules) -> list[Any]:
    """The parameters of ``_VISIT_SCANS`` for one case visit."""
    a, b, v = visit.from_ms, visit.to_ms, visit.venue_id
    reach, dwell = rules.reach_ms, rules.default_dwell_ms
    # A long stay: an in at s < a - dwell, its out o > a with o <= s + max dwell < a - dwell + max dwell.
    return [v, a - reach, b + reach, v, a - dwell, b + dwell, v, a - reach, a - dwell,
            v, a, a - dwell + rules.max_dwell_ms]


def run_trace(store: SqlHistoryStore, case_subjects: frozenset[str], since_ms: int, until_ms: int,
              rules: TraceRules, venues: frozenset[str] | None = None) -> TraceFound:
    """Find the case's visits in ``[since_ms, until_ms)`` and their contacts (see module docstring).

    Args:
        venues: read only these venues' events (a venue manager's trace: the case's scans
            elsewhere and the contacts there are neither read nor shown); None reads every venue.

    Raises:
        StoreError: the database refused.
    """
    displays: dict[tuple[str, str], tuple[int, str]] = {}
    reach = rules.reach_ms
    subjects = sorted(case_subjects)
    case_scans: list[Presence] = []
    if venues is not None and not venues:
        return TraceFound(trace([], [], case_subjects, since_ms, until_ms, rules), {}, 0)
    where_venue, venue_params = "", []
    if venues is not None:
        where_venue = " AND venue_id IN (" + ", ".join("?" for _ in venues) + ")"
        venue_params = sorted(venues)
    with store._lock:
        for i in range(0, len(subjects), SUBJECTS_PER_QUERY):
            chunk = subjects[i:i + SUBJECTS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            rows = store._fetch(f"SELECT {_SCAN_COLUMNS} FROM events WHERE subject IN ({marks}){where_venue}"
                                " AND ts_ms >= ? AND ts_ms < ? AND decision = 'granted' AND subject IS NOT NULL",
                                [*chunk, *venue_params, since_ms - reach, until_ms + reach])
            case_scans.extend(_scans(rows, displays))
        first = trace(case_scans, [], case_subjects, since_ms, until_ms, rules)
        by_id: dict[str, Presence] = {}
        for visit in first.visits:  # visits close together read some scans twice: kept once
            for p in _scans(store._fetch(_VISIT_SCANS, visit_scan_params(visit, rules)), displays):
                by_id[p.event_id] = p
    result = trace(case_scans, by_id.values(), case_subjects, since_ms, until_ms, rules)
    return TraceFound(result, {k: d for k, (_, d) in displays.items()}, len(case_scans) + len(by_id),
                      scans=(*case_scans, *by_id.values()))


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
