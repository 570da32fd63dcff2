"""Roles beyond managing a venue: the health office ("cơ quan y tế").

A person is on the health office's staff when they belong to the Django group
``HEALTH_OFFICE_GROUP``. ``qrgate backoffice healthoffice --phone P`` grants it (``--revoke``
takes it back), ``createstaff`` grants it with the admin rights, and a site admin can tick
the group on a user in ``/admin/``. The health office traces across every venue; a venue
manager traces only within their own venues (``backoffice.tracing.access``). Revealing
contact data and quarantining are for the health office only: check ``is_health_office``.
"""

from __future__ import annotations

from typing import Any

HEALTH_OFFICE_GROUP = "health office"


def ensure_groups() -> Any:
    """Create the health office group if it is missing (idempotent); return it."""
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name=HEALTH_OFFICE_GROUP)
    return group


def is_health_office(user: Any) -> bool:
    """Whether user is an active, logged-in member of the health office's staff."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.groups.filter(name=HEALTH_OFFICE_GROUP).exists()


def set_health_office(user: Any, member: bool) -> bool:
    """Put user in the health office group (or take them out). Returns whether anything changed."""
    group = ensure_groups()
    was = user.groups.filter(pk=group.pk).exists()
    if member and not was:
        user.groups.add(group)
    elif was and not member:
        user.groups.remove(group)
    return was != member
