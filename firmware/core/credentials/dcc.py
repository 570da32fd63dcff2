"""EU Digital COVID Certificates, ``HC1:``: base45(zlib(COSE_Sign1(CWT))) with claim -260/1. Pure.

Also the format of Vietnam's 2022 vaccine passport. Stages, each reported by
``inspect``: ``prefix`` -> ``base45`` -> ``zlib`` (required: the specification says
the CWT SHALL be compressed) -> ``cose`` -> ``signature`` -> ``cwt`` (claims 1, 4, 6
and -260/1 decode) -> ``schema`` (``dcc_schema``) -> ``key_usage`` (the DSC's
extended key usage allows this kind). The stages after ``cose`` all run, so a
diagnostic tool can tell what else is wrong, but a Credential comes out only when
every one passed; the reason is the first failure in that order.

COSE profile (where the DCC specification and qrgate's own profile differ, the DCC
one wins for ``HC1:`` only):

- ``alg`` is read from the protected header, and only when it is absent there from the
  unprotected one (the EU test vectors require that; it is safe because each DSC key
  type verifies exactly one algorithm, so an unprotected alg cannot select a weaker
  one): -7 (ES256, P-256, raw ``r || s``),
  -37 (PS256: RSASSA-PSS, SHA-256, MGF1 SHA-256, salt of 32 bytes) or -8 (EdDSA,
  Ed25519). The specification names ES256 and PS256; EdDSA is accepted for issuers
  that sign with Ed25519 DSCs. The key type must match ``alg``.
- ``kid`` is read from the protected header; ONLY when it is absent there, from the
  unprotected header: the specification says the kid is not security-critical and
  that verifiers MUST accept both. A wrong unprotected kid beside a protected one is
  ignored. The kid only selects DSCs; the signature must still verify with one.
- ``crit`` is refused; any other label in both headers is refused.
- Tag 18, or untagged, optionally inside a CWT tag 61.

Times (``iat``, ``exp``, the DSC validity) are copied out, not checked here:
``check_times`` compares them with a trusted clock (the gate's policy does that).
"""

from __future__ import annotations

import math
import unicodedata
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from firmware.core.cose import CoseError, loads_strict, sig_structure
from firmware.core.credentials.dcc_schema import SchemaError, check_date_time, validate
from firmware.core.credentials.dcc_trust import Dsc, DscStore
from firmware.core.credentials.envelope import EnvelopeError, b45encode, open_envelope
from firmware.core.dcc_status import KIND_NAMES, KIND_TEST, KIND_VACCINATION, DccStatus
from firmware.core.model import Credential, CredentialType, Reason, Rejection

PREFIX = "HC1:"
STAGES = ("prefix", "base45", "zlib", "cose", "signature", "cwt", "schema", "key_usage")

ALG_ES256, ALG_EDDSA, ALG_PS256 = -7, -8, -37
ALG_NAMES = {ALG_ES256: "ES256", ALG_EDDSA: "EdDSA", ALG_PS256: "PS256"}
HEADER_ALG, HEADER_CRIT, HEADER_KID = 1, 2, 4
TAG_COSE_SIGN1, TAG_CWT = 18, 61
CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_HCERT = 1, 4, 6, -260
HCERT_EU_DCC_V1 = 1

MAX_MESSAGE_BYTES = 16 * 1024
MAX_KID_BYTES = 64
MAX_SIGNATURE_BYTES = 1024  # RSA 8192
MAX_NUMERIC_DATE = 2**40
MAX_COUNTRY_CHARS = 16


class DccError(ValueError):
    """A stage refused the payload.

    Attributes:
        stage: one of ``STAGES``.
        reason: the Reason the gate reports.
        detail: a short explanation with no personal data.
    """

    def __init__(self, stage: str, reason: Reason, detail: str) -> None:
        self.stage, self.reason, self.detail = stage, reason, detail
        super().__init__(f"{stage}: {detail}")


@dataclass(frozen=True)
class Sign1:
    """A structurally valid COSE_Sign1 in the DCC profile, not yet verified."""

    protected: bytes
    alg: int
    kid: bytes
    kid_protected: bool
    payload: bytes
    signature: bytes


