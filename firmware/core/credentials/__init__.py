"""Credential plugins: turn a QR payload into a Credential or a Rejection. Pure.

Each plugin module has ``detect(payload) -> bool`` and ``check(...)``:

- ``qg1``: the signed qrgate pass, ``QG1:`` + base45(zlib(COSE_Sign1(CWT))).
- ``cccd``: the unsigned QR of the Vietnamese chip ID card.

Provisioning codes (``QGP1:``) are recognised only to be labelled as such; the
provisioning reader handles them. Everything else is ``unknown_format``.

Validity times are copied into the Credential and NOT checked here: the policy
compares them with a trusted clock.
"""

from __future__ import annotations

from firmware.core.credentials import cccd, qg1
from firmware.core.credentials.envelope import EnvelopeError, unwrap, wrap
from firmware.core.credentials.trust import TrustStore, public_key_from_pem
from firmware.core.model import Credential, CredentialType, Reason, Rejection

PROVISIONING_PREFIX = b"QGP1:"
# Marks a rejection produced by the last-resort guard, i.e. a parser bug. Tests assert it never appears.
INTERNAL_ERROR_DETAIL = "internal parser error"

__all__ = [
    "EnvelopeError", "INTERNAL_ERROR_DETAIL", "TrustStore", "check_payload", "public_key_from_pem",
    "unwrap", "wrap",
]


def check_payload(payload: bytes, trust: TrustStore) -> Credential | Rejection:
    """Recognise, parse and verify one QR payload.

    Args:
        payload: the raw bytes from the decoder (text is accepted and UTF-8 encoded).
        trust: the trusted pass issuer keys.

    Returns:
        A Credential (signature verified for passes; time fields filled but not checked),
        or a Rejection whose reason is ``unknown_format``, ``malformed``,
        ``bad_signature`` or ``unknown_issuer``. Never raises, whatever the input.
    """
    try:
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        elif not isinstance(payload, bytes):
            payload = bytes(payload)
        if qg1.detect(payload):
            return qg1.check(payload, trust)
        if cccd.detect(payload):
            return cccd.check(payload)
        if payload.startswith(PROVISIONING_PREFIX):
            return Rejection(CredentialType.PROVISIONING, Reason.UNKNOWN_FORMAT,
                             "provisioning code, not a credential")
        return Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT, "not a known credential format")
    except Exception as err:  # noqa: BLE001 - the contract is "never raises"; tests assert this never fires
        return Rejection(CredentialType.UNKNOWN, Reason.MALFORMED, f"{INTERNAL_ERROR_DETAIL} ({type(err).__name__})")
