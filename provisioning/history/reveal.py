"""Opening the sealed contacts of a trace (``qrgate history trace --reveal``), audited first.

Only the events a trace is made of are opened: the case's scans that make up its visits in the
window, and, for each contact, their scans that make up the visit that overlapped the case
(``events_to_open``, pure). ``reveal`` appends the audit record (who, when, why, what was searched
and found, and the ids of the events whose sealed contacts are opened) to the append-only
``trace_audit`` **before** it opens anything; no audit row, no contact. An event whose blob does
not open with any of the keys given gets its reason, never an exception. The back office's
"Truy vết" page can call ``reveal`` with a ``run_trace`` result as the CLI does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.core.errors import ConfigError
from firmware.core.escrow import EscrowError, open_contact
from provisioning.history.sql_store import SqlHistoryStore
from provisioning.history.trace_store import TraceFound, append_audit
from provisioning.history.tracing import Presence, TraceRules, Visit, presence_intervals

NO_SEALED_CONTACT = "no sealed contact stored (the gate had no privacy.escrow_key, or a phone check-in)"


@dataclass(frozen=True)
class EventToOpen:
    """One scan of a traced visit whose contact may be opened.

    Attributes:
        event_id: the scan event.
        role: ``case`` or ``contact``.
        subject, venue_id, ts_ms: whose scan, where, when (Unix ms).
    """

    event_id: str
    role: str
    subject: str
    venue_id: str
    ts_ms: int


@dataclass(frozen=True)
class OpenedContact:
    """A scan of the trace with its contact opened, or why it could not be.

    Attributes:
        event: the scan.
        display: the masked display stored with the scans.
        name, phone, id: the contact, empty when not opened.
        problem: None when opened; otherwise why not (no sealed contact, or it does not open).
    """

    event: EventToOpen
    display: str
    name: str = ""
    phone: str = ""
    id: str = ""
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times left to the report."""
        return {"role": self.event.role, "event_id": self.event.event_id, "subject": self.event.subject,
                "venue_id": self.event.venue_id, "ts_ms": self.event.ts_ms, "display": self.display,
                "name": self.name, "phone": self.phone, "id": self.id, "problem": self.problem}


def _inside(scan: Presence, visits: Sequence[Visit]) -> bool:
    return any(v.subject == scan.subject and v.venue_id == scan.venue_id and v.from_ms <= scan.ts_ms <= v.to_ms
               for v in visits)


def events_to_open(found: TraceFound, case_subjects: frozenset[str], rules: TraceRules) -> list[EventToOpen]:
    """The scans that make up the case's visits and the contacts' overlapping visits. Pure.

    A person's merged visits at a venue never touch, and every scan lies inside the interval it
    starts or ends, so a scan belongs to the visit whose span holds its time.

    Returns:
        The scans, case first, then by time and event id; each once.
    """
    result = found.result
    chosen: dict[str, EventToOpen] = {}
    for scan in found.scans:
        if scan.subject in case_subjects and _inside(scan, result.visits):
            chosen.setdefault(scan.event_id, EventToOpen(scan.event_id, "case", scan.subject, scan.venue_id,
                                                         scan.ts_ms))
    contacts = {(c.subject, c.venue_id) for c in result.contacts}
    others = [s for s in found.scans if s.subject not in case_subjects and (s.subject, s.venue_id) in contacts]
    overlapping = [v for v in presence_intervals(others, rules)
                   if any(c.subject == v.subject and c.venue_id == v.venue_id and v.from_ms <= c.from_ms
                          and c.to_ms <= v.to_ms for c in result.contacts)]
    for scan in others:
        if _inside(scan, overlapping):
            chosen.setdefault(scan.event_id, EventToOpen(scan.event_id, "contact", scan.subject, scan.venue_id,
                                                         scan.ts_ms))
    return sorted(chosen.values(), key=lambda e: (e.role != "case", e.ts_ms, e.event_id))


def sealed_contacts(store: SqlHistoryStore, event_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """event_id -> (device_id, contact_sealed) for the events that have a sealed contact."""
    found: dict[str, tuple[str, str]] = {}
    ids = list(dict.fromkeys(event_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        with store._lock:
            rows = store._fetch("SELECT c.event_id, e.device_id, c.contact_sealed FROM event_contacts c"
                                " JOIN events e ON e.event_id = c.event_id WHERE c.event_id IN ("
                                + ", ".join("?" for _ in chunk) + ")", chunk)
        found.update((str(e), (str(d), str(c))) for e, d, c in rows)
    return found


def reveal(store: SqlHistoryStore, found: TraceFound, case_subjects: frozenset[str], rules: TraceRules,
           keys: Sequence[X25519PrivateKey], *, at_ms: int, operator: str, reason: str,
           searched: dict[str, Any], result: dict[str, Any]) -> list[OpenedContact]:
    """Audit, then open the sealed contacts of the trace's events (see the module docstring).

    Args:
        found: the trace (``run_trace``).
        case_subjects: the subjects the case was searched by.
        keys: the health office's private keys, tried in order (an old and a new one while rotating).
        at_ms, operator, reason: for the audit; ``reason`` must not be blank.
        searched, result: the trace's audit fields; ``result`` gains ``opened`` (the event ids
            whose sealed contacts are opened) and ``without_sealed_contact`` (a count).

    Returns:
        One entry per event of the trace, opened or with its problem.

    Raises:
        ConfigError: no reason, or no key.
        StoreError: the audit could not be written; nothing was opened.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ConfigError("a reveal needs a --reason (the case's file number, the order...): it is kept in the "
                          "audit with the events opened")
    if not keys:
        raise ConfigError("a reveal needs the health office's private key (--escrow-key)")
    wanted = events_to_open(found, case_subjects, rules)
    sealed = sealed_contacts(store, [e.event_id for e in wanted])
    opened_ids = [e.event_id for e in wanted if e.event_id in sealed]
    append_audit(store, at_ms=at_ms, operator=operator, action="reveal", reason=reason, searched=searched,
                 result={**result, "opened": sorted(opened_ids), "without_sealed_contact": len(wanted) - len(opened_ids)})
    out: list[OpenedContact] = []
    for event in wanted:
        display = found.displays.get((event.subject, event.venue_id), "")
        if event.event_id not in sealed:
            out.append(OpenedContact(event, display, problem=NO_SEALED_CONTACT))
            continue
        device_id, blob = sealed[event.event_id]
        problem = "no key given"
        for key in keys:
            try:
                contact = open_contact(blob, key, device_id, event.event_id)
            except EscrowError as err:
                problem = str(err)
                continue
            out.append(OpenedContact(event, display, contact.name, contact.phone, contact.id))
            break
        else:
            out.append(OpenedContact(event, display, problem=problem))
    return out
