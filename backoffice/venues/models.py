"""Venues (the record `qrgate provision venue` writes, kept in the database) and their managers."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Venue(models.Model):
    """A registered venue. ``venue_id`` follows the CLI's rule (``provisioning.venues.venue_id_for``)."""

    venue_id = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=200)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    full_address = models.CharField(max_length=500)
    registrant = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="registered")
    registrant_name = models.CharField(max_length=100)
    record = models.JSONField(help_text="the qrgate.venue/1 record, as the CLI writes it")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "venue_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.venue_id})"


class Management(models.Model):
    """A person who manages a venue: its registrant, or a co-manager. ``label`` is their own."""

    REGISTRANT, CO_MANAGER = "registrant", "co-manager"
    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="managements")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="managements")
    role = models.CharField(max_length=16, choices=[(REGISTRANT, REGISTRANT), (CO_MANAGER, CO_MANAGER)])
    label = models.CharField(max_length=60, blank=True)
    since = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["venue", "user"], name="one_management_per_person")]
        ordering = ["venue__name", "id"]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.venue.venue_id}"


class AccessRequest(models.Model):
    """Someone asks to co-manage a venue (``request``), or its registrant invites a phone (``invite``)."""

    REQUEST, INVITE = "request", "invite"
    PENDING, APPROVED, REFUSED = "pending", "approved", "refused"
    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="access_requests")
    kind = models.CharField(max_length=8, choices=[(REQUEST, REQUEST), (INVITE, INVITE)])
    phone = models.CharField(max_length=16, help_text="the requester's, or the invited, phone")
    name = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, default=PENDING,
                              choices=[(PENDING, PENDING), (APPROVED, APPROVED), (REFUSED, REFUSED)])
    created = models.DateTimeField(auto_now_add=True)
    decided = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind} {self.status} for {self.venue.venue_id}"
