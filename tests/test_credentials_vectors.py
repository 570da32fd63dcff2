"""Stage-by-stage QG1 vectors (tests/vectors/qg1/*.json, in the style of dgc-testdata) must all pass.

The vectors are made by tests/vectors/make_vectors.py with an independent encoder
(cbor2, cryptography, zlib, the base45 package); see tests/vectors/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from firmware.core.credentials import TrustStore, check_payload, qg1
from firmware.core.credentials.envelope import EnvelopeError, open_envelope
from firmware.core.model import Credential, Rejection

VECTOR_DIR = Path(__file__).resolve().parent / "vectors" / "qg1"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))


def trust_of(context: dict) -> TrustStore:
    by_kid: dict[bytes, list] = {}
    for entry in context["trusted_keys"]:
        key = serialization.load_pem_public_key(entry["public_key_pem"].encode())
        by_kid.setdefault(bytes.fromhex(entry["kid"]), []).append(key)
    return TrustStore(by_kid)


def test_the_vector_set_is_complete():
    names = {p.stem.split("-", 1)[1] for p in VECTORS}
    assert len(VECTORS) >= 30
    for family in ("valid", "prefix", "base45", "zlib", "cose", "alg", "signature", "claims", "unknown-kid"):
        assert any(n.startswith(family) for n in names), family


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector(path):
    vector = json.loads(path.read_text(encoding="utf-8"))
    payload = vector["payload"].encode("utf-8")
    expected = vector["expected"]
    trust = trust_of(vector["context"])

    inspection = qg1.inspect(payload, trust)
    assert inspection.stages == expected["stages"]
    outer = check_payload(payload, trust)
    if payload.startswith(b"HC1:"):
        # Not a qrgate pass, but since issue 15 the gate reads it as an EU DCC (no signer trusted here).
        assert outer.type.value == "dcc" and isinstance(outer, Rejection)
    else:
        assert (outer.type, getattr(outer, "reason", None)) == (inspection.result.type,
                                                                getattr(inspection.result, "reason", None))

    if "base45_hex" in vector["intermediate"] and expected["stages"]["base45"] == "ok":
        opened = open_envelope("QG1:", payload) if expected["stages"]["zlib"] != "failed" else None
        if opened is not None:
            assert opened.decoded.hex() == vector["intermediate"]["base45_hex"]
            assert opened.message.hex() == vector["intermediate"]["cose_hex"]
    if expected["stages"]["zlib"] == "failed":
        with pytest.raises(EnvelopeError) as info:
            open_envelope("QG1:", payload)
        assert info.value.stage == "zlib"

    result = inspection.result
    if expected["reason"] == "ok":
        assert isinstance(result, Credential)
        got = {k: (v.value if hasattr(v, "value") else v) for k, v in vars(result).items() if k != "dcc"}
        assert got == expected["credential"]
        expired = result.expires_s is not None and result.expires_s <= vector["context"]["now_s"]
        assert expired == bool(expected["expired_at_now"])
    else:
        assert isinstance(result, Rejection)
        assert result.reason.value == expected["reason"]
