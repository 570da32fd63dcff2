"""Sending and checking one-time codes through the database (the rules are in ``otp``).

Both functions run in one transaction and take ``now_s``, so tests and views agree on time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from backoffice.config import OtpSettings
from backoffice.people import otp
from backoffice.people.models import OtpChallenge
from backoffice.sms import SmsError, SmsSender

log = logging.getLogger(__name__)

HOUR_S = 3600.0


@dataclass(frozen=True)
class Issued:
    """The answer to a request for a code: sent (or pretended, for an unknown phone) or refused.

    Attributes:
        refusal: why no code was made, or None.
        expires_s: when the new (or current) code expires.
        wait_s: seconds before another code may be asked for.
    """

    refusal: otp.Refusal | None
    expires_s: float
    wait_s: int


def _history(phone: str, client: str, now_s: float) -> otp.IssueHistory:
    latest = OtpChallenge.objects.filter(phone=phone).order_by("-created_s").first()
    since = now_s - HOUR_S
    return otp.IssueHistory(
        last_issued_s=latest.created_s if latest else None, last_used=bool(latest and latest.used),
        phone_last_hour=OtpChallenge.objects.filter(phone=phone, created_s__gte=since).count(),
        client_last_hour=OtpChallenge.objects.filter(client=client, created_s__gte=since).count())


def issue(phone: str, purpose: str, client_address: str, *, send: bool, sender: SmsSender,
          rules: OtpSettings, now_s: float, text: str) -> Issued:
    """Make a code for phone and send it, unless the rules refuse.

    With ``send`` False (a login for a phone nobody registered) the code is recorded and
    counted exactly the same, but no SMS goes out, so the answer cannot tell the two apart.

    Args:
        text: the message, with ``{code}`` where the code goes.

    Raises:
        SmsError: the SMS backend failed; the code is not kept.
    """
    client = otp.client_key(settings.SECRET_KEY, client_address)
    with transaction.atomic():
        history = _history(phone, client, now_s)
        refusal = otp.may_issue(history, now_s, rules)
        if refusal is not None:
            latest = OtpChallenge.objects.filter(phone=phone, purpose=purpose).order_by("-created_s").first()
            log.warning("one-time code refused (%s)", refusal.value)
            return Issued(refusal, latest.expires_s if latest else now_s, otp.wait_s(history, now_s, rules))
        code = otp.new_code()
        # A new code ends the phone's earlier ones for this purpose.
        OtpChallenge.objects.filter(phone=phone, purpose=purpose, used=False).update(tries=rules.max_tries)
        OtpChallenge.objects.create(phone=phone, purpose=purpose, client=client,
                                    code_hash=otp.code_hash(settings.SECRET_KEY, purpose, phone, code),
                                    created_s=now_s, expires_s=now_s + rules.ttl_s, sent=send)
        if send:
            try:
                sender.send(phone, text.format(code=code))
            except SmsError:
                transaction.set_rollback(True)
                raise
    return Issued(None, now_s + rules.ttl_s, rules.resend_interval_s)


def verify(phone: str, purpose: str, typed: str, *, rules: OtpSettings, now_s: float) -> otp.Outcome:
    """Check a typed code against the phone's live code; every wrong answer counts a try.

    A code recorded for an unknown phone (nothing sent) never verifies.
    """
    typed = "".join(ch for ch in typed if not ch.isspace())
    typed_hash = otp.code_hash(settings.SECRET_KEY, purpose, phone, typed)
    with transaction.atomic():
        row = (OtpChallenge.objects.select_for_update().filter(phone=phone, purpose=purpose)
               .order_by("-created_s").first())
        live = None if row is None else otp.LiveCode(row.code_hash, row.expires_s, row.tries, row.used)
        outcome = otp.check(live, typed_hash, now_s, rules)
        if outcome is otp.Outcome.OK and row is not None and not row.sent:
            outcome = otp.Outcome.WRONG
        if row is not None:
            if outcome is otp.Outcome.OK:
                row.used = True
            elif outcome in (otp.Outcome.WRONG, otp.Outcome.EXPIRED):
                row.tries += 1
            row.save(update_fields=["used", "tries"])
            if outcome is otp.Outcome.WRONG and row.tries >= rules.max_tries:
                outcome = otp.Outcome.EXHAUSTED
    return outcome


def live_expiry(phone: str, purpose: str) -> float | None:
    """When the phone's newest code for purpose expires (None if there is none)."""
    row = OtpChallenge.objects.filter(phone=phone, purpose=purpose).order_by("-created_s").first()
    return row.expires_s if row is not None else None
