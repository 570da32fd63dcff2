"""Contact escrow: the person's contact sealed in each scan event to the health office's key. Pure.

Construction: HPKE (RFC 9180) in base mode, single shot, with the suite
DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305 (KEM 0x0020, KDF 0x0001,
AEAD 0x0003), written out here over ``cryptography``'s X25519, HMAC-SHA256, HKDF-Expand and
ChaCha20Poly1305, so that the ephemeral key material is an input (``ikm_e``, 32 random bytes the
caller draws) and the module stays pure and testable. The tests check it against the RFC's
published vector and against ``cryptography``'s own HPKE where the installed version has one.

What a gate publishes in ``contact_sealed`` (base64url, no padding)::

    enc || ct      enc: the ephemeral X25519 public key (32 bytes)
                   ct:  ChaCha20-Poly1305 of the padded contact, with its 16-byte tag
    info = "qrgate.contact/1" LF device_id LF event_id      (binds the blob to its event)
    aad  = ""                                                (info already enters the key schedule)
    plaintext = {"id": ..., "name": ..., "phone": ...} (compact JSON, UTF-8), then spaces up to
                a multiple of 128 bytes, so the length says little about the name

A blob copied onto another event (another ``event_id`` or ``device_id``) derives another key and
fails to open, as does any changed byte, a truncated blob or another recipient key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from firmware.core.event_signature import b64url

KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0003
KEM_SUITE = b"KEM" + KEM_ID.to_bytes(2, "big")
HPKE_SUITE = b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
MODE_BASE = 0x00
N_SECRET = N_SK = N_ENC = N_K = 32
N_N = 12
TAG_BYTES = 16
IKM_BYTES = 32
CONTEXT = b"qrgate.contact/1"
PAD_BYTES = 128
MAX_PLAINTEXT_BYTES = 1536
MIN_SEALED_BYTES = N_ENC + PAD_BYTES + TAG_BYTES
MAX_SEALED_BYTES = N_ENC + MAX_PLAINTEXT_BYTES + TAG_BYTES
# base64url lengths of the smallest and largest blobs a gate writes
MIN_SEALED_CHARS = -(-MIN_SEALED_BYTES * 4 // 3)
MAX_SEALED_CHARS = -(-MAX_SEALED_BYTES * 4 // 3)
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class EscrowError(ValueError):
    """A sealed contact that cannot be opened (wrong key, moved, changed, truncated) or made."""


# ---------------------------------------------------------------------------- RFC 9180 pieces

def _extract(salt: bytes, ikm: bytes) -> bytes:
    # HKDF-Extract (RFC 5869): an empty salt and HashLen zero bytes give the same HMAC key.
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def derive_key_pair(ikm: bytes) -> X25519PrivateKey:
    """DHKEM(X25519) ``DeriveKeyPair``: the key pair an input keying material gives (RFC 9180, 7.1.3)."""
    dkp_prk = _labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm)
    return X25519PrivateKey.from_private_bytes(_labeled_expand(KEM_SUITE, dkp_prk, b"sk", b"", N_SK))


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        shared = private.exchange(public)
    except ValueError as err:  # cryptography refuses the all-zero result of a low-order point
        raise EscrowError("the ephemeral key is not a usable X25519 point") from err
    if shared == bytes(len(shared)):  # RFC 9180, 7.1.4: abort on an all-zero shared secret
        raise EscrowError("the ephemeral key is not a usable X25519 point")
    return shared


def _shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    eae_prk = _labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    return _labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, N_SECRET)


def _key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """Base mode (no PSK): the AEAD key and base nonce."""
    psk_id_hash = _labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = _labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"")
    key = _labeled_expand(HPKE_SUITE, secret, b"key", context, N_K)
    base_nonce = _labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, N_N)
    return key, base_nonce


def hpke_seal(recipient: X25519PublicKey, info: bytes, aad: bytes, plaintext: bytes, ikm_e: bytes) -> bytes:
    """HPKE base-mode single-shot Seal; returns ``enc || ciphertext``.

    Args:
        recipient: the recipient's X25519 public key.
        info, aad: HPKE's info and associated data.
        plaintext: what to seal.
        ikm_e: 32 fresh random bytes from which the ephemeral key is derived (``DeriveKeyPair``);
            never reuse them.

    Raises:
        EscrowError: ikm_e is not 32 bytes, or the recipient key is a low-order point.
    """
    if len(ikm_e) != IKM_BYTES:
        raise EscrowError(f"the ephemeral key material must be {IKM_BYTES} bytes, not {len(ikm_e)}")
    ephemeral = derive_key_pair(ikm_e)
    enc = _raw(ephemeral.public_key())
    shared = _shared_secret(_dh(ephemeral, recipient), enc, _raw(recipient))
    key, nonce = _key_schedule(shared, info)
    return enc + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def hpke_open(private: X25519PrivateKey, info: bytes, aad: bytes, sealed: bytes) -> bytes:
    """HPKE base-mode single-shot Open of ``enc || ciphertext``.

    Raises:
        EscrowError: too short, another key, other info or aad, or a changed byte.
    """
    if len(sealed) < N_ENC + TAG_BYTES:
        raise EscrowError(f"{len(sealed)} bytes is too short for a sealed contact")
    enc, ciphertext = sealed[:N_ENC], sealed[N_ENC:]
    shared = _shared_secret(_dh(private, X25519PublicKey.from_public_bytes(enc)), enc, _raw(private.public_key()))
    key, nonce = _key_schedule(shared, info)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as err:
        raise EscrowError("does not open with this key for this event (another key, or moved or changed)") from err


# ---------------------------------------------------------------------------- the contact

@dataclass(frozen=True)
class Contact:
    """What the health office may read of a person: full name, full phone, id (each may be empty)."""

    name: str = ""
    phone: str = ""
    id: str = ""

    @property
    def empty(self) -> bool:
        """True when there is nothing to seal."""
        return not (self.name or self.phone or self.id)


def binding(device_id: str, event_id: str) -> bytes:
    """The HPKE info that ties a sealed contact to one event of one gate."""
    return CONTEXT + b"\n" + device_id.encode("utf-8") + b"\n" + event_id.encode("utf-8")


def decode_sealed(text: str) -> bytes:
    """The bytes of a ``contact_sealed`` value.

    Raises:
        EscrowError: not base64url, or not the length of a sealed contact.
    """
    if not isinstance(text, str) or not MIN_SEALED_CHARS <= len(text) <= MAX_SEALED_CHARS or not _B64URL.match(text):
        raise EscrowError("contact_sealed is not a base64url sealed contact of the right length")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise EscrowError("contact_sealed is not base64url") from err


def seal_contact(contact: Contact, recipient: X25519PublicKey, device_id: str, event_id: str, ikm_e: bytes) -> str:
    """Seal a contact to the health office's key for one event; returns the ``contact_sealed`` text.

    Raises:
        EscrowError: the contact does not fit ``MAX_PLAINTEXT_BYTES`` or ``ikm_e`` is not 32 bytes.
    """
    body = json.dumps({"id": contact.id, "name": contact.name, "phone": contact.phone}, ensure_ascii=False,
                      separators=(",", ":"), sort_keys=True).encode("utf-8")
    padded = body + b" " * (-len(body) % PAD_BYTES)
    if len(padded) > MAX_PLAINTEXT_BYTES:
        raise EscrowError(f"the contact is longer than {MAX_PLAINTEXT_BYTES} bytes")
    return b64url(hpke_seal(recipient, binding(device_id, event_id), b"", padded, ikm_e))


def open_contact(text: str, private: X25519PrivateKey, device_id: str, event_id: str) -> Contact:
    """Open a ``contact_sealed`` value of the event ``event_id`` of ``device_id``.

    Raises:
        EscrowError: with the reason (not base64url, wrong length, another key or another event,
            changed or truncated, or not a contact once opened). Never another exception.
    """
    plaintext = hpke_open(private, binding(device_id, event_id), b"", decode_sealed(text))
    try:
        data = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise EscrowError("opened, but does not hold a contact") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k, ""), str) for k in ("id", "name", "phone")):
        raise EscrowError("opened, but does not hold a contact")
    return Contact(name=data.get("name", ""), phone=data.get("phone", ""), id=data.get("id", ""))
