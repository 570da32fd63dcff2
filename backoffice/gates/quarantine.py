"""Cách ly (quarantine): a trace's case and contacts onto the deny lists of the venues where they
might go, until an end date, and the lists published to the gates.

``quarantine_contacts`` is what `qrgate history trace --config F --quarantine-days N` and the
"Truy vết" page's button call. It

1. plans the entries (``provisioning.history.quarantine_plan``: each subject on the list of the
   venue where it was seen; a person the back office can name, and the case traced by id, on
   every venue's list),
2. appends one row to the trace audit (``trace_audit``, append-only: who, when, why, the
   contacts' subjects, the end and the entries per venue; never a raw id) **before** anything
   is stored or sent,
3. stores the entries (``QuarantineEntry``: venue, entry, role, until, reason, who),
4. publishes the deny list of every venue that got entries, signed and retained on the
   venue-wide topic (``backoffice.gates.views.publish_list``, which merges the managers' ids,
   the revoked passes and every quarantine entry still in force, each with its ``until``), and
   records each venue's publication with the gates' answers in the back office audit log
   (action ``quarantine``).

The gates ignore an entry from its ``until`` on; the next publish of the venue's list leaves it
out. The caller decides who may do this (``may_quarantine``: the health office's staff, the
same rule as the "Truy vết" page's, ``backoffice.people.roles.is_health_office``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from backoffice import site
from backoffice.gates.models import QuarantineEntry, VenueList
from backoffice.venues.models import Venue
from firmware.core.events import protect_subject, rfc3339_ms
from provisioning.history.quarantine_plan import MAX_QUARANTINE_DAYS, QuarantinePlan, plan_quarantine
from provisioning.history.tracing import TraceResult

log = logging.getLogger(__name__)

DAY_S = 86400
MAX_DAYS = MAX_QUARANTINE_DAYS
MAX_REASON_CHARS = 200
ACTION = "quarantine"


class QuarantineRefused(ValueError):
    """The quarantine was not started: bad days or reason, or nothing to quarantine."""


@dataclass(frozen=True)
class GateAnswer:
    """One gate's answer to the published list (its ``response/lists`` message)."""

    device_id: str
    ok: bool
    text: str  # "deny list version 1767225600, 12 ids" or the refusal


@dataclass(frozen=True)
class VenueOutcome:
    """One venue's part of a quarantine.

    Attributes:
        venue_id, name: the venue.
        added: entries this quarantine added to the venue's list.
        in_force: quarantine entries (all quarantines) that went out with the list.
        version: the list version published.
        answer: the publication's outcome (as in the audit log).
        gates: each gate's answer, in the order they came.
        silent: the venue's known gates that did not answer while we waited (the retained list
            reaches them when they connect); empty when the answers were not awaited or the
            list was not published.
        awaited: whether the gates' answers were awaited.
    """

    venue_id: str
    name: str
    added: int
    in_force: int
    version: int
    answer: str
    gates: tuple[GateAnswer, ...]
    silent: tuple[str, ...] = ()
    awaited: bool = True

    @property
    def published(self) -> bool:
        return self.answer.startswith("published")


@dataclass(frozen=True)
class QuarantineOutcome:
    """What a quarantine did (for the command's output and the page)."""

    until_s: int
    days: int
    contacts: int
    named: int
    venues: tuple[VenueOutcome, ...]
    unknown_venues: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every list was published and no gate refused it (a gate that did not answer is not a
        refusal: the retained list reaches it when it connects)."""
        return all(v.published and all(g.ok for g in v.gates) for v in self.venues)

    def lines(self) -> list[str]:
        """One line per venue and per gate answer, for a terminal."""
        out = []
        for v in self.venues:
            out.append(f"{v.venue_id} ({v.name}): {v.added} entries added, {v.in_force} in force, "
                       f"deny list version {v.version}: {v.answer}")
            out.extend(f"  {g.device_id}: {g.text}" for g in v.gates)
            out.extend(f"  {device_id}: no answer" for device_id in v.silent)
        if self.unknown_venues:
            out.append(f"not published (venues the back office does not know): {', '.join(self.unknown_venues)}")
        return out


def may_quarantine(user: Any) -> bool:
    """Whether a back office user may start a quarantine: the health office's staff only (the one
    rule, ``is_health_office``: an admin account outside the group may not)."""
    from backoffice.people.roles import is_health_office

    return is_health_office(user)


def _people_index(venue_ids: Iterable[str], secrets: dict[str, bytes]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(venue_id, subject) -> the ids (pass ``sub``, CCCD number) of the back office's people, for
    the venues of a trace: a subject is matched as the HMAC with the venue's secret or as the raw id."""
    from backoffice.personal.models import PersonProfile

    venues = sorted(set(venue_ids))
    index: dict[tuple[str, str], tuple[str, ...]] = {}
    for subject, cccd in PersonProfile.objects.values_list("subject", "cccd").iterator():
        ids = tuple(i for i in (subject, cccd) if i)
        for venue_id in venues:
            secret = secrets.get(venue_id)
            for person_id in ids:
                index[(venue_id, person_id)] = ids
                if secret:
                    index[(venue_id, protect_subject(person_id, "hmac", secret) or "")] = ids
    return index


def _secrets() -> dict[str, bytes]:
    from backoffice.personal.models import VenueSecret

    found = {}
    for venue_id, secret_hex in VenueSecret.objects.values_list("venue__venue_id", "secret_hex"):
        try:
            found[venue_id] = bytes.fromhex(secret_hex)
        except ValueError:
            log.warning("the venue secret of %s is not hex; its subjects cannot be computed", venue_id)
    return found


