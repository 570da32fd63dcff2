"""The people's side: a person's profile and passes, health declarations, the venues' HMAC secrets.

A person is a Django user named by their phone (the same login as managers). Their pass
``sub`` is ``PersonProfile.subject``, random and stable, never the phone. Scans and
check-ins stay in ``provisioning.history``'s tables; nothing here copies them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from backoffice.venues.models import Venue


class PersonProfile(models.Model):
    """The holder of a personal pass: full name, optional CCCD number, the stable random subject."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    subject = models.CharField(max_length=40, unique=True, help_text="the pass sub: random, stable, never the phone")
    full_name = models.CharField(max_length=100)
    cccd = models.CharField(max_length=12, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"profile {self.subject[:10]}…"


class PersonalPass(models.Model):
    """One signed pass. A newer pass of the same person replaces it; ``revoked_s`` puts its
    ``cti`` on the venue-wide deny lists (``pass:<cti hex>``) until it expires."""

    profile = models.ForeignKey(PersonProfile, on_delete=models.CASCADE, related_name="passes")
    token_id = models.CharField(max_length=64, unique=True, help_text="cti, hex")
    text = models.TextField(help_text="the QG1: text")
    issued_s = models.FloatField()
    expires_s = models.FloatField(db_index=True)
    health_declared_s = models.FloatField(null=True, blank=True)
    revoked_s = models.FloatField(null=True, blank=True, db_index=True)
    revoked_why = models.CharField(max_length=20, blank=True)

    class Meta:
        ordering = ["-issued_s", "-id"]

    def __str__(self) -> str:
        return f"pass {self.token_id[:8]}… {'revoked' if self.revoked_s else 'live'}"


class HealthDeclaration(models.Model):
    """One "Khai báo y tế": the yes/no answers and when; seen only by the person and staff."""

    profile = models.ForeignKey(PersonProfile, on_delete=models.CASCADE, related_name="declarations")
    declared_s = models.FloatField(db_index=True)
    answers = models.JSONField()
    risky = models.BooleanField()

    class Meta:
        ordering = ["-declared_s", "-id"]

    def __str__(self) -> str:
        return f"declaration {self.pk} ({'risky' if self.risky else 'clear'})"


class VenueSecret(models.Model):
    """The venue's HMAC secret (32 bytes, hex) keying the hashed subjects in its scan events.

    Held here and by the venue's gates (their ``privacy.hmac_secret_file``); the back office
    uses it to find a person's own scans and to write their phone check-ins.
    """

    venue = models.OneToOneField(Venue, on_delete=models.CASCADE, related_name="hmac_secret")
    secret_hex = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"secret of {self.venue.venue_id}"


class CheckIn(models.Model):
    """The person's latest phone check-in at a venue (the repeat window); the event itself is
    in the scan history."""

    profile = models.ForeignKey(PersonProfile, on_delete=models.CASCADE, related_name="checkins")
    venue = models.ForeignKey(Venue, on_delete=models.CASCADE, related_name="+")
    direction = models.CharField(max_length=3)
    at_s = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "venue", "direction"], name="one_last_checkin")]


class WebSequence(models.Model):
    """The ``seq`` counter of the web's check-in events (device ``web``), so the history's gap
    report sees one gap-free device."""

    device_id = models.CharField(max_length=64, unique=True)
    last_seq = models.BigIntegerField(default=0)
