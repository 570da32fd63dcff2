"""The core's data: frames, decoded codes, credentials, decisions and scan events.

Pure data, frozen dataclasses only. Nothing here reads a clock or touches I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.core.dcc_status import DccStatus

EVENT_SCHEMA = "qrgate.scan/1"


@dataclass(frozen=True)
class Frame:
    """One greyscale camera frame.

    Attributes:
        pixels: 2-D ``uint8`` numpy array (height x width), the Y plane.
        captured_mono_s: monotonic time the frame was captured, in seconds.
        index: frame counter from the source, starting at 0.
        origin: where it came from, for logs and benches (file name or camera name).
    """

    pixels: Any
    captured_mono_s: float
    index: int = 0
    origin: str = ""


@dataclass(frozen=True)
class DecodedCode:
    """One QR symbol found in a frame. The payload stays bytes until a parser accepts it.

    Attributes:
        payload: the raw bytes carried by the symbol.
        text: the payload as text when the decoder could tell (may be None for binary data).
        symbology: always ``"qr"`` for now.
    """

    payload: bytes
    text: str | None = None
    symbology: str = "qr"

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the payload: what logs and events may show instead of the code.

        Computed once per decoded code (the policy and the service both need it)."""
        return hashlib.sha256(self.payload).hexdigest()


class Verdict(StrEnum):
    """What the gate did for one code."""

    GRANTED = "granted"
    DENIED = "denied"


class Reason(StrEnum):
    """Why a decision came out the way it did. Published as-is in events."""

    OK = "ok"
    UNKNOWN_FORMAT = "unknown_format"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_ISSUER = "unknown_issuer"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    CLOCK_UNSYNCED = "clock_unsynced"
    DENIED = "denied"
    NOT_ALLOWED = "not_allowed"
    REPEAT = "repeat"
    PASSBACK = "passback"
    UNSIGNED_NOT_ALLOWED = "unsigned_not_allowed"
    NO_HEALTH_DECLARATION = "no_health_declaration"
    NO_EXPIRY = "no_expiry"
    MALFORMED = "malformed"
    STORAGE_FULL = "storage_full"
    NOT_PROVISIONED = "not_provisioned"
    LOCKDOWN = "lockdown"
    FREE_PASSAGE = "free_passage"
    FAIL_CLOSED = "fail_closed"
    LISTS_STALE = "lists_stale"
    LISTS_UNAVAILABLE = "lists_unavailable"
    REMOTE_OPEN = "remote_open"
    # EU Digital COVID Certificates (HC1:); see firmware/dcc_rules.py
    DCC_KEY_USAGE = "dcc_key_usage"
    DCC_SIGNER_NOT_VALID = "dcc_signer_not_valid"
    DCC_TRUST_LIST_STALE = "dcc_trust_list_stale"
    DCC_KIND_NOT_ACCEPTED = "dcc_kind_not_accepted"
    DCC_NOT_VACCINATED = "dcc_not_vaccinated"
    DCC_INCOMPLETE = "dcc_incomplete"
    DCC_TOO_RECENT = "dcc_too_recent"
    DCC_VACCINATION_TOO_OLD = "dcc_vaccination_too_old"
    DCC_PRODUCT_NOT_ACCEPTED = "dcc_product_not_accepted"
    DCC_TEST_TOO_OLD = "dcc_test_too_old"
    DCC_TEST_TYPE_NOT_ACCEPTED = "dcc_test_type_not_accepted"
    DCC_TEST_POSITIVE = "dcc_test_positive"
    DCC_RECOVERY_EXPIRED = "dcc_recovery_expired"
    DCC_IDENTITY_REQUIRED = "dcc_identity_required"
    DCC_IDENTITY_MISMATCH = "dcc_identity_mismatch"


