"""The qrgate pass (QG1:): valid passes, independent encoders, forgeries at every layer, hostile envelopes."""

from __future__ import annotations

import hashlib
import zlib

import base45 as base45_lib
import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from firmware.core.cose import kid_for, sign1
from firmware.core.credentials import INTERNAL_ERROR_DETAIL, TrustStore, check_payload, qg1
from firmware.core.credentials.envelope import (
    MAX_INFLATED_BYTES,
    EnvelopeError,
    b45decode,
    b45encode,
    inflate,
    unwrap,
    wrap,
)
from firmware.core.model import Credential, CredentialType, Reason, Rejection

# Fixed keys: Ed25519 signatures are deterministic, so every run mutates the same bytes.
ISSUER = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"qrgate test issuer").digest())
ISSUER_P256 = ec.derive_private_key(int.from_bytes(hashlib.sha256(b"qrgate test p256").digest(), "big"),
                                    ec.SECP256R1())
STRANGER = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"qrgate stranger").digest())
TRUST = TrustStore.from_keys([ISSUER.public_key(), ISSUER_P256.public_key()])

NOW = 1_780_000_000
CLAIMS = qg1.build_claims(sub="NV-0042", name="NGUYỄN ĐÌNH HÙNG", phone="0966323123", iss="Cty ABC",
                          iat_s=NOW, nbf_s=NOW, exp_s=NOW + 86400 * 30, cti=bytes(range(16)), hd_s=NOW - 3600)
EXPECTED = Credential(type=CredentialType.QG1, subject="NV-0042", name="NGUYỄN ĐÌNH HÙNG", phone="0966323123",
                      issuer="Cty ABC", kid_hex=kid_for(ISSUER.public_key()).hex(), issued_at_s=float(NOW),
                      not_before_s=float(NOW), expires_s=float(NOW + 86400 * 30),
                      health_declared_s=float(NOW - 3600), token_id=bytes(range(16)).hex(), signed=True)


def rejected(result, reason: Reason | None = None) -> Rejection:
    assert isinstance(result, Rejection), result
    assert INTERNAL_ERROR_DETAIL not in result.detail
    if reason is not None:
        assert result.reason is reason, result
    return result


def pass_text(claims=CLAIMS, key=ISSUER, compress=True, **kw) -> bytes:
    return qg1.encode(claims, key, compress=compress, **kw).encode("ascii")


def repack(message: bytes, compress: bool = False) -> bytes:
    return wrap("QG1:", message, compress=compress).encode("ascii")


# ----------------------------------------------------------------------------- valid passes

@pytest.mark.parametrize("compress", [True, False], ids=["zlib", "plain"])
def test_valid_ed25519_pass_gives_the_full_credential(compress):
    assert check_payload(pass_text(compress=compress), TRUST) == EXPECTED


def test_valid_es256_pass_is_accepted():
    result = check_payload(pass_text(key=ISSUER_P256), TRUST)
    assert isinstance(result, Credential)
    assert result.kid_hex == kid_for(ISSUER_P256.public_key()).hex()


def test_text_input_is_accepted_like_bytes():
    assert check_payload(pass_text().decode("ascii"), TRUST) == EXPECTED


def test_pass_made_by_an_independent_path_untagged_es256_is_accepted():
    """Build every layer by hand: cbor2 claims, Sig_structure, raw r||s, untagged array, zlib, base45 lib."""
    claims = {1: "Sở Y tế", 2: "079201012345", 4: NOW + 100, 5: NOW - 100, 6: NOW - 100, 7: b"\x07" * 8,
              "name": "TRẦN THỊ MAI", "phone": "+84 912 345 678", "hd": NOW - 60, "x-extra": [1, 2, {"k": 3}]}
    payload = cbor2.dumps(claims)
    protected = cbor2.dumps({1: -7, 4: kid_for(ISSUER_P256.public_key())})
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(ISSUER_P256.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    s = min(s, 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 - s)  # low-s, as the profile says
    message = cbor2.dumps([protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")])
    text = b"QG1:" + base45_lib.b45encode(zlib.compress(message))
    result = check_payload(text, TRUST)
    assert result == Credential(type=CredentialType.QG1, subject="079201012345", name="TRẦN THỊ MAI",
                                phone="+84 912 345 678", issuer="Sở Y tế",
                                kid_hex=kid_for(ISSUER_P256.public_key()).hex(), issued_at_s=float(NOW - 100),
                                not_before_s=float(NOW - 100), expires_s=float(NOW + 100),
                                health_declared_s=float(NOW - 60), token_id="07" * 8, signed=True)


def test_independent_eddsa_pass_with_unprotected_extras_is_accepted():
    payload = cbor2.dumps({2: "p1"})
    protected = cbor2.dumps({4: kid_for(ISSUER.public_key()), 1: -8})
    sig = ISSUER.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {"note": "unsigned"}, payload, sig]))
    result = check_payload(b"QG1:" + base45_lib.b45encode(message), TRUST)
    assert isinstance(result, Credential) and result.subject == "p1" and result.expires_s is None


