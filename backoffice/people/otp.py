"""One-time codes sent by SMS: the pure rules (no Django, no clock reads).

Codes are 6 digits, stored only as an HMAC-SHA256 keyed with the site secret (over the
purpose, the phone and the code), compared in constant time. A code expires after
``ttl_s``; ``max_tries`` wrong answers end it. A phone gets at most one new code per
``resend_interval_s`` (unless its last code was used), and at most ``per_phone_per_hour``
codes an hour; a client address at most ``per_client_per_hour`` (SMS pumping).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from backoffice.config import OtpSettings

CODE_DIGITS = 6


class Refusal(enum.Enum):
    """Why no new code was sent."""

    TOO_SOON = "too_soon"
    PHONE_HOURLY_CAP = "phone_hourly_cap"
    CLIENT_HOURLY_CAP = "client_hourly_cap"


class Outcome(enum.Enum):
    """What checking a typed code gave."""

    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"  # max_tries reached, or no live code at all
    USED = "used"


def new_code() -> str:
    """A random 6-digit code (leading zeros kept)."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(secret: str, purpose: str, phone: str, code: str) -> str:
    """The stored form of a code: hex HMAC-SHA256 over purpose, phone and code."""
    message = f"{purpose}\x00{phone}\x00{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def client_key(secret: str, address: str) -> str:
    """A client address as stored for the hourly cap (an HMAC, not the address itself)."""
    return hmac.new(secret.encode(), b"client\x00" + address.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class IssueHistory:
    """What the store knows about recent codes, for ``may_issue``.

    Attributes:
        last_issued_s: when the phone's latest code was made (Unix s), or None.
        last_used: whether that latest code was used successfully.
        phone_last_hour: codes made for this phone in the last hour.
        client_last_hour: codes asked for by this client address in the last hour.
    """

    last_issued_s: float | None
    last_used: bool
    phone_last_hour: int
    client_last_hour: int


def may_issue(history: IssueHistory, now_s: float, rules: OtpSettings) -> Refusal | None:
    """Whether a new code may be sent now; None if yes, else why not.

    A code that was used successfully does not hold back the next one: the waiting time is
    there to stop repeated sends, and the person has just proved they hold the phone.
    """
    if history.client_last_hour >= rules.per_client_per_hour:
        return Refusal.CLIENT_HOURLY_CAP
    if history.phone_last_hour >= rules.per_phone_per_hour:
        return Refusal.PHONE_HOURLY_CAP
    if (history.last_issued_s is not None and not history.last_used
            and now_s - history.last_issued_s < rules.resend_interval_s):
        return Refusal.TOO_SOON
    return None


def wait_s(history: IssueHistory, now_s: float, rules: OtpSettings) -> int:
    """Seconds until a new code may be asked for because of the resend interval (0 if now)."""
    if history.last_issued_s is None or history.last_used:
        return 0
    return max(0, int(history.last_issued_s + rules.resend_interval_s - now_s + 0.999))


@dataclass(frozen=True)
class LiveCode:
    """A stored code as ``check`` needs it."""

    stored_hash: str
    expires_s: float
    tries: int
    used: bool


def check(code: LiveCode | None, typed_hash: str, now_s: float, rules: OtpSettings) -> Outcome:
    """Check the hash of a typed code against the stored one.

    The caller counts a try (``tries + 1``) for every outcome but OK before acting on it, so
    the fifth wrong answer ends the code. The hashes are compared in constant time.
    """
    if code is None or code.tries >= rules.max_tries:
        return Outcome.EXHAUSTED
    if code.used:
        return Outcome.USED
    if now_s >= code.expires_s:
        return Outcome.EXPIRED
    if hmac.compare_digest(code.stored_hash, typed_hash):
        return Outcome.OK
    return Outcome.WRONG


def seconds_left(expires_s: float, now_s: float) -> int:
    """Whole seconds until a code expires (0 when it has)."""
    return max(0, int(expires_s - now_s))
