"""COSE_Sign1 (RFC 9052) signing and verification, for passes and provisioning codes.

Pure: no I/O, no clock. The profile is deliberately narrow so that any tool that
follows it interoperates and nothing else gets through:

- ``alg`` (label 1) and ``kid`` (label 4) MUST be in the protected header; ``alg`` is
  -8 (EdDSA with Ed25519) or -7 (ES256: ECDSA P-256 with SHA-256, signature as the
  64-byte raw ``r || s``). ``alg`` only in the unprotected header is refused, and so
  is a label present in both headers or any ``crit`` header.
- The message is tag 18 or untagged; a CWT tag 61 around it is tolerated.
- The signed bytes are ``["Signature1", protected, b"", payload]`` (no external AAD).
- ``kid`` of a key is the first 8 bytes of the SHA-256 of its DER SubjectPublicKeyInfo.

Every input is hostile: the encoded size and the CBOR nesting depth are capped, and
trailing bytes after the message are refused.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from firmware.core.errors import QrGateError
from firmware.core.model import Reason

ALG_EDDSA = -8
ALG_ES256 = -7
SUPPORTED_ALGS = (ALG_EDDSA, ALG_ES256)
ALG_NAMES = {ALG_EDDSA: "EdDSA", ALG_ES256: "ES256"}

HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_KID = 4

TAG_COSE_SIGN1 = 18
TAG_CWT = 61

# A pass is a few hundred bytes; a QR holds at most ~3 KB. 16 KiB leaves room for
# other uses while keeping hostile maps (colliding integer keys) well under 100 ms.
MAX_MESSAGE_BYTES = 16 * 1024
MAX_CBOR_DEPTH = 16
MAX_KID_BYTES = 64
KID_BYTES = 8
ES256_SIGNATURE_BYTES = 64
# The order of P-256. An ECDSA signature (r, s) also verifies as (r, n - s); only the low form
# (s <= n / 2) is accepted, so one signed message has one encoding (one code_sha256, one replay key).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ED25519_SIGNATURE_BYTES = 64

PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey]
PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey]


class CoseError(QrGateError, ValueError):
    """A COSE message was refused.

    Attributes:
        reason: ``Reason.MALFORMED`` (not a well-formed COSE_Sign1 in this profile),
            ``Reason.UNKNOWN_ISSUER`` (no trusted key has this kid) or
            ``Reason.BAD_SIGNATURE`` (no trusted key verifies it, or the header breaks
            the signing profile, e.g. alg not protected or not supported).
        detail: a short explanation without personal data.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


@dataclass(frozen=True)
class Verified:
    """A COSE_Sign1 whose signature a trusted key verified.

    Attributes:
        payload: the signed payload bytes.
        kid: the key id from the protected header.
        alg: the COSE algorithm number (-8 or -7).
        key: the public key that verified it.
    """

    payload: bytes
    kid: bytes
    alg: int
    key: Any