def test_expired_pass_is_still_a_credential_the_policy_checks_times():
    claims = {**CLAIMS, 4: NOW - 1, 5: NOW + 10}
    result = check_payload(pass_text(claims), TRUST)
    assert isinstance(result, Credential)
    assert (result.expires_s, result.not_before_s) == (float(NOW - 1), float(NOW + 10))


def test_decomposed_vietnamese_name_is_nfc_normalised():
    import unicodedata
    claims = dict(CLAIMS, name=unicodedata.normalize("NFD", "NGUYỄN ĐÌNH HÙNG"))
    assert check_payload(pass_text(claims), TRUST).name == "NGUYỄN ĐÌNH HÙNG"


# ----------------------------------------------------------------------------- stage reports

def test_inspection_reports_every_stage():
    ok = qg1.inspect(pass_text(), TRUST)
    assert ok.stages == {"prefix": "ok", "base45": "ok", "zlib": "ok", "cose": "ok", "signature": "ok",
                         "claims": "ok"}
    plain = qg1.inspect(pass_text(compress=False), TRUST)
    assert plain.stages["zlib"] == "absent"
    unknown = qg1.inspect(pass_text(), TrustStore())
    assert unknown.stages == {"prefix": "ok", "base45": "ok", "zlib": "ok", "cose": "ok",
                              "signature": "failed", "claims": "not_reached"}
    assert unknown.result.reason is Reason.UNKNOWN_ISSUER


# ----------------------------------------------------------------------------- forgeries

def test_wrong_key_under_a_trusted_kid_is_bad_signature():
    forged = pass_text(key=STRANGER, kid=kid_for(ISSUER.public_key()))
    rejected(check_payload(forged, TRUST), Reason.BAD_SIGNATURE)


def test_unknown_key_is_unknown_issuer():
    rejected(check_payload(pass_text(key=STRANGER), TRUST), Reason.UNKNOWN_ISSUER)


def test_shared_kid_between_two_issuers_tries_each_key():
    kid = b"\xaa" * 8
    other = ed25519.Ed25519PrivateKey.generate()
    trust = TrustStore({kid: [other.public_key(), ISSUER.public_key()]})
    assert isinstance(check_payload(pass_text(kid=kid), trust), Credential)
    assert isinstance(check_payload(pass_text(key=other, kid=kid), trust), Credential)
    rejected(check_payload(pass_text(key=STRANGER, kid=kid), trust), Reason.BAD_SIGNATURE)


def test_alg_only_in_unprotected_header_is_refused():
    payload = cbor2.dumps(CLAIMS)
    protected = cbor2.dumps({4: kid_for(ISSUER.public_key())})
    sig = ISSUER.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {1: -8}, payload, sig]))
    rejected(check_payload(repack(message), TRUST), Reason.BAD_SIGNATURE)


