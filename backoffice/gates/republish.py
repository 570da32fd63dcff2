"""`qrgate backoffice publish-lists`: the venues' lists published again, and ended quarantines deleted.

A signed list message is valid for 7 days (``firmware.core.list_message.MAX_VALIDITY_S``), and a
gate skips a retained copy that has expired: a gate offline for longer would find an expired
list on its venue's topic and miss a quarantine published before it went away. An entry whose
quarantine ended leaves the list only at the next publish. So ``republish_lists`` (run daily by
``systemd/qrgate-backoffice-lists.timer``)

1. deletes the ``QuarantineEntry`` rows that ended more than ``[privacy] quarantine_keep_days``
   ago (the trace audit's ``quarantine`` rows and the back office audit log keep theirs), with
   one audit entry (action ``quarantine_retention``) when it deleted any;
2. publishes each venue's deny list again with what is in force now (the managers' ids, the
   revoked passes, the quarantine entries that have not ended: ``views.publish_list``), and its
   allow list if it has one, each as a new version, signed and retained on the venue-wide
   topic; each publication is written to the audit log (action ``list_deny_republished`` /
   ``list_allow_republished``) with the gates' answers.

A venue's deny list is published when it was published before or the venue has a gate the
back office knows (provisioned here, or seen in its scans); an allow list only when it was
published before. With ``older_than_h`` a list goes out only when it is *due*: never taken by
the broker, last taken more than that many hours ago, or (a deny list) carrying a quarantine
entry that has ended since; the others are reported as fresh.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backoffice.gates.models import Gate, QuarantineEntry, VenueList
from backoffice.gates.quarantine import DAY_S, GateAnswer, gate_answer
from backoffice.venues import services
from backoffice.venues.models import Venue
from firmware.core.errors import ConfigError, QrGateError
from firmware.core.events import rfc3339_ms
from firmware.core.list_message import MAX_VALIDITY_S

log = logging.getLogger(__name__)

HOUR_S = 3600
MAX_OLDER_THAN_H = MAX_VALIDITY_S // HOUR_S  # a list must go out again before its message expires
# At night many gates are off, and each silent gate's list waits up to 5 s: past this budget the
# remaining lists are published without waiting (the retained copy reaches those gates later).
WAIT_BUDGET_S = 300.0


@dataclass(frozen=True)
class ListOutcome:
    """One venue list's part of a run.

    Attributes:
        venue_id, name, kind: the list.
        why: why it was due ("never published", "published 30 h ago", "a quarantine ended
            since"), or why not ("published 3 h ago: fresh").
        sent: whether it was published in this run.
        version, answer: the version published and the outcome (as in the audit log); 0 and
            "" when not sent.
        quarantined: quarantine entries in force that went out with it.
        gates: each gate's answer, in the order they came.
        silent: the venue's known gates that did not answer in time (the retained list reaches
            them when they connect).
        awaited: whether the gates' answers were awaited (not once the wait budget is spent).
    """

    venue_id: str
    name: str
    kind: str
    why: str
    sent: bool
    version: int = 0
    answer: str = ""
    quarantined: int = 0
    gates: tuple[GateAnswer, ...] = ()
    silent: tuple[str, ...] = ()
    awaited: bool = True

    @property
    def ok(self) -> bool:
        """Not sent (fresh), or published and refused by no gate."""
        return not self.sent or (self.answer.startswith("published") and all(g.ok for g in self.gates))


@dataclass(frozen=True)
class RepublishOutcome:
    """What one run did (for the command's output and its exit status)."""

    deleted: int
    ended_before_s: int
    keep_days: int
    lists: tuple[ListOutcome, ...]

    @property
    def ok(self) -> bool:
        """Every due list was published and no gate refused one (a silent gate is no refusal)."""
        return all(item.ok for item in self.lists)

    def lines(self) -> list[str]:
        """One line for the retention, one per list and one per gate answer, for a terminal."""
        out = [f"deleted {self.deleted} quarantine entries that ended before {rfc3339_ms(self.ended_before_s)} "
               f"(privacy.quarantine_keep_days = {self.keep_days})"]
        for item in self.lists:
            head = f"{item.venue_id} ({item.name}): {item.kind} list"
            if not item.sent:
                out.append(f"{head} {item.why}, not published again")
                continue
            extra = f", {item.quarantined} quarantine entries in force" if item.kind == VenueList.DENY else ""
            out.append(f"{head} version {item.version} ({item.why}{extra}): {item.answer}")
            out.extend(f"  {g.device_id}: {g.text}" for g in item.gates)
            out.extend(f"  {device_id}: no answer" for device_id in item.silent)
            if not item.awaited:
                out.append("  (the gates' answers were not awaited: the wait budget was spent)")
        if not self.lists:
            out.append("no venue has a list or a gate: nothing to publish")
        return out


def check_older_than_h(value: float | None) -> None:
    """Refuse an ``--if-older-than-h`` that would let a retained list expire.

    Raises:
        ConfigError: not a number above 0 and below the 7-day validity (168 h).
    """
    if value is not None and not 0 < value < MAX_OLDER_THAN_H:
        raise ConfigError(f"--if-older-than-h {value:g}: give hours above 0 and below {MAX_OLDER_THAN_H} (a "
                          f"list message is valid for {MAX_OLDER_THAN_H} h), e.g. 20 for a daily run")


def delete_ended_quarantines(now_s: float, keep_days: int, venues: list[Venue] | None = None) -> tuple[int, int]:
    """Delete the quarantine entries that ended more than keep_days before now_s (of these venues;
    None: all), with one audit entry when any went.

    Returns:
        (entries deleted, the end before which they were deleted, Unix s).
    """
    ended_before_s = int(now_s) - keep_days * DAY_S
    deleted = QuarantineEntry.delete_ended(ended_before_s, venues)
    if deleted:
        scope = "all venues" if venues is None else ", ".join(v.venue_id for v in venues)
        services.audit(None, "quarantine_retention",
                       detail=f"{deleted} quarantine entries that ended before {rfc3339_ms(ended_before_s)} "
                              f"deleted ({keep_days} days kept; {scope})"[:300])
        log.info("deleted %d quarantine entries that ended before %s", deleted, rfc3339_ms(ended_before_s))
    return deleted, ended_before_s


def _venues_with_gates(database_url: str) -> set[str]:
    """The venues with a gate the back office knows: provisioned here or seen in the scan history."""
    from provisioning.history.store import open_store

    found = set(Gate.objects.values_list("venue__venue_id", flat=True))
    try:
        store = open_store(database_url, readonly=True)
        try:
            # "web" is the phone check-ins' device (backoffice.personal), not a gate
            found.update(venue_id for venue_id, device_id in store.sources() if device_id != "web")
        finally:
            store.close()
    except QrGateError as err:
        log.warning("history sources unavailable, only provisioned gates count: %s", err)
    return found


def _why_due(current: VenueList, now_s: float, older_than_h: float | None) -> tuple[bool, str]:
    """Whether the list is due, and why (or why not)."""
    if current.published is None:
        return True, "never published"
    published_s = current.published.timestamp()
    age = f"published {max(0.0, now_s - published_s) / HOUR_S:.0f} h ago"
    if older_than_h is None:
        return True, age
    if now_s - published_s > older_than_h * HOUR_S:
        return True, age
    if current.kind == VenueList.DENY and QuarantineEntry.objects.filter(
            venue=current.venue, until_s__gt=int(published_s), until_s__lte=int(now_s)).exists():
        return True, f"{age}; a quarantine ended since"
    return False, f"{age}: fresh"


def republish_lists(*, now_s: float, database_url: str, keep_days: int, venue_id: str = "",
                    older_than_h: float | None = None, wait_for_gates: bool = True,
                    wait_budget_s: float = WAIT_BUDGET_S) -> RepublishOutcome:
    """Delete the ended quarantines past their keeping, then publish the venues' lists again
    (see the module docstring). Blocks while each list's gates answer (up to a few seconds a list).

    Args:
        now_s: the time (Unix s): what is in force, the lists' ages, the messages' ``iat``.
        database_url: the back office's database (its scan history tells which gates a venue has).
        keep_days: ``[privacy] quarantine_keep_days``.
        venue_id: only this venue (its lists and its quarantine entries); "" for all.
        older_than_h: publish only the lists that are due (above); None publishes every list.
        wait_for_gates: wait for the venue's known gates to answer each list.
        wait_budget_s: no list starts waiting for its gates once this many seconds (monotonic)
            have passed since the run's first publish; later lists are still published.

    Returns:
        What was deleted and each list's outcome, with its gates' answers.

    Raises:
        ConfigError: an unknown venue, or ``older_than_h`` out of range.
    """
    check_older_than_h(older_than_h)
    venues = list(Venue.objects.order_by("venue_id"))
    if venue_id:
        venues = [v for v in venues if v.venue_id == venue_id]
        if not venues:
            raise ConfigError(f"--venue {venue_id!r}: no such venue in the back office")
    deleted, ended_before_s = delete_ended_quarantines(now_s, keep_days, venues if venue_id else None)
    from backoffice.gates.views import publish_list

    with_gates = _venues_with_gates(database_url)
    outcomes = []
    started_s: float | None = None
    for venue in venues:
        lists = {v.kind: v for v in VenueList.objects.filter(venue=venue)}
        for kind in (VenueList.DENY, VenueList.ALLOW):
            current = lists.get(kind)
            known = current is not None and current.version > 0
            if not known and not (kind == VenueList.DENY and venue.venue_id in with_gates):
                continue
            if current is None:
                current = VenueList.objects.create(venue=venue, kind=kind)
            due, why = _why_due(current, now_s, older_than_h)
            if not due:
                outcomes.append(ListOutcome(venue.venue_id, venue.name, kind, why, False))
                continue
            started_s = time.monotonic() if started_s is None else started_s
            wait = wait_for_gates and time.monotonic() - started_s < wait_budget_s
            done = publish_list(None, venue, current, list(current.ids), wait_for_gates=wait,
                                action=f"list_{kind}_republished", now_s=now_s)
            outcomes.append(ListOutcome(venue.venue_id, venue.name, kind, why, True, done.version, done.answer,
                                        done.quarantined, tuple(gate_answer(d, a) for d, a in done.gates),
                                        done.silent, wait))
    log.info("publish-lists: %d of %d lists published, %d quarantine entries deleted",
             sum(1 for o in outcomes if o.sent), len(outcomes), deleted)
    return RepublishOutcome(deleted, ended_before_s, keep_days, tuple(outcomes))
