"""Which deny-list entries a quarantine puts on which venue's list (the back office's Cách ly). Pure.

A trace gives the case's visits and the contacts, each as a ``subject`` at a venue: the HMAC
of the person's id with that venue's secret (or the raw id at a venue with ``privacy.subject
= "raw"``). A subject only means something at its own venue, so:

1. every case visit and every contact puts its subject on the list of the venue where it was
   seen (the gates there match it: they compute the same subject from the id a pass or card
   carries);
2. a person the back office can name (``known_ids``: a personal pass it issued, whose ``sub``
   and CCCD number it keeps) is put on the list of **every** venue whose secret the back office
   keeps, as their subject there: a contact met at venue A is then kept out of venue B too;
3. the case traced by ``person_id`` is put on every venue's list as its subject there (venues
   whose secret the back office keeps) and as the raw id (every venue): the raw id also matches
   at gates whose secret the back office does not have. Contacts never go on a list as raw ids.

Venues the back office does not know (a gate installed with the CLI only) cannot be published
to: their entries are reported in ``unknown_venues``, not planned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from firmware.core.events import protect_subject
from provisioning.history.tracing import TraceResult

CASE, CONTACT = "case", "contact"
MAX_QUARANTINE_DAYS = 60  # the longest quarantine one action may set

# (venue_id, subject as stored) -> the ids of the person the back office knows by it, or ().
KnownIds = Callable[[str, str], Iterable[str]]


def _none(venue_id: str, subject: str) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class QuarantinePlan:
    """The entries to add, by venue.

    Attributes:
        entries: venue_id -> {entry: ``case`` or ``contact``} (a case entry wins over a contact one).
        contacts: how many different contact subjects the trace found.
        named: how many of the people (case and contacts) the back office could name, so that
            they go on every venue's list.
        unknown_venues: venues of the trace that are not the back office's (not planned).
    """

    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    contacts: int = 0
    named: int = 0
    unknown_venues: tuple[str, ...] = ()

    def count(self) -> int:
        """Entries over all venues."""
        return sum(len(e) for e in self.entries.values())


def plan_quarantine(result: TraceResult, *, venues: Iterable[str], secrets: Mapping[str, bytes],
                    person_id: str = "", known_ids: KnownIds = _none) -> QuarantinePlan:
    """Plan a quarantine's entries by the module's rules.

    Args:
        result: the trace (the case's visits and the contacts).
        venues: every venue the back office publishes lists for.
        secrets: the venues' HMAC secrets the back office keeps, by venue id.
        person_id: the case's id when it was traced by id ("" when by subject).
        known_ids: the ids of a person the back office can name from a subject at a venue.
    """
    venue_set = set(venues)
    entries: dict[str, dict[str, str]] = {v: {} for v in sorted(venue_set)}
    unknown: set[str] = set()

    def put(venue_id: str, entry: str, role: str) -> None:
        if venue_id not in venue_set:
            unknown.add(venue_id)
            return
        if entry and entries[venue_id].get(entry) != CASE:
            entries[venue_id][entry] = role

    case_ids: set[str] = {person_id} if person_id else set()
    for visit in result.visits:
        put(visit.venue_id, visit.subject, CASE)
        case_ids.update(known_ids(visit.venue_id, visit.subject))
    case_subjects = {v.subject for v in result.visits}
    contact_people: dict[str, frozenset[str]] = {}  # a contact subject -> the ids naming its person
    for contact in result.contacts:
        if contact.subject in case_subjects:
            continue
        put(contact.venue_id, contact.subject, CONTACT)
        ids = frozenset(known_ids(contact.venue_id, contact.subject))
        contact_people[contact.subject] = contact_people.get(contact.subject, frozenset()) | ids
    named_contacts = {ids for ids in contact_people.values() if ids}
    for ids, role in [(frozenset(case_ids), CASE), *((ids, CONTACT) for ids in named_contacts)]:
        for venue_id in sorted(venue_set):
            secret = secrets.get(venue_id)
            if secret:
                for person in sorted(ids):
                    put(venue_id, protect_subject(person, "hmac", secret) or "", role)
    if person_id:
        for venue_id in sorted(venue_set):
            put(venue_id, person_id, CASE)
    return QuarantinePlan({v: e for v, e in entries.items() if e}, len(contact_people),
                          len(named_contacts) + (1 if case_ids else 0), tuple(sorted(unknown)))
