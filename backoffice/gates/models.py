"""Gates known to the back office, the venue-wide deny and allow lists, and the quarantines on them."""

from __future__ import annotations

from django.conf import settings
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


class QuarantineEntry(models.Model):
    """One deny-list entry of a quarantine (Cách ly), in force until ``until_s``.

    ``entry`` is what the venue's gates match: a person's subject at this venue (the HMAC the
    scan events carry), or a person id (only the case's, when it was traced by id). Every
    publish of the venue's deny list adds the entries still in force, each with its end, next
    to the managers' ids and the revoked passes; an ended entry leaves the list at the next
    publish. Rows are kept after they end, as the record of who was kept out, when and why, for
    ``[privacy] quarantine_keep_days``; then ``qrgate backoffice publish-lists`` deletes them
    (``delete_ended``; the trace audit and the audit log keep their rows).
    """

    CASE, CONTACT = "case", "contact"
    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="quarantine")
    entry = models.CharField(max_length=128)
    role = models.CharField(max_length=8, choices=[(CASE, CASE), (CONTACT, CONTACT)])
    until_s = models.BigIntegerField(help_text="Unix seconds; the gates ignore the entry from then on")
    reason = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    operator = models.CharField(max_length=100, blank=True, help_text="who ran the command (no back office user)")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["venue", "until_s"], name="quarantine_in_force")]
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.role} quarantine at {self.venue.venue_id} until {self.until_s}"

    @classmethod
    def in_force(cls, venue: Venue, now_s: float) -> dict[str, int]:
        """The venue's entries that have not ended at now_s: entry -> the latest until (Unix seconds)."""
        found: dict[str, int] = {}
        for entry, until_s in cls.objects.filter(venue=venue, until_s__gt=int(now_s)).values_list("entry", "until_s"):
            found[entry] = max(int(until_s), found.get(entry, 0))
        return found

    @classmethod
    def people_in_force(cls, venue: Venue, now_s: float) -> dict[int, int]:
        """How many people the venue's quarantines keep out at now_s, by end: until (Unix s) -> people.

        Counted as people, not entries: each contact entry is one person (a contact has one
        subject at a venue), and the entries of one quarantine's case (its subject and its id)
        are one person. A person is counted once, at their latest end. Nothing here names anyone.
        """
        latest: dict[tuple[object, ...], int] = {}
        rows = cls.objects.filter(venue=venue, until_s__gt=int(now_s)).values_list(
            "entry", "role", "until_s", "reason", "created_by_id", "operator")
        for entry, role, until_s, reason, created_by, operator in rows:
            # one quarantine's entries share its end, reason and author: its case is one person
            person = ("case", until_s, reason, created_by, operator) if role == cls.CASE else ("contact", entry)
            latest[person] = max(int(until_s), latest.get(person, 0))
        people: dict[int, int] = {}
        for until_s in latest.values():
            people[until_s] = people.get(until_s, 0) + 1
        return dict(sorted(people.items()))

    @classmethod
    def delete_ended(cls, ended_before_s: float, venues: list[Venue] | None = None) -> int:
        """Delete the entries that ended before ended_before_s (Unix s), of these venues (None: all).

        Returns:
            How many entries were deleted.
        """
        rows = cls.objects.filter(until_s__lt=int(ended_before_s))
        if venues is not None:
            rows = rows.filter(venue__in=venues)
        deleted, _by_model = rows.delete()
        return deleted
