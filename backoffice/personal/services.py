"""What the people's pages do: passes, revocation, declarations, check-ins and one's own visits.

Every function takes ``now_s`` from its caller (the view reads the clock once).

Phone check-ins carry the person's contact sealed to the health office's key when
``[privacy] escrow_key`` is set, exactly as a gate seals it (``sealed_contact``).

Revocation: a reissued or lost pass gets ``revoked_s``; every venue's deny list is then
published again (signed by the command key, retained on the venue-wide topic the gates
read) with ``pass:<cti hex>`` for each revoked pass that has not expired yet, next to the
ids the venue's managers put there (``backoffice.gates.views.publish_venue_list``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from backoffice import site
from backoffice.personal.models import CheckIn, HealthDeclaration, PersonalPass, PersonProfile, VenueSecret, WebSequence
from backoffice.venues.models import Venue
from firmware.core.credentials import cccd, qg1
from firmware.core.escrow import IKM_BYTES, Contact, EscrowError, seal_contact
from firmware.core.events import protect_subject
from firmware.core.masking import display

log = logging.getLogger(__name__)

DAY_S = 86400
CTI_BYTES = 16
ISSUER_NAME = "qrgate"
WEB_DEVICE = "web"  # the device_id of phone check-ins in the scan history
WEB_BOOT_ID = "web"
SELF_CREDENTIAL = "self"

# The 2021 domestic declaration (tokhaiyte.vn): symptoms in the last 14 days, contacts, travel.
# Any "yes" is a risky answer: the pass then carries no ``hd``.
SYMPTOMS = ("fever", "cough", "breath", "throat", "taste_smell", "fatigue", "pneumonia")
EXPOSURES = ("contact_case", "contact_suspect", "contact_abroad", "travel_outbreak")
QUESTIONS = SYMPTOMS + EXPOSURES


def new_subject() -> str:
    """A person's pass ``sub``: random (never derived from the phone), 32 hex digits."""
    return secrets.token_hex(16)


def cccd_problem(number: str, year_now: int) -> str | None:
    """Check a typed CCCD number by the CCCD QR's numbering rules; None if it is fine.

    12 digits, a known province code, a gender-and-century digit and birth year that make a
    birth year not in the future (``firmware.core.credentials.cccd``).
    """
    if len(number) != 12 or not number.isascii() or not number.isdigit():
        return "12 digits"
    if number[:3] not in cccd.PROVINCE_CODES:
        return "province code"
    birth_year = cccd.CENTURY_START[int(number[3])] + int(number[4:6])
    if birth_year > year_now:
        return "birth year"
    return None


def venue_secret(venue: Venue) -> bytes:
    """The venue's HMAC secret, made (32 random bytes) the first time it is needed."""
    row, _ = VenueSecret.objects.get_or_create(venue=venue, defaults={"secret_hex": secrets.token_hex(32)})
    return bytes.fromhex(row.secret_hex)


def subject_at(venue: Venue, profile: PersonProfile) -> str:
    """The person's subject as the venue's gates store it (``privacy.subject = "hmac"``)."""
    return protect_subject(profile.subject, "hmac", venue_secret(venue)) or ""


def live_pass(profile: PersonProfile) -> PersonalPass | None:
    """The person's newest pass that is not revoked (it may have expired)."""
    return profile.passes.filter(revoked_s__isnull=True).order_by("-issued_s", "-id").first()


def latest_declaration(profile: PersonProfile) -> HealthDeclaration | None:
    return profile.declarations.order_by("-declared_s", "-id").first()


def declared_at(profile: PersonProfile) -> float | None:
    """The ``hd`` a new pass carries: the latest declaration's time, unless it was risky."""
    latest = latest_declaration(profile)
    return None if latest is None or latest.risky else latest.declared_s


def _sign(profile: PersonProfile, phone: str, now_s: float, hd_s: float | None, cti: bytes) -> str:
    from provisioning.keys import load_private_key

    cfg = site.current()
    key = load_private_key(cfg.keys.issuer_key)
    claims = qg1.build_claims(sub=profile.subject, name=profile.full_name, phone=phone, iss=ISSUER_NAME,
                              iat_s=int(now_s), nbf_s=int(now_s),
                              exp_s=int(now_s) + cfg.people.pass_valid_days * DAY_S, cti=cti,
                              hd_s=None if hd_s is None else int(hd_s))
    return qg1.encode(claims, key)


