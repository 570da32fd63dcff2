"""Credential plugins: turn a QR payload into a Credential or a Rejection. Pure.

Each plugin module has ``detect(payload) -> bool`` and ``check(...)``:

- ``qg1``: the signed qrgate pass, ``QG1:`` + base45(zlib(COSE_Sign1(CWT))).
- ``cccd``: the unsigned QR of the Vietnamese chip ID card.
- ``dcc``: the EU Digital COVID Certificate, ``HC1:`` (Vietnam's 2022 vaccine passport),
  verified against trusted Document Signer Certificates (``dcc_trust.DscStore``).

Provisioning codes (``QGP1:``) are recognised only to be labelled as such; the
provisioning reader handles them. Everything else is ``unknown_format``.

Validity times are copied into the Credential and NOT checked here: the policy
compares them with a trusted clock.
"""

from __future__ import annotations

from firmware.core.credentials import cccd, dcc, qg1
from firmware.core.credentials.dcc_trust import DscStore
from firmware.core.credentials.envelope import EnvelopeError, unwrap, wrap
from firmware.core.credentials.trust import TrustStore, public_key_from_pem
from firmware.core.model import Credential, CredentialType, Reason, Rejection

PROVISIONING_PREFIX = b"QGP1:"
# Marks a rejection produced by the last-resort guard, i.e. a parser bug. Tests assert it never appears.
INTERNAL_ERROR_DETAIL = "internal parser error"

__all__ = [
    "DscStore", "EnvelopeError", "INTERNAL_ERROR_DETAIL", "TrustStore", "check_payload", "public_key_from_pem",
    "unwrap", "wrap",
]


_NO_DSCS = DscStore()


def check_payload(payload: bytes, trust: TrustStore, dcc_trust: DscStore | None = None) -> Credential | Rejection:
    """Recognise, parse and verify one QR payload.

    Args:
        payload: the raw bytes from the decoder (text is accepted and UTF-8 encoded).
        trust: the trusted pass issuer keys.
        dcc_trust: the trusted DCC Document Signer Certificates (none if not given).

    Returns:
        A Credential (signature verified for passes; time fields filled but not checked),
        or a Rejection whose reason is ``unknown_format``, ``malformed``,
        ``bad_signature``, ``unknown_issuer`` or (DCC) ``dcc_key_usage``. Never raises, whatever the input.
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
        if dcc.detect(payload):
            return dcc.check(payload, dcc_trust if dcc_trust is not None else _NO_DSCS)
        if payload.startswith(PROVISIONING_PREFIX):
            return Rejection(CredentialType.PROVISIONING, Reason.UNKNOWN_FORMAT,
                             "provisioning code, not a credential")
        return Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT, "not a known credential format")
    except Exception as err:  # noqa: BLE001 - the contract is "never raises"; tests assert this never fires
        return Rejection(CredentialType.UNKNOWN, Reason.MALFORMED, f"{INTERNAL_ERROR_DETAIL} ({type(err).__name__})")
