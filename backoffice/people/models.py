"""One-time codes and the audit log. Managers are Django users whose username is their phone (+84...)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class OtpChallenge(models.Model):
    """One code sent by SMS (only its HMAC is kept).

    ``purpose`` is ``register`` or ``login``; ``client`` is an HMAC of the asking address,
    kept for the hourly cap.
    """

    phone = models.CharField(max_length=16, db_index=True)
    purpose = models.CharField(max_length=16)
    code_hash = models.CharField(max_length=64)
    client = models.CharField(max_length=32, db_index=True)
    created_s = models.FloatField(db_index=True)
    expires_s = models.FloatField()
    tries = models.PositiveSmallIntegerField(default=0)
    used = models.BooleanField(default=False)
    sent = models.BooleanField(default=True, help_text="False for an unknown phone at login: nothing is sent")

    class Meta:
        ordering = ["-created_s"]
        verbose_name = "one-time code"

    def __str__(self) -> str:
        return f"{self.purpose} code for {self.phone[:6]}*** ({'used' if self.used else f'{self.tries} tries'})"


class AuditEntry(models.Model):
    """One privileged action: who did what to which venue or gate, and the answer."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=40)
    venue_id = models.CharField(max_length=20, blank=True, db_index=True)
    device_id = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    answer = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.venue_id} {self.device_id}"
