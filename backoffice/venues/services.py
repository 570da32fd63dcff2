"""What the venue pages do to the database: register, scope to a manager, co-managers, audit."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from backoffice.people.models import AuditEntry
from backoffice.venues.models import AccessRequest, Management, Venue
from provisioning.venues import Venue as VenueRecord

log = logging.getLogger(__name__)


class AlreadyRegistered(Exception):
    """The same registration (same id) exists already."""


def audit(actor: Any, action: str, venue_id: str = "", device_id: str = "", detail: str = "",
          answer: str = "") -> AuditEntry:
    """Record a privileged action (never a full phone number or a payload in detail)."""
    return AuditEntry.objects.create(actor=actor, action=action, venue_id=venue_id, device_id=device_id,
                                     detail=detail[:300], answer=answer[:300])


def user_for_phone(phone: str, name: str = "") -> Any:
    """The person with this phone (E.164), created without a password if new (they log in by SMS)."""
    users = get_user_model()
    user, created = users.objects.get_or_create(username=phone, defaults={"first_name": name[:150]})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    elif name and not user.first_name:
        user.first_name = name[:150]
        user.save(update_fields=["first_name"])
    return user


def register(record: VenueRecord, user: Any, parent: Venue | None) -> Venue:
    """Create the venue (the CLI's record and id) with user as its registrant.

    Raises:
        AlreadyRegistered: a venue with the same id exists.
    """
    created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = dataclasses.replace(record, created_at=created_at).to_json()
    try:
        with transaction.atomic():
            venue = Venue.objects.create(venue_id=record.venue_id, name=record.name, parent=parent,
                                         full_address=record.full_address, registrant=user,
                                         registrant_name=record.registrant, record=doc)
            Management.objects.create(venue=venue, user=user, role=Management.REGISTRANT)
    except IntegrityError as err:
        raise AlreadyRegistered(record.venue_id) from err
    audit(user, "venue_registered", venue.venue_id)
    log.info("venue %s registered", venue.venue_id)
    return venue


def managed(user: Any) -> Any:
    """The venues user manages (a QuerySet)."""
    return Venue.objects.filter(managements__user=user).distinct()


def venue_of(user: Any, venue_id: str) -> Venue:
    """The venue if user manages it.

    Raises:
        Http404: unknown, or not theirs (the same answer, so ids cannot be probed).
    """
    venue = Venue.objects.filter(venue_id=venue_id, managements__user=user).first()
    if venue is None:
        raise Http404("no such venue")
    return venue


def is_registrant(user: Any, venue: Venue) -> bool:
    return venue.registrant_id == user.pk


def request_access(user: Any, venue_id: str) -> AccessRequest | None:
    """Ask the registrant of venue_id for co-management; None if no such venue."""
    venue = Venue.objects.filter(venue_id=venue_id).first()
    if venue is None:
        return None
    found = AccessRequest.objects.filter(venue=venue, phone=user.username, status=AccessRequest.PENDING).first()
    if found is not None:
        return found
    req = AccessRequest.objects.create(venue=venue, kind=AccessRequest.REQUEST, phone=user.username,
                                       name=user.first_name)
    audit(user, "access_requested", venue.venue_id)
    return req


def decide(user: Any, venue: Venue, request_id: int, approve: bool) -> None:
    """The registrant approves or refuses a pending request.

    Raises:
        Http404: not a pending request of this venue.
    """
    req = AccessRequest.objects.filter(pk=request_id, venue=venue, status=AccessRequest.PENDING).first()
    if req is None:
        raise Http404("no such request")
    with transaction.atomic():
        req.status = AccessRequest.APPROVED if approve else AccessRequest.REFUSED
        req.decided = timezone.now()
        req.save(update_fields=["status", "decided"])
        if approve:
            Management.objects.get_or_create(venue=venue, user=user_for_phone(req.phone, req.name),
                                             defaults={"role": Management.CO_MANAGER})
    audit(user, "access_approved" if approve else "access_refused", venue.venue_id)


def invite(user: Any, venue: Venue, phone: str) -> bool:
    """The registrant makes phone a co-manager (their account is made if new). False if already one."""
    invitee = user_for_phone(phone)
    _, created = Management.objects.get_or_create(venue=venue, user=invitee,
                                                  defaults={"role": Management.CO_MANAGER})
    if created:
        AccessRequest.objects.create(venue=venue, kind=AccessRequest.INVITE, phone=phone,
                                     status=AccessRequest.APPROVED, decided=timezone.now())
        audit(user, "co_manager_invited", venue.venue_id)
    return created


def remove_co_manager(user: Any, venue: Venue, management_id: int) -> None:
    """The registrant removes a co-manager (never the registrant).

    Raises:
        Http404: not a co-manager of this venue.
    """
    found = Management.objects.filter(pk=management_id, venue=venue, role=Management.CO_MANAGER).first()
    if found is None:
        raise Http404("no such co-manager")
    found.delete()
    audit(user, "co_manager_removed", venue.venue_id)