def _audit(operator: str, reason: str, plan: QuarantinePlan, result: TraceResult, now_s: float, until_s: int,
           days: int, by_person_id: bool) -> None:
    """One append-only trace_audit row, before anything is stored or sent (no row, no quarantine)."""
    from provisioning.history.store import open_store
    from provisioning.history.trace_store import append_audit

    store = open_store(site.current().database_url)
    try:
        append_audit(store, at_ms=int(now_s * 1000), operator=operator, action=ACTION, reason=reason,
                     searched={"case_subjects": sorted({v.subject for v in result.visits}),
                               "by": "person_id" if by_person_id else "subject", "days": days},
                     result={"until": rfc3339_ms(until_s), "contacts": plan.contacts, "named": plan.named,
                             "contact_subjects": result.contact_subjects(),
                             "entries": {v: len(e) for v, e in plan.entries.items()},
                             "unknown_venues": list(plan.unknown_venues)})
    finally:
        store.close()


def gate_answer(device_id: str, answer: dict[str, Any]) -> GateAnswer:
    """A gate's ``response/lists`` message as one line ("deny list version N, M ids" or the refusal)."""
    data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
    if answer.get("status") == "ok":
        return GateAnswer(device_id, True, f"{data.get('kind', 'deny')} list version {data.get('version')}, "
                                           f"{data.get('count')} ids")
    return GateAnswer(device_id, False, f"refused: {str(answer.get('error'))[:200]}")


def quarantine_contacts(actor: Any, trace_result: TraceResult, days: int, reason: str, *, person_id: str = "",
                        operator: str = "", now_s: float | None = None, wait_for_gates: bool = True,
                        wait_budget_s: float | None = None) -> QuarantineOutcome:
    """Put a trace's case and contacts on the deny lists of the venues where they might go for
    ``days`` days, and publish those lists (see the module docstring).

    Args:
        actor: the back office user who asked (None from the command line); the caller has
            checked ``may_quarantine``.
        trace_result: the trace (``provisioning.history.trace_store.run_trace(...).result``).
        days: 1 to ``MAX_DAYS``; the entries end at now + days.
        reason: why (the case's file number...), required, for the audit and the entries.
        person_id: the case's id when it was traced by id: it then goes on every venue's list.
        operator: who, for the trace audit (default: the actor's user id).
        now_s: the time (default: the clock), for tests.
        wait_for_gates: wait a few seconds per venue for its gates' answers.
        wait_budget_s: no venue starts waiting for its gates' answers once this many seconds
            (monotonic) have passed since the first publish; the later venues' lists are still
            published, unawaited. The page sets it so that a quarantine of many venues with
            silent gates ends within the web server's request timeout. None: no budget (the
            command line).

    Returns:
        Each venue's publication with its gates' answers.

    Raises:
        QuarantineRefused: days out of range, no reason, or nobody to quarantine.
        StoreError: the trace audit could not be written (nothing was stored or sent).
    """
    reason = " ".join(str(reason).split())[:MAX_REASON_CHARS]
    if type(days) is not int or not 1 <= days <= MAX_DAYS:
        raise QuarantineRefused(f"the quarantine lasts 1 to {MAX_DAYS} days, not {days!r}")
    if not reason:
        raise QuarantineRefused("give the reason (the case's file number...) for the audit")
    person_id = person_id.strip()
    if not trace_result.visits and not trace_result.contacts and not person_id:
        raise QuarantineRefused("the trace found no visit and no contact: nobody to quarantine")
    now_s = time.time() if now_s is None else now_s
    until_s = int(now_s) + days * DAY_S
    venues = {v.venue_id: v for v in Venue.objects.all()}
    secrets = _secrets()
    seen_venues = {v.venue_id for v in trace_result.visits} | {c.venue_id for c in trace_result.contacts}
    index = _people_index(seen_venues & set(venues), secrets)
    plan = plan_quarantine(trace_result, venues=venues, secrets=secrets, person_id=person_id,
                           known_ids=lambda venue_id, subject: index.get((venue_id, subject), ()))
    who = operator or (f"user {actor.pk}" if actor is not None else "")
    _audit(who, reason, plan, trace_result, now_s, until_s, days, bool(person_id))
    with transaction.atomic():
        QuarantineEntry.objects.bulk_create([
            QuarantineEntry(venue=venues[venue_id], entry=entry, role=role, until_s=until_s, reason=reason,
                            created_by=actor, operator=operator[:100])
            for venue_id, entries in sorted(plan.entries.items()) for entry, role in sorted(entries.items())])
    from backoffice.gates.views import publish_list

    outcomes = []
    started_s = time.monotonic()
    for venue_id, entries in sorted(plan.entries.items()):
        venue = venues[venue_id]
        deny, _ = VenueList.objects.get_or_create(venue=venue, kind=VenueList.DENY)
        wait = wait_for_gates and (wait_budget_s is None or time.monotonic() - started_s < wait_budget_s)
        done = publish_list(actor, venue, deny, list(deny.ids), wait_for_gates=wait, action=ACTION, now_s=now_s)
        outcomes.append(VenueOutcome(venue_id, venue.name, len(entries), done.quarantined, done.version,
                                     done.answer, tuple(gate_answer(d, a) for d, a in done.gates),
                                     done.silent, wait))
    log.info("quarantine until %s: %d entries at %d venues", rfc3339_ms(until_s), plan.count(), len(outcomes))
    return QuarantineOutcome(until_s, days, plan.contacts, plan.named, tuple(outcomes), plan.unknown_venues)
