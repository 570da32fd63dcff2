"""Turning decisions into scan events. Pure: applies the privacy setting, formats time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from firmware.core.escrow import IKM_BYTES, Contact, seal_contact
from firmware.core.identity import GateIdentity, IdentityCell
from firmware.core.model import CredentialType, Decision, ScanEvent
from firmware.core.policy import Rules

EVENT_ID_RANDOM_BYTES = 10
# What ``EventFactory.build`` takes from the caller's random source: the event id's random part,
# then the ephemeral key material of the sealed contact.
ENTROPY_BYTES = EVENT_ID_RANDOM_BYTES + IKM_BYTES


def rfc3339_ms(wall_s: float) -> str:
    """Format Unix seconds as UTC RFC 3339 with milliseconds, e.g. 2026-11-26T13:40:01.123Z."""
    return datetime.fromtimestamp(wall_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_event_id(wall_s: float, random_bytes: bytes) -> str:
    """A unique id that sorts by time: 48-bit milliseconds then 80 random bits, hex (UUIDv7-like).

    Args:
        wall_s: the event's wall time.
        random_bytes: at least 10 random bytes.
    """
    ms = int(wall_s * 1000) & ((1 << 48) - 1)
    return f"{ms:012x}{random_bytes[:10].hex()}"


def venue_code_hash(code_sha256: str, secret: bytes) -> str:
    """The ``code_sha256`` an event publishes: HMAC-SHA256 of the payload's SHA-256 with the
    venue secret (64 hex), so one pass gives unrelated values at different venues and cannot
    link a person across them. Without a secret (tools, benches) the plain hash is returned.

    Args:
        code_sha256: hex SHA-256 of the QR payload.
        secret: the per-venue HMAC secret (``privacy.hmac_secret_file``).
    """
    if not secret:
        return code_sha256
    return hmac.new(secret, b"qrgate.code/1\n" + code_sha256.encode("ascii"), "sha256").hexdigest()


def protect_subject(subject: str | None, mode: str, secret: bytes) -> str | None:
    """Apply the privacy setting to a person id.

    Args:
        subject: the raw person id, or None.
        mode: ``raw`` (as is), ``hmac`` (HMAC-SHA256 with the venue secret, 32 hex chars),
            or ``none``.
        secret: the per-venue HMAC secret.
    """
    if subject is None or mode == "none":
        return None
    if mode == "raw":
        return subject
    return hmac.new(secret, subject.encode("utf-8"), "sha256").hexdigest()[:32]


def contact_of(decision: Decision) -> Contact | None:
    """The contact a decision's verified credential carries (full name, full phone, raw id), or
    None when the gate read no identity."""
    credential = decision.credential
    if credential is None:
        return None
    contact = Contact(name=credential.name or "", phone=credential.phone or "", id=credential.subject or "")
    return None if contact.empty else contact


@dataclass(frozen=True)
class EventFactory:
    """Builds ScanEvents for one gate. Pure.

    Venue and direction are read from the identity in force for every event, so an event
    built after a provisioning names the new venue.

    Attributes:
        device_id: the gate.
        identity: the cell holding the gate's identity (venue, direction).
        boot_id: random id of this daemon start.
        subject_mode: privacy.subject (``raw``, ``hmac``, ``none``).
        secret: the per-venue HMAC secret.
        publish_codes: include the raw payload text (privacy.publish_codes).
        escrow_key: the health office's X25519 public key (privacy.escrow_key): events of a decision
            with a verified credential then carry the person's contact sealed to it
            (``contact_sealed``), and get their ``event_id`` here, since the seal is bound to it.
    """

    device_id: str
    identity: IdentityCell
    boot_id: str
    subject_mode: str = "hmac"
    secret: bytes = b""
    publish_codes: bool = False
    escrow_key: X25519PublicKey | None = None

    @classmethod
    def fixed(cls, *, device_id: str, venue_id: str, direction: str, boot_id: str, **options: Any) -> EventFactory:
        """A factory for a gate whose identity never changes (tools, benches, tests)."""
        identity = IdentityCell(GateIdentity(venue_id=venue_id, rules=Rules(direction=direction)))
        return cls(device_id=device_id, identity=identity, boot_id=boot_id, **options)

    @property
    def venue_id(self) -> str:
        """The venue in force."""
        return self.identity.current.venue_id

    @property
    def direction(self) -> str:
        """The direction in force."""
        return self.identity.current.direction

    def build(self, decision: Decision, wall_s: float, time_synced: bool, code_text: str | None = None,
              entropy: bytes = b"") -> ScanEvent:
        """Return the event for one decision (``seq`` still None).

        Without an escrow key, or without a person's contact in the decision, ``event_id`` is
        None too (the event sink gives it). With both, the event gets its ``event_id`` from
        ``wall_s`` and ``entropy[:10]`` and its ``contact_sealed`` from ``entropy[10:42]``.

        Args:
            entropy: ``ENTROPY_BYTES`` fresh random bytes (needed only with an escrow key).

        Raises:
            ValueError: an escrow key is set and entropy is shorter than ``ENTROPY_BYTES``.
        """
        identity = self.identity.current
        event = ScanEvent(
            device_id=self.device_id,
            venue_id=identity.venue_id,
            direction=identity.direction,
            ts=rfc3339_ms(wall_s),
            time_synced=time_synced,
            boot_id=self.boot_id,
            decision=decision.verdict.value,
            reason=decision.reason.value,
            credential=decision.credential_type.value,
            subject=protect_subject(decision.subject, self._subject_mode_for(decision), self.secret),
            display=decision.display,
            latency_ms=decision.latency_ms,
            code_sha256=venue_code_hash(decision.code_sha256, self.secret),
            code=code_text if self.publish_codes else None,
        )
        contact = contact_of(decision)
        if self.escrow_key is None or contact is None:
            return event
        if len(entropy) < ENTROPY_BYTES:
            raise ValueError(f"sealing a contact needs {ENTROPY_BYTES} random bytes, got {len(entropy)}")
        event_id = new_event_id(wall_s, entropy[:EVENT_ID_RANDOM_BYTES])
        sealed = seal_contact(contact, self.escrow_key, self.device_id, event_id,
                              entropy[EVENT_ID_RANDOM_BYTES:ENTROPY_BYTES])
        return replace(event, event_id=event_id, contact_sealed=sealed)

    def _subject_mode_for(self, decision: Decision) -> str:
        # A COVID certificate's subject is its identifier (ci), a health record id: never
        # published raw; its HMAC still lets a consumer count repeat visits.
        if decision.credential_type is CredentialType.DCC and self.subject_mode == "raw":
            return "hmac"
        return self.subject_mode

    def build_record(self, *, decision: str, reason: str, credential: str, code_sha256: str, wall_s: float,
                     time_synced: bool, subject: str | None = None, display: str = "",
                     prov_nonce: str | None = None, device_key: str | None = None) -> ScanEvent:
        """Return an event that is not a scan decision (``provisioned``, a remote open...).

        ``subject`` is published as given: pass only ids that are not personal data.
        ``prov_nonce`` and ``device_key`` go only on the ``provisioned`` event (enrolment).
        """
        identity = self.identity.current
        return ScanEvent(
            device_id=self.device_id, venue_id=identity.venue_id, direction=identity.direction,
            ts=rfc3339_ms(wall_s), time_synced=time_synced, boot_id=self.boot_id,
            decision=decision, reason=reason, credential=credential, subject=subject,
            display=display, latency_ms=0.0, code_sha256=code_sha256, code=None,
            prov_nonce=prov_nonce, device_key=device_key if prov_nonce is not None else None)