def test_signature_under_another_algorithm_is_refused():
    # The ES256 signature bytes of an EdDSA-labelled header, and alg ES384.
    payload = cbor2.dumps(CLAIMS)
    for alg in (-35, -257, -8):
        protected = cbor2.dumps({1: alg, 4: kid_for(ISSUER_P256.public_key())})
        r, s = decode_dss_signature(ISSUER_P256.sign(cbor2.dumps(["Signature1", protected, b"", payload]),
                                                     ec.ECDSA(hashes.SHA256())))
        message = cbor2.dumps([protected, {}, payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")])
        rejected(check_payload(repack(message), TRUST), Reason.BAD_SIGNATURE)


def _layers():
    """The valid pass at each layer, with a function that rebuilds a payload from a mutated layer."""
    message = sign1(cbor2.dumps(CLAIMS), ISSUER)
    compressed = zlib.compress(message, 9)
    tag = cbor2.loads(message)
    protected, unprotected, payload, signature = tag.value

    def rebuild(p=protected, pl=payload, sig=signature):
        return repack(cbor2.dumps(cbor2.CBORTag(18, [p, dict(unprotected), pl, sig])))

    return {
        "zlib": (compressed, lambda b: b"QG1:" + b45encode(b).encode()),
        "cose": (message, lambda b: repack(b)),
        "protected": (protected, lambda b: rebuild(p=b)),
        "claims": (payload, lambda b: rebuild(pl=b)),
        "signature": (signature, lambda b: rebuild(sig=b)),
    }


@pytest.mark.parametrize("layer", ["zlib", "cose", "protected", "claims", "signature"])
def test_every_single_bit_flip_at_every_layer_is_refused(layer):
    original, rebuild = _layers()[layer]
    accepted = 0
    for i in range(len(original) * 8):
        mutated = bytearray(original)
        mutated[i // 8] ^= 1 << (i % 8)
        result = check_payload(rebuild(bytes(mutated)), TRUST)
        if isinstance(result, Credential):
            # Deflate has slack bits (padding, unused code lengths): such a flip inflates to the
            # very same signed message, so it is the same pass, not a forgery.
            assert layer == "zlib" and inflate(bytes(mutated)) == inflate(original)
            assert result == EXPECTED
            accepted += 1
        else:
            rejected(result)
    assert layer == "zlib" or accepted == 0


def test_every_character_change_of_the_text_is_refused():
    from firmware.core.credentials.envelope import BASE45_ALPHABET

    text = pass_text().decode("ascii")
    for i in range(len(text)):
        alphabet = BASE45_ALPHABET if i >= 4 else "QG1:X"
        replacement = alphabet[(alphabet.index(text[i]) + 1) % len(alphabet)]
        rejected(check_payload((text[:i] + replacement + text[i + 1:]).encode(), TRUST))


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 50, 100, 200])
def test_truncated_pass_is_refused(cut):
    rejected(check_payload(pass_text()[:-cut], TRUST))
    rejected(check_payload(pass_text(compress=False)[:-cut], TRUST))


@pytest.mark.parametrize("extra", [b"0", b"00", b"000", b" ", b"\n", b"\x00", b"QG1:"])
def test_extra_data_after_the_pass_is_refused(extra):
    rejected(check_payload(pass_text() + extra, TRUST))
    rejected(check_payload(pass_text(compress=False) + extra, TRUST))


def test_extra_bytes_after_the_zlib_stream_are_refused():
    message = sign1(cbor2.dumps(CLAIMS), ISSUER)
    text = b"QG1:" + b45encode(zlib.compress(message) + b"\x00").encode()
    assert qg1.inspect(text, TRUST).stages["zlib"] == "failed"
    rejected(check_payload(text, TRUST), Reason.MALFORMED)


def test_extra_bytes_after_the_cose_message_are_refused():
    message = sign1(cbor2.dumps(CLAIMS), ISSUER)
    rejected(check_payload(repack(message + b"\xa0"), TRUST), Reason.MALFORMED)


# ----------------------------------------------------------------------------- hostile envelopes

def test_zlib_bomb_over_the_cap_is_refused_quickly():
    bomb = zlib.compress(b"\x00" * (4 * 1024 * 1024), 9)
    text = b"QG1:" + b45encode(bomb).encode()
    result = qg1.inspect(text, TRUST)
    assert result.stages["zlib"] == "failed"
    rejected(result.result, Reason.MALFORMED)


def test_inflate_cap_is_exact():
    assert len(inflate(zlib.compress(b"a" * MAX_INFLATED_BYTES))) == MAX_INFLATED_BYTES
    with pytest.raises(EnvelopeError, match="more than"):
        inflate(zlib.compress(b"a" * (MAX_INFLATED_BYTES + 1)))


def test_truncated_zlib_stream_is_refused():
    with pytest.raises(EnvelopeError, match="truncated"):
        inflate(zlib.compress(b"hello world" * 10)[:-5])


def test_deep_cbor_nesting_in_signed_claims_is_malformed():
    nested: object = 0
    for _ in range(200):
        nested = [nested]
    claims = dict(CLAIMS, deep=nested)
    payload = cbor2.dumps(claims)
    message = sign1(payload, ISSUER)
    result = qg1.inspect(repack(message, compress=True), TRUST)
    assert result.stages["signature"] == "ok" and result.stages["claims"] == "failed"
    rejected(result.result, Reason.MALFORMED)


def test_deep_nesting_in_place_of_the_message_is_malformed():
    rejected(check_payload(repack(b"\x81" * 5000 + b"\x00", compress=True), TRUST), Reason.MALFORMED)


@pytest.mark.parametrize("claims, why", [
    ({1: "x"}, "no sub"),
    ({2: ""}, "empty sub"),
    ({2: 42}, "sub not text"),
    ({2: "p", 4: "tomorrow"}, "exp not a number"),
    ({2: "p", 4: True}, "exp is a boolean"),
    ({2: "p", 4: float("nan")}, "exp NaN"),
    ({2: "p", 4: -1}, "exp negative"),
    ({2: "p", 4: 10**30}, "exp huge"),
    ({2: "p", 5: [1]}, "nbf not a number"),
    ({2: "p", "hd": "yes"}, "hd not a number"),
    ({2: "p", 7: "text"}, "cti not bytes"),
    ({2: "p", 7: b"x" * 65}, "cti too long"),
    ({2: "p", "name": b"bytes"}, "name not text"),
    ({2: "p", "name": "A\x00B"}, "control character"),
    ({2: "p", "phone": "0" * 33}, "phone too long"),
    ({2: "x" * 129}, "sub too long"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_signed_but_invalid_claims_are_malformed(claims, why):
    result = qg1.inspect(repack(sign1(cbor2.dumps(claims), ISSUER)), TRUST)
    assert result.stages["signature"] == "ok", why
    rejected(result.result, Reason.MALFORMED)


def test_claims_that_are_not_a_map_are_malformed():
    rejected(check_payload(repack(sign1(cbor2.dumps([2, "p"]), ISSUER)), TRUST), Reason.MALFORMED)


@pytest.mark.parametrize("payload, reason", [
    (b"", Reason.UNKNOWN_FORMAT),
    (b"QG1", Reason.UNKNOWN_FORMAT),
    (b"qg1:ABC", Reason.UNKNOWN_FORMAT),
    (b"HC1:NCFOXN", Reason.MALFORMED),  # an EU DCC attempt (issue 15), broken base45
    (b"https://example.com/QG1:", Reason.UNKNOWN_FORMAT),
    (b"QG1:", Reason.MALFORMED),
    (b"QG1:A", Reason.MALFORMED),
    (b"QG1:abc", Reason.MALFORMED),
    (b"QG1:GGW", Reason.MALFORMED),
    (b"QG1:\xff\xfe", Reason.MALFORMED),
    (b"QG1:" + b"0" * 9000, Reason.MALFORMED),
    (b"QGP1:ABC", Reason.UNKNOWN_FORMAT),
])
def test_garbage_is_refused_with_a_reason(payload, reason):
    rejected(check_payload(payload, TRUST), reason)


# ----------------------------------------------------------------------------- envelope helpers

@pytest.mark.parametrize("data", [b"", b"\x00", b"AB", b"Hello!!", bytes(range(256)), b"\xff\xff\xff"])
def test_base45_round_trips_and_matches_the_reference_library(data):
    text = b45encode(data)
    assert text == base45_lib.b45encode(data).decode()
    assert b45decode(text) == data


@pytest.mark.parametrize("text", ["A", "ABCD", "GGW", ":::", "ab", "A B\n", "GW"])
def test_base45_refuses_invalid_text(text):
    with pytest.raises(EnvelopeError):
        b45decode(text)


def test_rfc9285_examples():
    assert b45encode(b"AB") == "BB8"
    assert b45encode(b"Hello!!") == "%69 VD92EX0"
    assert b45encode(b"base-45") == "UJCLQE7W581"
    assert b45decode("QED8WEX0") == b"ietf!"


def test_wrap_and_unwrap_are_inverse_for_other_prefixes():
    for compress in (True, False):
        text = wrap("QGP1:", b"\x84" + b"x" * 300, compress=compress)
        assert text.startswith("QGP1:")
        assert unwrap("QGP1:", text) == b"\x84" + b"x" * 300
    with pytest.raises(EnvelopeError) as info:
        unwrap("QGP1:", "QG1:ABC")
    assert info.value.stage == "prefix"
