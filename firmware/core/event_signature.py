"""Signed scan events: the gate's Ed25519 device key seals each event's exact bytes. Pure.

Envelope (documented in the README, "Signed scan events"): the gate's event is a compact JSON
object ``B`` (UTF-8 bytes, as stored in its outbox, ending with ``}``). The published payload
is ``B`` with one more member appended at the end::

    payload = B[:-1] + b',"sig":"' + base64url(signature, no padding) + b'"}'
    signature = Ed25519.sign(device_key, SCAN_CONTEXT + B)

so the message stays readable JSON, and a verifier recovers ``B`` exactly by cutting the last
``,"sig":"...`` member off (``unseal``), without any canonical JSON: what is verified is the
very bytes the gate wrote. ``SCAN_CONTEXT`` keeps a signature over an event from being valid
for anything else signed with the same key; the gate's declaration of skipped seq numbers
(``firmware.core.seq_skips``) uses the same envelope with its own context.

Enrolment: the first event after a provisioning QR (``provisioned``) also carries
``prov_nonce`` (the code's 16-byte nonce, hex) and ``device_key`` (the raw 32-byte Ed25519
public key, base64url), inside ``B``: the event signed with that key proves the gate holds it,
and the nonce proves it read that code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

SCAN_CONTEXT = b"qrgate.scan-sig/1\n"
SIG_MARKER = b',"sig":"'
SIG_FIELD = "sig"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
_B64URL = re.compile(rb"^[A-Za-z0-9_-]+$")


class SignatureError(ValueError):
    """A payload that is not a sealed event, or whose signature does not verify."""


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str | bytes, size: int) -> bytes:
    """Decode base64url without padding into exactly ``size`` bytes.

    Raises:
        SignatureError: not base64url, or not ``size`` bytes.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if not _B64URL.match(raw) or len(raw) > 4 * size:
        raise SignatureError("not base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as err:
        raise SignatureError("not base64url") from err
    if len(data) != size:
        raise SignatureError(f"{len(data)} bytes instead of {size}")
    return data


def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as base64url (how events and the ``key`` topic carry it)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return b64url(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Read a key written by ``public_key_text``.

    Raises:
        SignatureError: not a 32-byte base64url key.
    """
    return Ed25519PublicKey.from_public_bytes(from_b64url(text, PUBLIC_KEY_BYTES))


def fingerprint(key: Ed25519PublicKey | X25519PublicKey) -> str:
    """``SHA256:`` and the first 16 bytes of the SHA-256 of the raw key, hex in groups of 4:
    what an installer compares between the gate's status and the registry (device keys), or
    with the health office (its escrow key)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    digest = hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:32]
    return "SHA256:" + ":".join(digest[i:i + 4] for i in range(0, 32, 4))


def seal(body: bytes, key: Ed25519PrivateKey, context: bytes = SCAN_CONTEXT) -> bytes:
    """Return the published payload: ``body`` with its ``"sig"`` member appended.

    Args:
        body: a compact JSON object (UTF-8), ending with ``}``, without a ``sig`` member.
        key: the gate's device key.
        context: what the signature is for (``SCAN_CONTEXT`` for scan events; another
            document signed with the same key, such as the seq skips, has its own).

    Raises:
        SignatureError: body is not a JSON object's text.
    """
    if not body.startswith(b"{") or not body.endswith(b"}") or len(body) < 3:
        raise SignatureError("an event body must be a non-empty JSON object")
    return body[:-1] + SIG_MARKER + b64url(key.sign(context + body)).encode("ascii") + b'"}'


@dataclass(frozen=True)
class Sealed:
    """A payload cut into the bytes the gate signed and its signature."""

    body: bytes
    signature: bytes


def unseal(payload: bytes) -> Sealed:
    """Split a published payload into the signed body and the signature (nothing verified yet).

    Raises:
        SignatureError: the payload does not end with a ``"sig"`` member of the right form.
    """
    at = payload.rfind(SIG_MARKER)
    if at <= 0 or not payload.endswith(b'"}'):
        raise SignatureError("the event carries no signature (no \"sig\" member at its end)")
    signature = from_b64url(payload[at + len(SIG_MARKER):-2], SIGNATURE_BYTES)
    return Sealed(body=payload[:at] + b"}", signature=signature)


def verify(sealed: Sealed, key: Ed25519PublicKey, context: bytes = SCAN_CONTEXT) -> bytes:
    """Return the signed body if ``sealed`` was signed by ``key`` for ``context``.

    Raises:
        SignatureError: the signature does not verify.
    """
    try:
        key.verify(sealed.signature, context + sealed.body)
    except InvalidSignature as err:
        raise SignatureError("the signature does not verify with the device's key") from err
    return sealed.body