def kid_for(public_key: PublicKey) -> bytes:
    """Return the key id of a public key: SHA-256 of its DER SubjectPublicKeyInfo, first 8 bytes."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:KID_BYTES]


def alg_for(key: PrivateKey | PublicKey) -> int:
    """Return the COSE algorithm for a key (Ed25519 -> -8, P-256 -> -7).

    Raises:
        CoseError: (MALFORMED) the key type is not supported.
    """
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return ALG_EDDSA
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) \
            and isinstance(key.curve, ec.SECP256R1):
        return ALG_ES256
    raise CoseError(Reason.MALFORMED, f"unsupported key type {type(key).__name__}; "
                    "use Ed25519 or ECDSA P-256")


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """Return the bytes that are signed: ``["Signature1", protected, h'', payload]``."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign1(payload: bytes, private_key: PrivateKey, kid: bytes | None = None,
          alg: int | None = None, *, tagged: bool = True) -> bytes:
    """Sign payload as a COSE_Sign1 message.

    Args:
        payload: the bytes to sign (for a pass, the CBOR-encoded CWT claims).
        private_key: an Ed25519 or P-256 private key.
        kid: key id for the protected header; default ``kid_for`` of the public key.
        alg: -8 or -7; default chosen from the key type. Must match the key.
        tagged: wrap in CBOR tag 18 (default) or emit the bare array.

    Returns:
        The encoded message.

    Raises:
        CoseError: (MALFORMED) the key type or alg is unsupported or they do not match.
    """
    key_alg = alg_for(private_key)
    alg = key_alg if alg is None else alg
    if alg != key_alg:
        raise CoseError(Reason.MALFORMED, f"alg {alg} does not match a {ALG_NAMES[key_alg]} key")
    if kid is None:
        kid = kid_for(private_key.public_key())
    protected = cbor2.dumps({HEADER_ALG: alg, HEADER_KID: bytes(kid)}, canonical=True)
    to_sign = sig_structure(protected, payload)
    if alg == ALG_EDDSA:
        signature = private_key.sign(to_sign)  # type: ignore[call-arg]
    else:
        der = private_key.sign(to_sign, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        r, s = decode_dss_signature(der)
        s = min(s, P256_ORDER - s)  # the low-s form: the only one verifiers accept
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    message = [protected, {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(TAG_COSE_SIGN1, message) if tagged else message)


def loads_strict(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item with the depth cap and no duplicate map keys.

    Raises:
        CoseError: (MALFORMED) not valid CBOR, too deep, duplicate keys, or trailing bytes.
    """
    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(stream, max_depth=MAX_CBOR_DEPTH, allow_duplicate_keys=False)
        item = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as err:
        raise CoseError(Reason.MALFORMED, f"{what} is not valid CBOR ({type(err).__name__})") from err
    if stream.tell() != len(data):
        raise CoseError(Reason.MALFORMED, f"{what} has {len(data) - stream.tell()} trailing bytes")
    return item


@dataclass(frozen=True)
class Sign1Parts:
    """A structurally valid COSE_Sign1 in this profile, not yet verified."""

    protected: bytes
    alg: int
    kid: bytes
    payload: bytes
    signature: bytes


def parse1(data: bytes) -> Sign1Parts:
    """Parse a COSE_Sign1 message and check its headers against the profile, without verifying.

    Raises:
        CoseError: MALFORMED for a broken structure, BAD_SIGNATURE for a header that
            breaks the signing profile (alg missing from the protected header, alg not
            supported, crit present, wrong signature length).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise CoseError(Reason.MALFORMED, "message is not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise CoseError(Reason.MALFORMED, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    item = loads_strict(bytes(data), "message")
    if isinstance(item, cbor2.CBORTag) and item.tag == TAG_CWT:
        item = item.value
    if isinstance(item, cbor2.CBORTag):
        if item.tag != TAG_COSE_SIGN1:
            raise CoseError(Reason.MALFORMED, f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
        item = item.value
    # cbor2 returns a tuple and frozendicts for the contents of a tag.
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise CoseError(Reason.MALFORMED, "COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes):
        raise CoseError(Reason.MALFORMED, "protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise CoseError(Reason.MALFORMED, "unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise CoseError(Reason.MALFORMED, "payload must be a byte string (detached payloads are refused)")
    if not isinstance(signature, bytes):
        raise CoseError(Reason.MALFORMED, "signature must be a byte string")
    header = loads_strict(protected, "protected header") if protected else {}
    if not isinstance(header, Mapping):
        raise CoseError(Reason.MALFORMED, "protected header must encode a map")
    both = [label for label in header if _hashable(label) and label in unprotected]
    if both:
        raise CoseError(Reason.MALFORMED, f"header label {both[0]!r} is both protected and unprotected")
    if HEADER_CRIT in header or HEADER_CRIT in unprotected:
        raise CoseError(Reason.BAD_SIGNATURE, "crit header present; no critical extension is supported")
    alg = header.get(HEADER_ALG)
    if alg is None:
        where = " (it is only in the unprotected header)" if HEADER_ALG in unprotected else ""
        raise CoseError(Reason.BAD_SIGNATURE, f"alg missing from the protected header{where}")
    if type(alg) is not int or alg not in SUPPORTED_ALGS:
        raise CoseError(Reason.BAD_SIGNATURE, f"alg {alg!r} not supported; only -8 (EdDSA) and -7 (ES256)")
    kid = header.get(HEADER_KID)
    if kid is None:
        where = " (it is only in the unprotected header)" if HEADER_KID in unprotected else ""
        raise CoseError(Reason.BAD_SIGNATURE, f"kid missing from the protected header{where}")
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID_BYTES:
        raise CoseError(Reason.MALFORMED, f"kid must be a byte string of 1 to {MAX_KID_BYTES} bytes")
    expected = ED25519_SIGNATURE_BYTES if alg == ALG_EDDSA else ES256_SIGNATURE_BYTES
    if len(signature) != expected:
        raise CoseError(Reason.BAD_SIGNATURE, f"signature is {len(signature)} bytes, {expected} expected")
    return Sign1Parts(protected=protected, alg=alg, kid=kid, payload=payload, signature=signature)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def verify_signature(parts: Sign1Parts, key: Any) -> bool:
    """Return True if key (of the type alg requires) verifies the parts' signature."""
    to_sign = sig_structure(parts.protected, parts.payload)
    try:
        if parts.alg == ALG_EDDSA:
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(parts.signature, to_sign)
            return True
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
            return False
        r = int.from_bytes(parts.signature[:32], "big")
        s = int.from_bytes(parts.signature[32:], "big")
        if s > P256_ORDER // 2:
            return False  # the high-s twin of a valid signature: refused (malleability)
        key.verify(encode_dss_signature(r, s), to_sign, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def verify1(data: bytes, keys_for_kid: Callable[[bytes], Sequence[Any]]) -> Verified:
    """Parse and verify a COSE_Sign1 message against trusted keys.

    Args:
        data: the encoded message (tag 18 or untagged).
        keys_for_kid: returns the trusted public keys for a kid (empty if none). Every
            returned key is tried, so issuers whose kids collide still verify.

    Returns:
        The verified payload, kid, alg and key.

    Raises:
        CoseError: with reason MALFORMED, UNKNOWN_ISSUER or BAD_SIGNATURE (see ``parse1``).
    """
    parts = parse1(data)
    keys = keys_for_kid(parts.kid)
    if not keys:
        raise CoseError(Reason.UNKNOWN_ISSUER, f"no trusted key has kid {parts.kid.hex()}")
    for key in keys:
        if verify_signature(parts, key):
            return Verified(payload=parts.payload, kid=parts.kid, alg=parts.alg, key=key)
    raise CoseError(Reason.BAD_SIGNATURE,
                    f"signature does not verify with the {len(keys)} trusted key(s) of kid {parts.kid.hex()}")
