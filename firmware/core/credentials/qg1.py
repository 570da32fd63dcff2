"""The qrgate pass, ``QG1:``: a CWT (RFC 8392) signed as COSE_Sign1, in base45, maybe zlib'd.

Pure. Stages, in order, each reported by ``inspect``: ``prefix`` -> ``base45`` ->
``zlib`` (only when the bytes start with a zlib header) -> ``cose`` (structure and
header profile) -> ``signature`` (a trusted key verifies it) -> ``claims``.
Claims are read only after the signature verified. Time claims are copied into the
Credential; checking them against the clock is the policy's job.

Claims: 1 iss (text), 2 sub (text, required), 4 exp, 5 nbf, 6 iat (NumericDate),
7 cti (bytes), "name" and "phone" (text), "hd" (NumericDate of the latest health
declaration). Other claims are ignored.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from firmware.core.cose import CoseError, loads_strict, parse1, sign1, verify_signature
from firmware.core.credentials.envelope import EnvelopeError, open_envelope, wrap
from firmware.core.credentials.trust import TrustStore
from firmware.core.model import Credential, CredentialType, Reason, Rejection
from firmware.core.text import count_invisible

PREFIX = "QG1:"
STAGES = ("prefix", "base45", "zlib", "cose", "signature", "claims")

CLAIM_ISS, CLAIM_SUB, CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_CTI = 1, 2, 4, 5, 6, 7
CLAIM_NAME, CLAIM_PHONE, CLAIM_HD = "name", "phone", "hd"

MAX_SUB_CHARS = 128
MAX_ISS_CHARS = 128
MAX_NAME_CHARS = 200
MAX_PHONE_CHARS = 32
MAX_CTI_BYTES = 64
# NumericDates beyond year ~36812 are nonsense; keeping them small keeps float() exact.
MAX_NUMERIC_DATE = 2**40


class ClaimsError(ValueError):
    """The verified payload is not a valid set of pass claims."""


@dataclass(frozen=True)
class Inspection:
    """The stage-by-stage outcome for one payload.

    Attributes:
        stages: stage name -> ``"ok"``, ``"failed"``, ``"not_reached"``, or ``"absent"``
            (zlib only: the bytes were not compressed).
        result: the Credential, or the Rejection with its reason.
        kid_hex: the kid from the protected header, once the cose stage passed.
        claims: the decoded claims map, once the signature verified.
    """

    stages: dict[str, str]
    result: Credential | Rejection
    kid_hex: str | None = None
    claims: Mapping[Any, Any] | None = field(default=None, repr=False)


def detect(payload: bytes) -> bool:
    """True if the payload claims to be a qrgate pass (starts with ``QG1:``)."""
    return payload.startswith(PREFIX.encode("ascii"))


def check(payload: bytes, trust: TrustStore) -> Credential | Rejection:
    """Parse and verify a ``QG1:`` pass. Never raises for any bytes."""
    return inspect(payload, trust).result


def inspect(payload: bytes, trust: TrustStore) -> Inspection:
    """Run every stage on payload and say how far it got. Never raises for any bytes."""
    stages = {name: "not_reached" for name in STAGES}

    def reject(stage: str, reason: Reason, detail: str, **extra: Any) -> Inspection:
        stages[stage] = "failed"
        return Inspection(stages, Rejection(CredentialType.QG1, reason, detail), **extra)

    if not detect(payload):
        stages["prefix"] = "failed"
        return Inspection(stages, Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT,
                                            f"no {PREFIX} prefix"))
    stages["prefix"] = "ok"
    try:
        opened = open_envelope(PREFIX, payload)
    except EnvelopeError as err:
        if err.stage == "zlib":
            stages["base45"] = "ok"
        return reject(err.stage, Reason.MALFORMED, err.detail)
    stages["base45"] = "ok"
    stages["zlib"] = "ok" if opened.compressed else "absent"
    try:
        parts = parse1(opened.message)
    except CoseError as err:
        return reject("cose", err.reason, err.detail)
    stages["cose"] = "ok"
    kid_hex = parts.kid.hex()
    keys = trust.keys_for(parts.kid)
    if not keys:
        return reject("signature", Reason.UNKNOWN_ISSUER, f"no trusted issuer key has kid {kid_hex}",
                      kid_hex=kid_hex)
    if not any(verify_signature(parts, key) for key in keys):
        return reject("signature", Reason.BAD_SIGNATURE,
                      f"signature does not verify with the trusted key(s) of kid {kid_hex}", kid_hex=kid_hex)
    stages["signature"] = "ok"
    try:
        claims = decode_claims(parts.payload)
        credential = credential_from_claims(claims, kid_hex)
    except (ClaimsError, CoseError) as err:
        detail = err.detail if isinstance(err, CoseError) else str(err)
        return reject("claims", Reason.MALFORMED, detail, kid_hex=kid_hex)
    stages["claims"] = "ok"
    return Inspection(stages, credential, kid_hex=kid_hex, claims=claims)


def decode_claims(payload: bytes) -> Mapping[Any, Any]:
    """Decode the CWT claims map from the signed payload.

    Raises:
        CoseError: (MALFORMED) not a single valid CBOR item.
        ClaimsError: not a map.
    """
    claims = loads_strict(payload, "claims")
    if not isinstance(claims, Mapping):
        raise ClaimsError("claims must be a CBOR map")
    return claims


def _text(claims: Mapping[Any, Any], key: Any, limit: int, required: bool = False,
          identifier: bool = False) -> str | None:
    """A text claim, NFC and trimmed; an identifier (``sub``, ``iss``) in NFKC, refused if it holds
    any invisible, bidi or control character (two ids that look the same must be the same id)."""
    value = claims.get(key)
    if value is None:
        if required:
            raise ClaimsError(f"claim {key!r} is required")
        return None
    if not isinstance(value, str):
        raise ClaimsError(f"claim {key!r} must be text")
    if identifier and count_invisible(value):
        raise ClaimsError(f"claim {key!r} contains invisible, bidi or control characters")
    value = unicodedata.normalize("NFKC" if identifier else "NFC", value).strip()
    if not value and required:
        raise ClaimsError(f"claim {key!r} is empty")
    if len(value) > limit:
        raise ClaimsError(f"claim {key!r} is longer than {limit} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ClaimsError(f"claim {key!r} contains control characters")
    return value or None


def _date(claims: Mapping[Any, Any], key: Any) -> float | None:
    value = claims.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClaimsError(f"claim {key!r} must be a NumericDate (seconds)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ClaimsError(f"claim {key!r} is not finite")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise ClaimsError(f"claim {key!r} is out of range")
    return float(value)


def credential_from_claims(claims: Mapping[Any, Any], kid_hex: str) -> Credential:
    """Build the Credential from verified claims.

    Raises:
        ClaimsError: a required claim is missing or a claim has the wrong type or size.
    """
    cti = claims.get(CLAIM_CTI)
    if cti is not None and (not isinstance(cti, bytes) or len(cti) > MAX_CTI_BYTES):
        raise ClaimsError(f"claim 7 (cti) must be a byte string of at most {MAX_CTI_BYTES} bytes")
    return Credential(
        type=CredentialType.QG1,
        subject=_text(claims, CLAIM_SUB, MAX_SUB_CHARS, required=True, identifier=True) or "",
        name=_text(claims, CLAIM_NAME, MAX_NAME_CHARS),
        phone=_text(claims, CLAIM_PHONE, MAX_PHONE_CHARS),
        issuer=_text(claims, CLAIM_ISS, MAX_ISS_CHARS, identifier=True),
        kid_hex=kid_hex,
        issued_at_s=_date(claims, CLAIM_IAT),
        not_before_s=_date(claims, CLAIM_NBF),
        expires_s=_date(claims, CLAIM_EXP),
        health_declared_s=_date(claims, CLAIM_HD),
        token_id=cti.hex() if cti is not None else None,
        signed=True,
    )


def build_claims(*, sub: str, name: str | None = None, phone: str | None = None, iss: str | None = None,
                 iat_s: int | None = None, nbf_s: int | None = None, exp_s: int | None = None,
                 cti: bytes | None = None, hd_s: int | None = None) -> dict[Any, Any]:
    """Return a CWT claims map for a pass (the inverse of ``credential_from_claims``).

    Text is NFC-normalised; None values are left out.
    """
    claims: dict[Any, Any] = {}

    def put(key: Any, value: Any) -> None:
        if value is not None:
            claims[key] = unicodedata.normalize("NFC", value) if isinstance(value, str) else value

    put(CLAIM_ISS, iss)
    put(CLAIM_SUB, sub)
    put(CLAIM_EXP, exp_s)
    put(CLAIM_NBF, nbf_s)
    put(CLAIM_IAT, iat_s)
    put(CLAIM_CTI, cti)
    put(CLAIM_NAME, name)
    put(CLAIM_PHONE, phone)
    put(CLAIM_HD, hd_s)
    return claims


def encode(claims: dict[Any, Any], private_key: Any, *, kid: bytes | None = None, alg: int | None = None,
           compress: bool | str = "auto") -> str:
    """Sign claims and return the pass text ``QG1:...`` (the inverse of ``check``).

    Args:
        claims: the CWT claims map (see ``build_claims``).
        private_key: the issuer's Ed25519 or P-256 private key.
        kid: default ``kid_for`` of its public key.
        alg: default from the key type.
        compress: True to zlib the message, False not to, ``"auto"`` when that makes it shorter.
    """
    message = sign1(cbor2.dumps(claims), private_key, kid, alg)
    return wrap(PREFIX, message, compress=compress)


def issue_text(private_key: Any, *, sub: str, name: str, phone: str | None, iat_s: int, exp_s: int,
               cti: bytes, nbf_s: int | None = None, iss: str | None = None, hd_s: int | None = None) -> str:
    """Build the claims of a pass and sign them: the pure core of issuing (no clock, no randomness).

    The operator tool (``qrgate pass issue``) adds times from the clock and a random ``cti``;
    the demo and the benches call this directly so the gate never imports the tools.
    """
    claims = build_claims(sub=sub, name=name, phone=phone, iss=iss, iat_s=iat_s,
                          nbf_s=iat_s if nbf_s is None else nbf_s, exp_s=exp_s, cti=cti, hd_s=hd_s)
    return encode(claims, private_key)