@dataclass(frozen=True)
class Inspection:
    """The stage-by-stage outcome for one payload.

    Attributes:
        stages: stage -> ``"ok"``, ``"failed"`` or ``"not_reached"``.
        result: the Credential (every stage passed) or the Rejection of the first failure.
        kid_hex: the kid once the cose stage passed.
        kind: ``v``, ``t`` or ``r`` once the schema stage passed.
        country: claim 1 once the cwt stage passed.
        issued_at_s, expires_s: claims 6 and 4 once the cwt stage passed.
        hcert: the decoded certificate (claim -260/1) once the cwt stage passed.
        dsc: the DSC whose key verified the signature.
        status: the DccStatus (only with a Credential).
    """

    stages: dict[str, str]
    result: Credential | Rejection
    kid_hex: str | None = None
    kind: str | None = None
    country: str | None = None
    issued_at_s: float | None = None
    expires_s: float | None = None
    hcert: Mapping[Any, Any] | None = field(default=None, repr=False)
    dsc: Dsc | None = field(default=None, repr=False)
    status: DccStatus | None = field(default=None, repr=False)


def detect(payload: bytes) -> bool:
    """True if the payload claims to be a DCC (starts with ``HC1:``)."""
    return payload.startswith(PREFIX.encode("ascii"))


def check(payload: bytes, store: DscStore) -> Credential | Rejection:
    """Parse and verify an ``HC1:`` code. Never raises for any bytes."""
    return inspect(payload, store).result


