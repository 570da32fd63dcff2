"""Who may trace, and where (issue 14, item 6).

* The health office's staff (``backoffice.people.roles``) trace across every venue in the
  database; only they may reveal contact data or quarantine (``backoffice.tracing.actions``,
  which checks again on every POST).
* A venue manager (registrant or co-manager) traces within the venues they manage: the
  trace reads only those venues' events, so the case's visits and the contacts elsewhere are
  neither read nor shown. What they see is masked, as everywhere.
* Anyone else may not trace (403).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HEALTH_OFFICE = "health_office"
MANAGER = "manager"


@dataclass(frozen=True)
class TraceScope:
    """What one logged-in person may trace.

    Attributes:
        role: ``health_office`` or ``manager``.
        venue_ids: the venues whose events the trace may read; None means every venue.
        may_reveal: may open sealed contact data (the health office only).
        may_quarantine: may put the case and the contacts on the deny lists (the health office only).
    """

    role: str
    venue_ids: frozenset[str] | None
    may_reveal: bool = False
    may_quarantine: bool = False

    def allows(self, venue_id: str) -> bool:
        """Whether a trace of this person may read venue_id's events."""
        return self.venue_ids is None or venue_id in self.venue_ids

    def narrowed(self, venue_id: str) -> frozenset[str] | None:
        """The venues a trace reads: all of the scope, or one venue of it when venue_id is given.

        Raises:
            PermissionError: venue_id is outside the scope.
        """
        if not venue_id:
            return self.venue_ids
        if not self.allows(venue_id):
            raise PermissionError(venue_id)
        return frozenset({venue_id})


def scope_of(user: Any) -> TraceScope | None:
    """The person's trace scope, or None if they may not trace at all."""
    from backoffice.people.roles import is_health_office
    from backoffice.venues.services import managed

    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if is_health_office(user):
        return TraceScope(HEALTH_OFFICE, None, may_reveal=True, may_quarantine=True)
    venues = frozenset(managed(user).values_list("venue_id", flat=True))
    if venues:
        return TraceScope(MANAGER, venues)
    return None
