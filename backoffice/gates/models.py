"""Gates known to the back office and the venue-wide deny and allow lists."""

from __future__ import annotations

from django.db import models

from backoffice.venues.models import Venue


class Gate(models.Model):
    """A gate of a venue: provisioned from the page, or seen on the broker."""

    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="gates")
    device_id = models.CharField(max_length=64, unique=True)
    direction = models.CharField(max_length=3, default="in")
    added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["device_id"]

    def __str__(self) -> str:
        return self.device_id


class VenueList(models.Model):
    """The venue's deny or allow list as last published (ids as the gates match them)."""

    DENY, ALLOW = "deny", "allow"
    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="lists")
    kind = models.CharField(max_length=5, choices=[(DENY, DENY), (ALLOW, ALLOW)])
    ids = models.JSONField(default=list)
    version = models.PositiveBigIntegerField(default=0)
    published = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["venue", "kind"], name="one_list_per_kind")]

    def __str__(self) -> str:
        return f"{self.kind} list of {self.venue.venue_id} v{self.version}"
