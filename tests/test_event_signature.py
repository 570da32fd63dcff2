"""The scan-event signature envelope (firmware/core/event_signature.py): exact bytes, readable JSON."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.core.event_signature import (
    SignatureError,
    fingerprint,
    public_key_from_text,
    public_key_text,
    seal,
    unseal,
    verify,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
BODY = json.dumps({"schema": "qrgate.scan/1", "seq": 7, "display": 'a ,"sig":"x" b'},
                  separators=(",", ":")).encode()


def test_sealed_event_is_json_with_sig_last_and_verifies_to_the_exact_body():
    payload = seal(BODY, KEY)
    doc = json.loads(payload)
    assert list(doc)[-1] == "sig" and doc["seq"] == 7 and doc["display"] == 'a ,"sig":"x" b'
    assert verify(unseal(payload), public_key_from_text(public_key_text(KEY.public_key()))) == BODY


@pytest.mark.parametrize("tamper", [
    lambda p: p.replace(b'"seq":7', b'"seq":8'),
    lambda p: p.replace(b'"seq":7', b'"seq": 7'),                     # same JSON, other bytes
    lambda p: p[:-3] + (b"A" if p[-3:-2] != b"A" else b"B") + p[-2:],  # the signature itself
])
def test_any_change_to_the_bytes_fails(tamper):
    with pytest.raises(SignatureError):
        verify(unseal(tamper(seal(BODY, KEY))), KEY.public_key())


def test_another_key_unsigned_or_malformed_payloads_are_refused():
    with pytest.raises(SignatureError):
        verify(unseal(seal(BODY, Ed25519PrivateKey.generate())), KEY.public_key())
    for payload in (BODY, b"", b"{}", b'{"sig":"' + b"A" * 86 + b'"}', BODY[:-1] + b',"sig":"!!"}',
                    BODY[:-1] + b',"sig":"' + b"A" * 10 + b'"}'):
        with pytest.raises(SignatureError):
            verify(unseal(payload), KEY.public_key())
    with pytest.raises(SignatureError):
        seal(b"[1]", KEY)


def test_fingerprint_is_stable_and_short():
    text = fingerprint(KEY.public_key())
    assert text.startswith("SHA256:") and len(text) == len("SHA256:") + 39
    assert text == fingerprint(public_key_from_text(public_key_text(KEY.public_key())))