class CredentialType(StrEnum):
    """The family a payload was recognised as."""

    QG1 = "qg1"
    CCCD = "cccd"
    DCC = "dcc"
    PROVISIONING = "provisioning"
    REMOTE = "remote"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Credential:
    """A credential that parsed and (if signed) verified. Not yet checked against policy.

    Times are Unix seconds (wall clock), or None when the credential does not carry them.

    Attributes:
        type: the credential family.
        subject: the person id (pass ``sub``, or the CCCD 12-digit number).
        name: the holder's full name, if carried.
        phone: the holder's phone number, if carried.
        issuer: issuer name (pass ``iss``), if carried.
        kid_hex: the signing key id, hex, for signed credentials.
        issued_at_s: ``iat``.
        not_before_s: ``nbf``.
        expires_s: ``exp``.
        health_declared_s: ``hd``, time of the holder's latest health declaration.
        token_id: ``cti`` hex, if carried.
        signed: True when a signature was verified.
        dcc: for an EU Digital COVID Certificate, what it says (the rules read it).
    """

    type: CredentialType
    subject: str
    name: str | None = None
    phone: str | None = None
    issuer: str | None = None
    kid_hex: str | None = None
    issued_at_s: float | None = None
    not_before_s: float | None = None
    expires_s: float | None = None
    health_declared_s: float | None = None
    token_id: str | None = None
    signed: bool = False
    dcc: DccStatus | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Rejection:
    """A payload that could not be accepted as a credential, with its reason.

    Attributes:
        type: the family it looked like (UNKNOWN if none).
        reason: why it was refused.
        detail: a short human explanation with no personal data in it.
    """

    type: CredentialType
    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class Moment:
    """The time of a decision, passed into the core.

    Attributes:
        mono_s: monotonic seconds, for every duration.
        wall_s: Unix seconds, for validity windows and published timestamps.
        wall_trusted: False when the wall clock is below its high-water mark or not
            synchronised while the policy requires it; time checks then fail closed.
    """

    mono_s: float
    wall_s: float
    wall_trusted: bool = True


@dataclass(frozen=True)
class Decision:
    """The gate's answer to one code.

    Attributes:
        verdict: granted or denied.
        reason: why.
        code_sha256: hex SHA-256 of the payload (never the payload itself).
        credential_type: the credential family.
        subject: the person id, raw. The event builder applies the privacy setting.
        display: masked name and phone, safe to show and log.
        decided_mono_s: monotonic time of the decision.
        frame_mono_s: monotonic capture time of the frame the code came from.
        credential: the verified credential when there was one.
    """

    verdict: Verdict
    reason: Reason
    code_sha256: str
    credential_type: CredentialType
    subject: str | None
    display: str
    decided_mono_s: float
    frame_mono_s: float
    credential: Credential | None = field(default=None, compare=False, repr=False)

    @property
    def granted(self) -> bool:
        """True when the gate should open."""
        return self.verdict is Verdict.GRANTED

    @property
    def latency_ms(self) -> float:
        """Frame capture to decision, in milliseconds."""
        return max(0.0, (self.decided_mono_s - self.frame_mono_s) * 1000.0)


