"""COSE_Sign1 profile: sign/verify round trips, header rules, hostile structures."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from firmware.core.cose import (
    ALG_EDDSA,
    ALG_ES256,
    MAX_CBOR_DEPTH,
    MAX_MESSAGE_BYTES,
    P256_ORDER,
    CoseError,
    kid_for,
    parse1,
    sign1,
    verify1,
)
from firmware.core.credentials.trust import TrustStore
from firmware.core.model import Reason

ED = ed25519.Ed25519PrivateKey.generate()
ED_OTHER = ed25519.Ed25519PrivateKey.generate()
P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())


def trust_of(*keys) -> TrustStore:
    return TrustStore.from_keys(k.public_key() for k in keys)


def hand_sign1(payload: bytes, key, protected_map, unprotected=None, *, tag: int | None = 18,
               sig_alg: int | None = None) -> bytes:
    """Build a COSE_Sign1 by hand with cbor2 + cryptography (independent of firmware.core.cose)."""
    protected = cbor2.dumps(protected_map) if protected_map is not None else b""
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    alg = sig_alg if sig_alg is not None else (protected_map or {}).get(1, (unprotected or {}).get(1))
    if alg == ALG_ES256:
        r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
        s = min(s, P256_ORDER - s)  # the profile's low-s form
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(to_sign)
    msg = [protected, unprotected or {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(tag, msg) if tag is not None else msg)


def expect(reason: Reason, data: bytes, trust: TrustStore) -> CoseError:
    with pytest.raises(CoseError) as info:
        verify1(data, trust.keys_for)
    assert info.value.reason is reason, info.value.detail
    return info.value


@pytest.mark.parametrize("key", [ED, P256], ids=["eddsa", "es256"])
@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "untagged"])
def test_sign_then_verify_returns_payload_kid_and_alg(key, tagged):
    data = sign1(b"hello", key, tagged=tagged)
    assert data[0] == (0xD2 if tagged else 0x84)
    got = verify1(data, trust_of(key).keys_for)
    assert (got.payload, got.kid) == (b"hello", kid_for(key.public_key()))
    assert got.alg == (ALG_EDDSA if key is ED else ALG_ES256)


def test_kid_is_first_8_bytes_of_sha256_of_spki_der():
    der = ED.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kid_for(ED.public_key()) == hashlib.sha256(der).digest()[:8]


def test_es256_signature_is_raw_r_s_of_64_bytes():
    parts = parse1(sign1(b"x", P256))
    assert len(parts.signature) == 64


def test_message_built_by_hand_with_cwt_tag_61_is_accepted():
    inner = cbor2.loads(hand_sign1(b"p", P256, {1: ALG_ES256, 4: kid_for(P256.public_key())}))
    data = cbor2.dumps(cbor2.CBORTag(61, inner))
    assert verify1(data, trust_of(P256).keys_for).payload == b"p"


def test_unknown_kid_is_unknown_issuer():
    expect(Reason.UNKNOWN_ISSUER, sign1(b"x", ED), trust_of(ED_OTHER))


def test_wrong_key_under_the_right_kid_is_bad_signature():
    forged = sign1(b"x", ED_OTHER, kid=kid_for(ED.public_key()))
    expect(Reason.BAD_SIGNATURE, forged, trust_of(ED))


def test_shared_kid_tries_every_trusted_key():
    kid = b"\x01" * 8
    trust = TrustStore({kid: [ED_OTHER.public_key(), P256.public_key(), ED.public_key()]})
    assert verify1(sign1(b"a", ED, kid=kid), trust.keys_for).key == ED.public_key()
    assert verify1(sign1(b"b", P256, kid=kid), trust.keys_for).payload == b"b"
    stranger = ed25519.Ed25519PrivateKey.generate()
    expect(Reason.BAD_SIGNATURE, sign1(b"c", stranger, kid=kid), trust)


def test_alg_only_in_unprotected_header_is_refused():
    kid = kid_for(ED.public_key())
    data = hand_sign1(b"x", ED, {4: kid}, {1: ALG_EDDSA})
    err = expect(Reason.BAD_SIGNATURE, data, trust_of(ED))
    assert "unprotected" in err.detail


def test_kid_only_in_unprotected_header_is_refused():
    data = hand_sign1(b"x", ED, {1: ALG_EDDSA}, {4: kid_for(ED.public_key())})
    expect(Reason.BAD_SIGNATURE, data, trust_of(ED))


def test_empty_protected_header_is_refused():
    data = hand_sign1(b"x", ED, None, {1: ALG_EDDSA, 4: kid_for(ED.public_key())})
    expect(Reason.BAD_SIGNATURE, data, trust_of(ED))


def test_label_in_both_headers_is_malformed():
    kid = kid_for(ED.public_key())
    data = hand_sign1(b"x", ED, {1: ALG_EDDSA, 4: kid}, {4: kid})
    expect(Reason.MALFORMED, data, trust_of(ED))


def test_crit_header_is_refused():
    kid = kid_for(ED.public_key())
    data = hand_sign1(b"x", ED, {1: ALG_EDDSA, 4: kid, 2: [99], 99: 1})
    expect(Reason.BAD_SIGNATURE, data, trust_of(ED))


@pytest.mark.parametrize("alg", [-35, -36, -37, -257, -47, 0, 5, "EdDSA", -8.0])
def test_other_algorithms_are_refused(alg):
    kid = kid_for(ED.public_key())
    data = hand_sign1(b"x", ED, {1: alg, 4: kid}, sig_alg=ALG_EDDSA)
    expect(Reason.BAD_SIGNATURE, data, trust_of(ED))


def test_alg_that_does_not_match_the_key_type_is_bad_signature():
    kid = kid_for(ED.public_key())
    # Claims ES256 but signed with Ed25519 under an Ed25519 kid.
    data = hand_sign1(b"x", ED, {1: ALG_ES256, 4: kid}, sig_alg=ALG_EDDSA)
    expect(Reason.BAD_SIGNATURE, data, trust_of(ED))


def test_p384_key_is_refused_by_the_trust_store():
    with pytest.raises(ValueError, match="P-256"):
        TrustStore.from_keys([P384.public_key()])


def test_trailing_bytes_after_the_message_are_malformed():
    expect(Reason.MALFORMED, sign1(b"x", ED) + b"\x00", trust_of(ED))


@pytest.mark.parametrize("cut", [1, 2, 10, 40, 70])
def test_truncated_message_is_malformed(cut):
    data = sign1(b"payload", ED)
    expect(Reason.MALFORMED, data[:-cut], trust_of(ED))


def test_truncated_signature_is_bad_signature():
    data = cbor2.loads(sign1(b"x", ED))
    protected, unprotected, payload, sig = data.value
    short = cbor2.dumps(cbor2.CBORTag(18, [protected, dict(unprotected), payload, sig[:63]]))
    expect(Reason.BAD_SIGNATURE, short, trust_of(ED))


@pytest.mark.parametrize("item", [
    [], [b"", {}, b""], [b"", {}, b"", b"", b""], {"a": 1}, 7, "text", None,
    cbor2.CBORTag(98, []), cbor2.CBORTag(17, [b"", {}, b"", b""]),
])
def test_non_sign1_structures_are_malformed(item):
    expect(Reason.MALFORMED, cbor2.dumps(item), trust_of(ED))


def test_detached_payload_is_refused():
    kid = kid_for(ED.public_key())
    protected = cbor2.dumps({1: ALG_EDDSA, 4: kid})
    data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, None, b"\x00" * 64]))
    expect(Reason.MALFORMED, data, trust_of(ED))


def test_deep_nesting_is_malformed_and_fast():
    deep = b"\x81" * (MAX_CBOR_DEPTH + 5) + b"\x00"
    expect(Reason.MALFORMED, deep, trust_of(ED))
    very_deep = b"\x81" * (MAX_MESSAGE_BYTES - 1) + b"\x00"
    expect(Reason.MALFORMED, very_deep, trust_of(ED))


def test_oversized_message_is_malformed():
    expect(Reason.MALFORMED, sign1(b"x" * MAX_MESSAGE_BYTES, ED), trust_of(ED))


def test_duplicate_map_keys_in_protected_header_are_malformed():
    kid = kid_for(ED.public_key())
    protected = b"\xa3" + b"\x01\x27" + b"\x04\x48" + kid + b"\x01\x27"
    data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"x", b"\x00" * 64]))
    expect(Reason.MALFORMED, data, trust_of(ED))


def test_sign1_refuses_an_alg_that_does_not_match_the_key():
    with pytest.raises(CoseError):
        sign1(b"x", ED, alg=ALG_ES256)


def test_issue10_es256_high_s_twin_of_a_valid_signature_is_refused():
    """ES256 signatures are malleable: (r, n - s) verifies too. Only the low-s form is accepted."""
    data = sign1(b"the same message", P256)
    assert verify1(data, trust_of(P256).keys_for).payload == b"the same message"
    inner = cbor2.loads(data)
    protected, unprotected, payload, signature = inner.value
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    assert s <= P256_ORDER // 2, "the signer writes the low-s form"
    twin = r + (P256_ORDER - s).to_bytes(32, "big")
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, twin]))
    expect(Reason.BAD_SIGNATURE, forged, trust_of(P256))


def test_issue10_es256_signer_always_writes_low_s():
    for n in range(64):
        signature = cbor2.loads(sign1(f"m{n}".encode(), P256)).value[3]
        assert int.from_bytes(signature[32:], "big") <= P256_ORDER // 2
