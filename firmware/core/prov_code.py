"""The provisioning code, ``QGP1:``: a signed, short-lived code that provisions a gate. Pure.

Format: ``QGP1:`` + base45(zlib(COSE_Sign1(CBOR claims))), signed by a provisioning
authority key (Ed25519 or ES256), in the same envelope and COSE profile as the pass.

Claims (a CBOR map with text keys):

| key | type | meaning |
|---|---|---|
| ``v`` | int | claims version, 1 |
| ``venue_id`` | text | ``v-`` and 12 hex digits |
| ``venue_name`` | text | the venue's name, Vietnamese, NFC |
| ``direction`` | text | ``in`` or ``out`` |
| ``broker`` | text | ``host:port`` of the MQTT broker, or empty for none |
| ``issuers`` | array of bytes | optional: pass issuer public keys (DER SubjectPublicKeyInfo) to trust |
| ``device_id`` | text | optional: only the gate with this id accepts the code |
| ``nonce`` | bytes | 16 random bytes; a gate accepts each nonce once |
| ``iat``, ``exp`` | int | issued at and expiry, Unix seconds; ``exp - iat`` at most 24 h |

The authority keys that may sign a code come only from the device's authority trust
directory (``keys.authority_dir``); a code can carry issuer keys, never authority keys.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization

from firmware.core.cose import CoseError, loads_strict, sign1, verify1
from firmware.core.credentials.envelope import EnvelopeError, has_prefix, unwrap, wrap
from firmware.core.credentials.trust import TrustStore, check_public_key
from firmware.core.model import Reason

PREFIX = "QGP1:"
CLAIMS_VERSION = 1
MAX_VALIDITY_S = 24 * 3600
NONCE_BYTES = 16
MAX_ISSUER_KEYS = 8
VENUE_ID_RE = re.compile(r"^v-[0-9a-f]{12}$")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$|^\[[0-9a-fA-F:]+\]$")

# Extra reasons a provisioning code can be refused for (event ``reason`` values).
REPLAYED = "replayed"
WRONG_DEVICE = "wrong_device"
ALREADY_PROVISIONED = "already_provisioned"


@dataclass(frozen=True)
class ProvisioningCode:
    """A provisioning code whose signature verified and whose claims are well formed."""

    venue_id: str
    venue_name: str
    direction: str
    broker: str
    issuer_keys_der: tuple[bytes, ...]
    device_id: str | None
    nonce: bytes
    issued_at_s: int
    expires_s: int
    authority_kid_hex: str

    def to_record(self, applied_at_s: float) -> dict[str, Any]:
        """The JSON provisioning record the gate persists."""
        return {
            "venue_id": self.venue_id,
            "venue_name": self.venue_name,
            "direction": self.direction,
            "broker": self.broker,
            "issuer_keys_der_hex": [k.hex() for k in self.issuer_keys_der],
            "device_id": self.device_id,
            "nonce": self.nonce.hex(),
            "issued_at_s": self.issued_at_s,
            "expires_s": self.expires_s,
            "authority_kid": self.authority_kid_hex,
            "applied_at_s": applied_at_s,
        }


@dataclass(frozen=True)
class ProvisioningRefusal:
    """Why a provisioning code was refused: a reason value and a detail without secrets."""

    reason: str
    detail: str


class ProvisioningClaimsError(ValueError):
    """Claims that cannot go into a provisioning code (raised when making one)."""


def parse_broker(text: str) -> tuple[str, int] | None:
    """Split ``host:port`` (port 1-65535); None if it is not one. Empty text is not valid here."""
    m = re.fullmatch(r"(.+):(\d{1,5})", text.strip())
    if not m:
        return None
    host, port = m.group(1), int(m.group(2))
    if not HOST_RE.match(host) or not 1 <= port <= 65535:
        return None
    return host, port


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def build_claims(*, venue_id: str, venue_name: str, direction: str, broker: str, nonce: bytes,
                 iat_s: int, exp_s: int, issuer_keys: list[Any] | None = None,
                 device_id: str | None = None) -> dict[str, Any]:
    """Return the claims map of a provisioning code, checked.

    Raises:
        ProvisioningClaimsError: a field is invalid; the message says which and how to fix it.
    """
    problems = []
    if not VENUE_ID_RE.match(venue_id):
        problems.append(f"venue id {venue_id!r} is not a qrgate venue id (v- and 12 hex digits)")
    if direction not in ("in", "out"):
        problems.append(f"--direction {direction!r}: use in or out")
    if broker and parse_broker(broker) is None:
        problems.append(f"--broker {broker!r} is not host:port, e.g. mqtt.example.lan:8883")
    if device_id is not None and not DEVICE_ID_RE.match(device_id):
        problems.append(f"--device-id {device_id!r} must be a slug of a-z, 0-9, '_' and '-'")
    if len(nonce) != NONCE_BYTES:
        problems.append(f"nonce must be {NONCE_BYTES} bytes")
    if not 0 < exp_s - iat_s <= MAX_VALIDITY_S:
        problems.append(f"validity of {exp_s - iat_s} s is outside 1 s to 24 h; use --valid-minutes 1 to 1440")
    keys = list(issuer_keys or [])
    if len(keys) > MAX_ISSUER_KEYS:
        problems.append(f"{len(keys)} issuer keys; at most {MAX_ISSUER_KEYS} fit in one code")
    ders = []
    for key in keys:
        problem = check_public_key(key)
        if problem:
            problems.append(problem)
            continue
        ders.append(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    if problems:
        raise ProvisioningClaimsError("; ".join(problems))
    claims: dict[str, Any] = {
        "v": CLAIMS_VERSION, "venue_id": venue_id, "venue_name": _nfc(venue_name), "direction": direction,
        "broker": broker.strip(), "nonce": nonce, "iat": int(iat_s), "exp": int(exp_s),
    }
    if ders:
        claims["issuers"] = ders
    if device_id:
        claims["device_id"] = device_id
    return claims


def encode(claims: dict[str, Any], authority_key: Any) -> str:
    """Sign claims with the authority's private key and return the ``QGP1:`` text."""
    return wrap(PREFIX, sign1(cbor2.dumps(claims), authority_key), compress=True)