@dataclass(frozen=True)
class ScanEvent:
    """A published record of one decision (schema ``qrgate.scan/1``).

    ``event_id`` and ``seq`` are None until an event sink has stored the event;
    the sink fills them in the same transaction that makes the event durable.

    Attributes:
        device_id, venue_id, direction: where it happened.
        ts: UTC RFC 3339 timestamp with milliseconds (wall clock at decision).
        time_synced: whether the wall clock was trusted at the time.
        boot_id: random id of this daemon start.
        decision: ``granted`` or ``denied`` (or another event type, e.g. ``provisioned``).
        reason: a ``Reason`` value.
        credential: the credential type.
        subject: the person id after the privacy setting (raw, HMAC, or None).
        display: masked name and phone.
        latency_ms: frame to decision.
        code_sha256: hex SHA-256 of the payload.
        code: the raw payload text, only when ``privacy.publish_codes`` is set.
        event_id: unique id, sortable by time.
        seq: per-device sequence number, strictly increasing, never reused.
        prov_nonce: only on the ``provisioned`` event: the provisioning code's nonce (hex),
            so whoever made the code can enrol the key below (``firmware.core.event_signature``).
        device_key: only with ``prov_nonce``: the gate's Ed25519 public key (raw, base64url).
        contact_sealed: with ``privacy.escrow_key``: the person's contact (name, full phone, id)
            sealed to the health office's key and bound to this event (``firmware.core.escrow``).
    """

    device_id: str
    venue_id: str
    direction: str
    ts: str
    time_synced: bool
    boot_id: str
    decision: str
    reason: str
    credential: str
    subject: str | None
    display: str
    latency_ms: float
    code_sha256: str
    code: str | None = None
    event_id: str | None = None
    seq: int | None = None
    schema: str = EVENT_SCHEMA
    prov_nonce: str | None = None
    device_key: str | None = None
    contact_sealed: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Return the event as the JSON object published on ``<prefix>/<device>/scan``."""
        doc: dict[str, Any] = {
            "schema": self.schema,
            "event_id": self.event_id,
            "seq": self.seq,
            "boot_id": self.boot_id,
            "device_id": self.device_id,
            "venue_id": self.venue_id,
            "direction": self.direction,
            "ts": self.ts,
            "time_synced": self.time_synced,
            "decision": self.decision,
            "event_type": self.decision,
            "reason": self.reason,
            "credential": self.credential,
            "subject": self.subject,
            "display": self.display,
            "latency_ms": round(self.latency_ms, 3),
            "code_sha256": self.code_sha256,
            "code": self.code,
        }
        if self.prov_nonce is not None:  # only the enrolment event carries these two
            doc["prov_nonce"] = self.prov_nonce
            doc["device_key"] = self.device_key
        if self.contact_sealed is not None:  # only with privacy.escrow_key, on events with a person
            doc["contact_sealed"] = self.contact_sealed
        return doc

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> ScanEvent:
        """Build an event back from ``to_json_dict`` output.

        Raises:
            KeyError, TypeError: a required field is missing or of the wrong type.
        """
        return cls(
            device_id=str(data["device_id"]),
            venue_id=str(data["venue_id"]),
            direction=str(data["direction"]),
            ts=str(data["ts"]),
            time_synced=bool(data["time_synced"]),
            boot_id=str(data["boot_id"]),
            decision=str(data["decision"]),
            reason=str(data["reason"]),
            credential=str(data["credential"]),
            subject=data.get("subject"),
            display=str(data.get("display", "")),
            latency_ms=float(data.get("latency_ms", 0.0)),
            code_sha256=str(data["code_sha256"]),
            code=data.get("code"),
            event_id=data.get("event_id"),
            seq=data.get("seq"),
            schema=str(data.get("schema", EVENT_SCHEMA)),
            prov_nonce=data.get("prov_nonce"),
            device_key=data.get("device_key"),
            contact_sealed=data.get("contact_sealed"),
        )


@dataclass(frozen=True)
class OutboxStats:
    """A snapshot of the outbox for status, state and benches.

    Attributes:
        stored: rows in the database (sent and unsent).
        unsent: rows not yet delivered (the backlog): not PUBACKed by the broker; with
            app_ack on, not yet acknowledged by the consumer (``awaiting_ack`` included).
        oldest_unsent_s: wall time the oldest undelivered event was stored, or None.
        seq_high: the highest seq ever assigned.
        max_events: the budget.
        fill: unsent / max_events (0.0 to 1.0).
        alarm_level: the highest alarm level reached (0.0, 0.5, 0.8 or 1.0 when full).
        quarantined: quarantined database files present in the state directory.
        awaiting_ack: app_ack only: rows PUBACKed but not yet acknowledged by the consumer
            (part of ``unsent``); always 0 with app_ack off.
        problem: why no event can be stored at all (a sink that refuses), or None.
    """

    stored: int
    unsent: int
    oldest_unsent_s: float | None
    seq_high: int
    max_events: int
    fill: float
    alarm_level: float
    quarantined: tuple[str, ...]
    awaiting_ack: int = 0
    problem: str | None = None