def parse_sign1(data: bytes) -> Sign1:
    """Parse a COSE_Sign1 in the DCC profile, without verifying it.

    Raises:
        DccError: (stage ``cose``) MALFORMED for a broken structure, BAD_SIGNATURE for
            a header that breaks the signing profile, UNKNOWN_ISSUER when no kid is given.
    """
    def fail(reason: Reason, detail: str) -> DccError:
        return DccError("cose", reason, detail)

    if len(data) > MAX_MESSAGE_BYTES:
        raise fail(Reason.MALFORMED, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        item = loads_strict(data, "message")
    except CoseError as err:
        raise fail(Reason.MALFORMED, err.detail) from err
    if isinstance(item, cbor2.CBORTag) and item.tag == TAG_CWT:
        item = item.value
    if isinstance(item, cbor2.CBORTag):
        if item.tag != TAG_COSE_SIGN1:
            raise fail(Reason.MALFORMED, f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
        item = item.value
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise fail(Reason.MALFORMED, "COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes) or not isinstance(unprotected, Mapping):
        raise fail(Reason.MALFORMED, "headers must be a byte string and a map")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise fail(Reason.MALFORMED, "payload and signature must be byte strings")
    try:
        header = loads_strict(protected, "protected header") if protected else {}
    except CoseError as err:
        raise fail(Reason.MALFORMED, err.detail) from err
    if not isinstance(header, Mapping):
        raise fail(Reason.MALFORMED, "protected header must encode a map")
    for label in header:
        if label != HEADER_KID and _hashable(label) and label in unprotected:
            raise fail(Reason.MALFORMED, f"header label {label!r} is both protected and unprotected")
    if HEADER_CRIT in header or HEADER_CRIT in unprotected:
        raise fail(Reason.BAD_SIGNATURE, "crit header present; no critical extension is supported")
    # The EU test vectors (CO20) require an alg found only in the unprotected header to be
    # read. It cannot swap algorithms: each DSC key type verifies exactly one alg.
    alg = header.get(HEADER_ALG, unprotected.get(HEADER_ALG))
    if alg is None:
        raise fail(Reason.BAD_SIGNATURE, "no alg in either header")
    if type(alg) is not int or alg not in ALG_NAMES:
        raise fail(Reason.BAD_SIGNATURE, f"alg {alg!r} not supported; only ES256 (-7), PS256 (-37), EdDSA (-8)")
    kid_protected = HEADER_KID in header
    kid = header.get(HEADER_KID) if kid_protected else unprotected.get(HEADER_KID)
    if kid is None:
        raise fail(Reason.UNKNOWN_ISSUER, "no kid in either header")
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID_BYTES:
        raise fail(Reason.MALFORMED, f"kid must be a byte string of 1 to {MAX_KID_BYTES} bytes")
    if alg in (ALG_ES256, ALG_EDDSA) and len(signature) != 64:
        raise fail(Reason.BAD_SIGNATURE, f"signature is {len(signature)} bytes, 64 expected for {ALG_NAMES[alg]}")
    if not 1 <= len(signature) <= MAX_SIGNATURE_BYTES:
        raise fail(Reason.BAD_SIGNATURE, f"signature of {len(signature)} bytes is out of range")
    return Sign1(protected=protected, alg=alg, kid=kid, kid_protected=kid_protected, payload=payload,
                 signature=signature)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def verify_with(parts: Sign1, key: Any) -> bool:
    """True if key, of the type the message's alg requires, verifies its signature."""
    to_sign = sig_structure(parts.protected, parts.payload)
    try:
        if parts.alg == ALG_ES256:
            if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
                return False
            r = int.from_bytes(parts.signature[:32], "big")
            s = int.from_bytes(parts.signature[32:], "big")
            key.verify(encode_dss_signature(r, s), to_sign, ec.ECDSA(hashes.SHA256()))
            return True
        if parts.alg == ALG_PS256:
            if not isinstance(key, rsa.RSAPublicKey) or len(parts.signature) != (key.key_size + 7) // 8:
                return False
            key.verify(parts.signature, to_sign,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
            return True
        if not isinstance(key, ed25519.Ed25519PublicKey):
            return False
        key.verify(parts.signature, to_sign)
        return True
    except (InvalidSignature, ValueError):
        return False


def _numeric_date(claims: Mapping[Any, Any], key: int, name: str) -> float:
    value = claims.get(key)
    if value is None:
        raise DccError("cwt", Reason.MALFORMED, f"claim {key} ({name}) is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DccError("cwt", Reason.MALFORMED, f"claim {key} ({name}) must be a NumericDate")
    if isinstance(value, float) and not math.isfinite(value):
        raise DccError("cwt", Reason.MALFORMED, f"claim {key} ({name}) is not finite")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise DccError("cwt", Reason.MALFORMED, f"claim {key} ({name}) is out of range")
    return float(value)


@dataclass(frozen=True)
class Claims:
    """The CWT claims the gate reads."""

    country: str | None
    issued_at_s: float
    expires_s: float
    hcert: Mapping[Any, Any]


def decode_claims(payload: bytes) -> Claims:
    """Decode claims 1, 4, 6 and -260/1 from the signed payload.

    Raises:
        DccError: (stage ``cwt``, MALFORMED) not CBOR, not a map, a claim missing or of the wrong type.
    """
    try:
        claims = loads_strict(payload, "claims")
    except CoseError as err:
        raise DccError("cwt", Reason.MALFORMED, err.detail) from err
    if not isinstance(claims, Mapping):
        raise DccError("cwt", Reason.MALFORMED, "claims must be a CBOR map")
    iss = claims.get(CLAIM_ISS)
    if iss is not None and (not isinstance(iss, str) or len(iss) > MAX_COUNTRY_CHARS):
        raise DccError("cwt", Reason.MALFORMED, f"claim 1 (iss) must be text of at most {MAX_COUNTRY_CHARS}")
    iat = _numeric_date(claims, CLAIM_IAT, "iat")
    exp = _numeric_date(claims, CLAIM_EXP, "exp")
    hcert = claims.get(CLAIM_HCERT)
    if not isinstance(hcert, Mapping) or not isinstance(hcert.get(HCERT_EU_DCC_V1), Mapping):
        raise DccError("cwt", Reason.MALFORMED, "claim -260 must be a map holding the certificate under key 1")
    return Claims(country=iss or None, issued_at_s=iat, expires_s=exp, hcert=hcert[HCERT_EU_DCC_V1])


def _nfc(value: Any) -> str:
    return unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else ""


def status_from(kind: str, claims: Claims, dsc: Dsc, installed_at_s: float | None = None) -> DccStatus:
    """Build the DccStatus of a schema-valid certificate."""
    cert = claims.hcert
    nam = cert["nam"]
    entry = cert[kind][0]
    family = _nfc(nam.get("fn")) or _nfc(nam.get("fnt")).replace("<", " ").strip()
    given = _nfc(nam.get("gn")) or _nfc(nam.get("gnt", "")).replace("<", " ").strip()
    common: dict[str, Any] = dict(
        kind=kind, country=claims.country, issued_at_s=claims.issued_at_s, expires_s=claims.expires_s,
        dsc_not_before_s=dsc.not_before_s, dsc_not_after_s=dsc.not_after_s, family_name=family,
        given_name=given, birth_date=cert["dob"], certificate_id=entry["ci"], target=entry["tg"],
        trust_list_installed_s=installed_at_s)
    if kind == KIND_VACCINATION:
        return DccStatus(**common, product=entry["mp"], dose_number=entry["dn"], total_doses=entry["sd"],
                         vaccination_date=entry["dt"])
    if kind == KIND_TEST:
        return DccStatus(**common, test_type=entry["tt"], sample_time_s=check_date_time(entry["sc"], "sc"),
                         test_result=entry["tr"])
    return DccStatus(**common, first_positive_date=entry["fr"], valid_from=entry["df"], valid_until=entry["du"])


def credential_from(status: DccStatus, kid_hex: str) -> Credential:
    """The gate's Credential for a verified DCC: subject ``ci``, name family then given."""
    name = " ".join(part for part in (status.family_name, status.given_name) if part) or None
    return Credential(type=CredentialType.DCC, subject=status.certificate_id, name=name, issuer=status.country,
                      kid_hex=kid_hex, issued_at_s=status.issued_at_s, expires_s=status.expires_s, signed=True,
                      dcc=status)


def inspect(payload: bytes, store: DscStore) -> Inspection:
    """Run every stage on payload and say how far it got. Never raises for any bytes."""
    stages = {name: "not_reached" for name in STAGES}
    if not detect(payload):
        stages["prefix"] = "failed"
        return Inspection(stages, Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT, f"no {PREFIX} prefix"))
    stages["prefix"] = "ok"
    try:
        opened = open_envelope(PREFIX, payload)
    except EnvelopeError as err:
        if err.stage == "zlib":
            stages["base45"] = "ok"
        stages[err.stage] = "failed"
        return Inspection(stages, Rejection(CredentialType.DCC, Reason.MALFORMED, err.detail))
    stages["base45"] = "ok"
    if not opened.compressed:
        stages["zlib"] = "failed"
        return Inspection(stages, Rejection(CredentialType.DCC, Reason.MALFORMED,
                                            "not zlib-compressed (HC1 requires it)"))
    stages["zlib"] = "ok"
    try:
        parts = parse_sign1(opened.message)
    except DccError as err:
        stages["cose"] = "failed"
        return Inspection(stages, Rejection(CredentialType.DCC, err.reason, err.detail))
    stages["cose"] = "ok"
    kid_hex = parts.kid.hex()
    failures: list[DccError] = []

    candidates = store.for_kid(parts.kid)
    verified = [dsc for dsc in candidates if verify_with(parts, dsc.key)]
    if not candidates:
        failures.append(DccError("signature", Reason.UNKNOWN_ISSUER, f"no trusted DSC has kid {kid_hex}"))
    elif not verified:
        failures.append(DccError("signature", Reason.BAD_SIGNATURE,
                                 f"signature does not verify with the {len(candidates)} DSC(s) of kid {kid_hex}"))
    stages["signature"] = "failed" if failures else "ok"

    claims: Claims | None = None
    kind: str | None = None
    try:
        claims = decode_claims(parts.payload)
        stages["cwt"] = "ok"
        kind = validate(claims.hcert)
        stages["schema"] = "ok"
    except DccError as err:
        stages["cwt"] = "failed"
        failures.append(err)
    except SchemaError as err:
        stages["schema"] = "failed"
        failures.append(DccError("schema", Reason.MALFORMED, f"schema: {err}"))

    dsc: Dsc | None = None
    if verified and kind is not None:
        allowed = [d for d in verified if kind in d.kinds]
        if allowed:
            dsc = allowed[0]
            stages["key_usage"] = "ok"
        else:
            stages["key_usage"] = "failed"
            failures.append(DccError("key_usage", Reason.DCC_KEY_USAGE,
                                     f"the DSC of kid {kid_hex} may not sign {KIND_NAMES[kind]} certificates"))
    extra: dict[str, Any] = dict(kid_hex=kid_hex, kind=kind)
    if claims is not None:
        extra.update(country=claims.country, issued_at_s=claims.issued_at_s, expires_s=claims.expires_s,
                     hcert=claims.hcert)
    if failures or claims is None or kind is None or dsc is None:
        first = min(failures, key=lambda e: STAGES.index(e.stage))
        return Inspection(stages, Rejection(CredentialType.DCC, first.reason, first.detail), dsc=dsc, **extra)
    status = status_from(kind, claims, dsc, store.installed_at_s)
    return Inspection(stages, credential_from(status, kid_hex), dsc=dsc, status=status, **extra)


def check_times(status: DccStatus, now_s: float, skew_s: float = 0.0) -> Reason | None:
    """Check a verified DCC's times against a trusted clock.

    Refused: ``iat`` in the future (``not_yet_valid``); on or after ``exp`` (``expired``);
    the DSC not valid now, or ``iat`` outside the DSC's validity, which the
    specification forbids (``dcc_signer_not_valid``).

    Returns:
        None when the times are fine, else the Reason.
    """
    if status.issued_at_s is not None and status.issued_at_s > now_s + skew_s:
        return Reason.NOT_YET_VALID
    if status.expires_s is not None and now_s >= status.expires_s + skew_s:
        return Reason.EXPIRED
    if not status.dsc_not_before_s - skew_s <= now_s <= status.dsc_not_after_s + skew_s:
        return Reason.DCC_SIGNER_NOT_VALID
    if status.issued_at_s is not None and not (
            status.dsc_not_before_s - skew_s <= status.issued_at_s <= status.dsc_not_after_s + skew_s):
        return Reason.DCC_SIGNER_NOT_VALID
    return None


def encode(hcert: Mapping[str, Any], private_key: Any, kid: bytes, *, iat_s: int, exp_s: int,
           country: str | None = "VN", alg: int | None = None, kid_in: str = "protected") -> str:
    """Sign a certificate and return its ``HC1:`` text (tests, the demo and the issuing tools).

    Args:
        hcert: the DCC payload (``ver``, ``nam``, ``dob`` and one of ``v``/``t``/``r``).
        private_key: an EC P-256, RSA or Ed25519 private key.
        kid: the signer's kid (``dsc_kid`` of its certificate DER).
        iat_s, exp_s: claims 6 and 4.
        country: claim 1, or None to leave it out.
        alg: default from the key type.
        kid_in: ``"protected"``, ``"unprotected"`` or ``"both"``.
    """
    if alg is None:
        alg = ALG_ES256 if isinstance(private_key, ec.EllipticCurvePrivateKey) else (
            ALG_PS256 if isinstance(private_key, rsa.RSAPrivateKey) else ALG_EDDSA)
    claims: dict[int, Any] = {CLAIM_EXP: exp_s, CLAIM_IAT: iat_s, CLAIM_HCERT: {HCERT_EU_DCC_V1: dict(hcert)}}
    if country is not None:
        claims[CLAIM_ISS] = country
    header: dict[int, Any] = {HEADER_ALG: alg}
    unprotected: dict[int, Any] = {}
    if kid_in in ("protected", "both"):
        header[HEADER_KID] = kid
    if kid_in in ("unprotected", "both"):
        unprotected[HEADER_KID] = kid
    protected = cbor2.dumps(header, canonical=True)
    payload = cbor2.dumps(claims)
    to_sign = sig_structure(protected, payload)
    if alg == ALG_ES256:
        r, s = decode_dss_signature(private_key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == ALG_PS256:
        signature = private_key.sign(to_sign, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                                     hashes.SHA256())
    else:
        signature = private_key.sign(to_sign)
    message = cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, [protected, unprotected, payload, signature]))
    return PREFIX + b45encode(zlib.compress(message, 9))