def issue_pass(profile: PersonProfile, now_s: float, *, same_token: PersonalPass | None = None) -> PersonalPass:
    """Sign a pass for the person with ``hd`` from their latest declaration.

    Args:
        same_token: re-sign this pass (same ``cti``, new times and ``hd``) instead of making a new one.
    """
    hd_s = declared_at(profile)
    phone = profile.user.get_username()
    if same_token is not None:
        same_token.text = _sign(profile, phone, now_s, hd_s, bytes.fromhex(same_token.token_id))
        same_token.issued_s = float(int(now_s))
        same_token.expires_s = float(int(now_s) + site.current().people.pass_valid_days * DAY_S)
        same_token.health_declared_s = hd_s
        same_token.save()
        return same_token
    cti = secrets.token_bytes(CTI_BYTES)
    text = _sign(profile, phone, now_s, hd_s, cti)
    return PersonalPass.objects.create(profile=profile, token_id=cti.hex(), text=text, issued_s=float(int(now_s)),
                                       expires_s=float(int(now_s) + site.current().people.pass_valid_days * DAY_S),
                                       health_declared_s=hd_s)


def replace_pass(profile: PersonProfile, now_s: float, why: str) -> tuple[PersonalPass, bool]:
    """Revoke the live pass (``reissue``, ``lost``, ``risky``) and issue a new one.

    Returns:
        The new pass, and whether a pass was revoked (so the deny lists must be published).
    """
    with transaction.atomic():
        revoked = PersonalPass.objects.filter(profile=profile, revoked_s__isnull=True).update(
            revoked_s=now_s, revoked_why=why)
        new = issue_pass(profile, now_s)
    return new, bool(revoked)


def publish_revocations(actor: Any) -> list[str]:
    """Publish every venue's deny list again with the revoked passes; returns one answer a venue."""
    from backoffice.gates.models import VenueList
    from backoffice.gates.views import publish_venue_list

    answers = []
    for venue in Venue.objects.order_by("venue_id"):
        current = VenueList.objects.get_or_create(venue=venue, kind=VenueList.DENY)[0]
        answers.append(publish_venue_list(actor, venue, current, list(current.ids), wait_for_gates=False,
                                          action="list_deny_revocations"))
    return answers


@dataclass(frozen=True)
class Declared:
    """The outcome of a declaration: the saved answers and the pass to show."""

    declaration: HealthDeclaration
    pass_: PersonalPass
    revoked: bool


def declare(profile: PersonProfile, answers: dict[str, bool], now_s: float) -> Declared:
    """Save a declaration and give the person a pass that carries it.

    A clear declaration re-signs the live pass with ``hd`` = now (same ``cti``). A risky one
    revokes the live pass (it may carry an earlier ``hd``) and issues one without ``hd``.
    Declarations older than ``[people] declaration_retention_days`` are deleted first.
    """
    risky = any(answers.get(q, False) for q in QUESTIONS)
    keep_s = site.current().people.declaration_retention_days * DAY_S
    with transaction.atomic():
        # Answers are kept for the retention period only (everyone's, a cheap indexed delete).
        HealthDeclaration.objects.filter(declared_s__lt=now_s - keep_s).delete()
        declaration = HealthDeclaration.objects.create(profile=profile, declared_s=now_s, risky=risky,
                                                       answers={q: bool(answers.get(q, False)) for q in QUESTIONS})
        current = live_pass(profile)
        if risky:
            new, revoked = replace_pass(profile, now_s, "risky")
        elif current is not None:
            new, revoked = issue_pass(profile, now_s, same_token=current), False
        else:
            new, revoked = issue_pass(profile, now_s), False
    return Declared(declaration, new, revoked)


def fresh_declaration(profile: PersonProfile, now_s: float) -> bool:
    """Whether the person's latest declaration is clear and within ``declaration_fresh_h``."""
    hd = declared_at(profile)
    return hd is not None and 0 <= now_s - hd <= site.current().people.declaration_fresh_h * 3600


def records_exits(venue: Venue) -> bool:
    """A venue records exits when one of its gates faces out."""
    return venue.gates.filter(direction="out").exists()


@dataclass(frozen=True)
class CheckedIn:
    """The answer to "Check in": recorded (with the event id), or too soon after the last one."""

    recorded: bool
    wait_s: int = 0
    event_id: str = ""


def _next_seq() -> int:
    with transaction.atomic():
        row, _ = WebSequence.objects.select_for_update().get_or_create(device_id=WEB_DEVICE)
        row.last_seq += 1
        row.save(update_fields=["last_seq"])
        return int(row.last_seq)