def detect(payload: bytes | str) -> bool:
    """True if the payload claims to be a provisioning code."""
    return has_prefix(PREFIX, payload)


def _text(claims: Mapping[Any, Any], key: str, limit: int) -> str:
    value = claims.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"claim {key!r} must be text of at most {limit} characters")
    value = _nfc(value)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError(f"claim {key!r} contains control characters")
    return value


def _claims_to_code(claims: Any, kid_hex: str) -> ProvisioningCode:
    if not isinstance(claims, Mapping):
        raise ValueError("claims must be a CBOR map")
    if claims.get("v") != CLAIMS_VERSION:
        raise ValueError(f"claims version {claims.get('v')!r} is not {CLAIMS_VERSION}")
    venue_id = _text(claims, "venue_id", 32)
    if not VENUE_ID_RE.match(venue_id):
        raise ValueError("venue_id is not a qrgate venue id")
    direction = _text(claims, "direction", 3)
    if direction not in ("in", "out"):
        raise ValueError("direction must be in or out")
    broker = _text(claims, "broker", 300)
    if broker and parse_broker(broker) is None:
        raise ValueError("broker is not host:port")
    device_id = claims.get("device_id")
    if device_id is not None and (not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id)):
        raise ValueError("device_id is not a device id slug")
    nonce = claims.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int or type(exp) is not int or not 0 <= iat < 2**40 or not 0 <= exp < 2**40:
        raise ValueError("iat and exp must be whole Unix seconds")
    issuers = claims.get("issuers", [])
    if not isinstance(issuers, (list, tuple)) or len(issuers) > MAX_ISSUER_KEYS:
        raise ValueError(f"issuers must be a list of at most {MAX_ISSUER_KEYS} keys")
    ders = []
    for der in issuers:
        if not isinstance(der, bytes) or len(der) > 512:
            raise ValueError("each issuer key must be DER bytes")
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, TypeError) as err:
            raise ValueError("an issuer key is not a DER public key") from err
        if check_public_key(key):
            raise ValueError("an issuer key is not Ed25519 or P-256")
        ders.append(der)
    return ProvisioningCode(venue_id, _text(claims, "venue_name", 200), direction, broker, tuple(ders),
                            device_id, nonce, iat, exp, kid_hex)


def check(payload: bytes | str, authority: TrustStore, now_s: float, wall_trusted: bool = True,
          clock_skew_s: float = 0.0) -> ProvisioningCode | ProvisioningRefusal:
    """Verify a provisioning code against the authority keys and the clock. Never raises.

    Does not check replay, device id or the gate's state: ``firmware.features.provisioning.GateProvisioning`` does.

    Returns:
        The code, or a refusal with reason ``malformed``, ``unknown_issuer``,
        ``bad_signature``, ``clock_unsynced``, ``not_yet_valid`` or ``expired``.
    """
    try:
        message = unwrap(PREFIX, payload)
    except EnvelopeError as err:
        return ProvisioningRefusal(Reason.MALFORMED.value, f"envelope {err.stage}: {err.detail}")
    try:
        verified = verify1(message, authority.keys_for)
        claims = loads_strict(verified.payload, "claims")
        code = _claims_to_code(claims, verified.kid.hex())
    except CoseError as err:
        return ProvisioningRefusal(err.reason.value, err.detail)
    except ValueError as err:
        return ProvisioningRefusal(Reason.MALFORMED.value, str(err))
    if code.expires_s - code.issued_at_s > MAX_VALIDITY_S or code.expires_s <= code.issued_at_s:
        return ProvisioningRefusal(Reason.MALFORMED.value, "validity longer than 24 h or negative")
    if not wall_trusted:
        return ProvisioningRefusal(Reason.CLOCK_UNSYNCED.value,
                                   "the wall clock is not trusted yet; wait for time sync and show the code again")
    if now_s < code.issued_at_s - max(clock_skew_s, 300.0):
        return ProvisioningRefusal(Reason.NOT_YET_VALID.value, "issued in the future; check the clocks")
    if now_s >= code.expires_s + clock_skew_s:
        return ProvisioningRefusal(Reason.EXPIRED.value, "expired; make a new code with `qrgate provision qr`")
    return code