def contact_of(profile: PersonProfile) -> Contact:
    """What a gate seals for this person's pass: full name, full phone (E.164, as in the pass) and
    the pass ``sub`` (the CCCD number typed in the profile is not part of it, as it is not in the pass)."""
    return Contact(name=profile.full_name, phone=profile.user.get_username(), id=profile.subject)


def sealed_contact(profile: PersonProfile, event_id: str) -> str | None:
    """The person's contact sealed to ``[privacy] escrow_key`` for the phone check-in ``event_id``.

    The same construction as a gate's ``contact_sealed`` (``firmware.core.escrow``: HPKE bound to
    ``device_id`` ``web`` and the event id, the JSON padded to 128 bytes), so ``qrgate history
    trace --reveal`` opens it like a gate's.

    Returns:
        The base64url blob, or None when no escrow key is configured, or (never expected: the key
        was checked at start and a profile's name fits) when sealing fails; the check-in is then
        kept without it, since losing the presence would be worse.
    """
    recipient = site.current().privacy.escrow_public_key
    if recipient is None:
        return None
    try:
        return seal_contact(contact_of(profile), recipient, WEB_DEVICE, event_id, secrets.token_bytes(IKM_BYTES))
    except EscrowError as err:
        log.error("phone check-in %s stored without a sealed contact: %s", event_id, err)
        return None


def check_in(profile: PersonProfile, venue: Venue, direction: str, now_s: float) -> CheckedIn:
    """Record a phone check-in (or check-out) as a scan event of the venue in the history.

    The event: ``device_id`` ``web``, credential ``self``, granted, ``ok``, the person's
    subject for this venue (HMAC with the venue secret), their masked name and phone, and with
    ``[privacy] escrow_key`` their contact sealed to it (``event_contacts``). One a person,
    venue and direction per ``[people] checkin_repeat_s``.
    """
    from provisioning.history.events import HistoryEvent, format_ts, person_key

    window_s = site.current().people.checkin_repeat_s
    with transaction.atomic():
        last = CheckIn.objects.select_for_update().filter(profile=profile, venue=venue, direction=direction).first()
        if last is not None and 0 <= now_s - last.at_s < window_s:
            return CheckedIn(False, wait_s=int(last.at_s + window_s - now_s + 0.999))
        CheckIn.objects.update_or_create(profile=profile, venue=venue, direction=direction,
                                         defaults={"at_s": now_s})
    seq = _next_seq()
    ts_ms = int(now_s * 1000)
    event_id = str(uuid.uuid4())
    shown = display(profile.full_name, profile.user.get_username())
    event = HistoryEvent(
        event_id=event_id, device_id=WEB_DEVICE, venue_id=venue.venue_id, direction=direction,
        ts=format_ts(ts_ms), ts_ms=ts_ms, seq=seq, boot_id=WEB_BOOT_ID, time_synced=True, decision="granted",
        reason="ok", credential=SELF_CREDENTIAL, subject=subject_at(venue, profile), display=shown,
        person_key=person_key(shown), latency_ms=0.0,
        code_sha256=hashlib.sha256(f"self:{event_id}".encode()).hexdigest(), received_ms=ts_ms,
        contact_sealed=sealed_contact(profile, event_id))
    writer().add([event])
    log.info("phone check-in at %s (seq %d)", venue.venue_id, seq)
    return CheckedIn(True, event_id=event_id)


_writer: Any = None


def writer() -> Any:
    """The history store on the back office's database, opened for writing once per process."""
    global _writer
    if _writer is None:
        from provisioning.history.store import open_store

        _writer = open_store(site.current().database_url)
    return _writer


def my_scans(profile: PersonProfile, limit: int = 200) -> list[tuple[Any, Venue | None]]:
    """The person's own scans at every venue, newest first: (event, venue).

    For each venue the back office knows, the person's subject is computed with the venue's
    secret and looked up (an indexed match on ``subject``); scans from gates that publish the
    raw subject are found by the raw ``sub``.
    """
    from backoffice.history.views import store
    from provisioning.history.query import Filter

    found: dict[str, tuple[Any, Venue | None]] = {}
    venues = {v.venue_id: v for v in Venue.objects.all()}
    for venue in venues.values():
        flt = Filter(person=subject_at(venue, profile), venue=venue.venue_id)
        for ev in store().page(flt, 1, limit).rows:
            found[ev.event_id] = (ev, venue)
    for ev in store().page(Filter(person=profile.subject), 1, limit).rows:
        found[ev.event_id] = (ev, venues.get(ev.venue_id))
    rows = sorted(found.values(), key=lambda pair: (pair[0].ts_ms, pair[0].event_id), reverse=True)
    return rows[:limit]
