"""The HC1 plugin against the EU's public DCC test vectors and against certificates we sign ourselves."""

from __future__ import annotations

import base64
import datetime as dt
import json
import zlib
from pathlib import Path

import cbor2
import pytest

from firmware.core.credentials import check_payload, dcc, dcc_issue
from firmware.core.credentials.dcc_schema import SchemaError, validate
from firmware.core.credentials.dcc_trust import DscError, DscStore, dsc_kid, parse_dsc
from firmware.core.credentials.envelope import b45encode
from firmware.core.credentials.trust import TrustStore
from firmware.core.model import Credential, CredentialType, Reason, Rejection

DATA = Path(__file__).parent / "data" / "dcc-testdata"
CASES = sorted(DATA.glob("*/2DCode/raw/*.json"))
NOW = 1_800_000_000.0  # 2027-01-15
DAY = 86400.0


def _case_id(path: Path) -> str:
    return f"{path.parents[2].name}/{path.stem}"


def _clock(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _store_for(case: dict) -> DscStore:
    return DscStore([parse_dsc(base64.b64decode(case["TESTCTX"]["CERTIFICATE"]))])


def test_the_shipped_vectors_are_all_there_with_their_licence():
    assert len(CASES) == 42  # 38 common + 4 DE
    assert "Apache License" in (DATA / "LICENSE").read_text()
    assert (DATA / "NOTICE").is_file() and (DATA / "README.md").is_file()


@pytest.mark.parametrize("path", CASES, ids=_case_id)
def test_every_shipped_vector_agrees_with_every_expected_result(path: Path):
    case = json.loads(path.read_text(encoding="utf-8"))
    expected = case["EXPECTEDRESULTS"]
    inspection = dcc.inspect(case["PREFIX"].encode("ascii"), _store_for(case))
    stages = inspection.stages
    checked = 0

    def agree(key: str, actual: bool) -> None:
        nonlocal checked
        if key in expected:
            checked += 1
            assert actual is expected[key], f"{key}: stages {stages}, result {inspection.result}"

    agree("EXPECTEDUNPREFIX", stages["prefix"] == "ok")
    agree("EXPECTEDB45DECODE", stages["base45"] == "ok")
    agree("EXPECTEDCOMPRESSION", stages["zlib"] == "ok")
    agree("EXPECTEDDECODE", stages["cose"] == "ok" and stages["cwt"] == "ok")
    agree("EXPECTEDVERIFY", stages["signature"] == "ok")
    agree("EXPECTEDSCHEMAVALIDATION", stages["schema"] == "ok")
    agree("EXPECTEDKEYUSAGE", stages["key_usage"] == "ok")
    if "EXPECTEDEXPIRATIONCHECK" in expected:
        now_s = _clock(case["TESTCTX"]["VALIDATIONCLOCK"])
        status = inspection.status
        agree("EXPECTEDEXPIRATIONCHECK", status is not None and dcc.check_times(status, now_s) is None)
    if "EXPECTEDVALIDJSON" in expected:
        agree("EXPECTEDVALIDJSON", inspection.hcert is not None and dict(inspection.hcert) == case["JSON"])
    has_picture = "2DCODE" in case or (path.parents[1] / "png" / f"{path.stem}.png").is_file()
    if "EXPECTEDPICTUREDECODE" in expected and has_picture:
        agree("EXPECTEDPICTUREDECODE", _picture_text(path, case) == case["PREFIX"])
    # A case that verifies end to end comes out as a DCC credential, and nothing else does.
    if isinstance(inspection.result, Credential):
        assert all(v == "ok" for v in stages.values())
        assert inspection.result.type is CredentialType.DCC
    # Every expected result is checked, except a picture decode where the case ships no picture (B1).
    assert checked == sum(1 for k in expected if k != "EXPECTEDPICTUREDECODE" or has_picture), sorted(expected)


def _picture_text(path: Path, case: dict) -> str | None:
    """The text a QR decoder reads from the case's picture (the PNG beside it, or 2DCODE)."""
    import tempfile

    from device.camera import load_grey_image
    from device.decoders import make_decoder
    from firmware.core.model import Frame

    png = path.parents[1] / "png" / f"{path.stem}.png"
    with tempfile.TemporaryDirectory() as tmp:
        if not png.is_file():
            png = Path(tmp) / "code.png"
            png.write_bytes(base64.b64decode(case["2DCODE"]))
        try:
            pixels = load_grey_image(png)
        except OSError:  # Q1: the picture itself is unreadable
            return None
        codes = make_decoder("zxing").decode(Frame(pixels=pixels, captured_mono_s=0.0))
    return codes[0].payload.decode("ascii", "replace") if codes else None


# --- certificates of chosen contents, signed by our own test CA and DSCs -------------------------

@pytest.fixture(scope="module")
def ca():
    return dcc_issue.new_ca(not_before_s=NOW - 400 * DAY, not_after_s=NOW + 3000 * DAY)


@pytest.fixture(scope="module")
def signer(ca):
    return dcc_issue.new_dsc(ca, not_before_s=NOW - 365 * DAY, not_after_s=NOW + 365 * DAY)


def _vaccinated(**overrides):
    args = dict(date=dcc_issue.day(NOW - 60 * DAY))
    args.update(overrides)
    return dcc_issue.vaccination("Nguyễn", "Văn An", "1990-04-30", **args)


def _sign(signer, hcert=None, **kw):
    kw.setdefault("iat_s", NOW - DAY)
    kw.setdefault("exp_s", NOW + 300 * DAY)
    return signer.sign(hcert or _vaccinated(), **kw).encode("ascii")


@pytest.mark.parametrize("key_type", ["ec", "rsa", "ed25519"])
def test_a_certificate_signed_by_a_trusted_dsc_verifies_with_each_algorithm(ca, key_type):
    dsc = dcc_issue.new_dsc(ca, not_before_s=NOW - DAY, not_after_s=NOW + DAY, key_type=key_type)
    result = dcc.check(_sign(dsc, iat_s=NOW - 60, exp_s=NOW + 3600), DscStore([parse_dsc(dsc.der)]))
    assert isinstance(result, Credential), result
    assert result.type is CredentialType.DCC and result.signed
    assert result.subject == "URN:UVCI:01:VN:QRGATE0001#A"
    assert result.name == "Nguyễn Văn An" and result.issuer == "VN"
    assert result.kid_hex == dsc.kid.hex()
    status = result.dcc
    assert status is not None and status.kind == "v" and status.dose_number == 2 and status.total_doses == 2
    assert status.product == dcc_issue.COMIRNATY and status.birth_year == "1990"
    assert dcc.check_times(status, NOW) is None


def test_the_kid_is_the_hash_of_the_certificate_der(signer):
    assert parse_dsc(signer.der).kid == dsc_kid(signer.der) == signer.kid


def test_a_forged_signature_is_refused(ca, signer):
    forger = dcc_issue.new_dsc(ca, not_before_s=NOW - DAY, not_after_s=NOW + DAY)
    forged = dcc.encode(_vaccinated(), forger.key, signer.kid, iat_s=int(NOW), exp_s=int(NOW + DAY))
    result = dcc.check(forged.encode(), DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Rejection) and result.reason is Reason.BAD_SIGNATURE


def test_a_changed_payload_no_longer_verifies(signer):
    parts = _parts(_sign(signer))
    claims = cbor2.loads(parts[2])
    claims[-260][1]["v"][0]["dn"] = 3
    parts[2] = cbor2.dumps(claims)
    tampered = _code(parts)
    result = dcc.check(tampered, DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Rejection) and result.reason is Reason.BAD_SIGNATURE


def _b45(payload: bytes) -> bytes:
    from firmware.core.credentials.envelope import b45decode

    return b45decode(payload[4:])


def _parts(code: bytes) -> list:
    """The four items of the COSE_Sign1 inside an HC1 code, as a list to edit."""
    return list(cbor2.loads(zlib.decompress(_b45(code))).value)


def _code(parts: list) -> bytes:
    return b"HC1:" + b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(18, parts)))).encode()


def test_an_unknown_signer_is_unknown_issuer(signer):
    result = dcc.check(_sign(signer), DscStore())
    assert isinstance(result, Rejection) and result.reason is Reason.UNKNOWN_ISSUER


@pytest.mark.parametrize(("dsc_kinds", "cert_kind", "admitted"), [
    (("v",), "v", True), (("t",), "v", False), (("r",), "t", False), (("t", "r"), "r", True), (None, "t", True),
])
def test_the_dsc_key_usage_decides_which_kinds_it_may_sign(ca, dsc_kinds, cert_kind, admitted):
    dsc = dcc_issue.new_dsc(ca, not_before_s=NOW - DAY, not_after_s=NOW + DAY, kinds=dsc_kinds)
    hcert = {"v": _vaccinated(),
             "t": dcc_issue.covid_test("Lê", "Tám", "1980", sampled=dcc_issue.moment(NOW - 3600)),
             "r": dcc_issue.recovery("Lê", "Tám", "1980", first_positive="2026-12-01", valid_from="2026-12-12",
                                     valid_until="2027-06-01")}[cert_kind]
    result = dcc.check(_sign(dsc, hcert), DscStore([parse_dsc(dsc.der)]))
    if admitted:
        assert isinstance(result, Credential)
    else:
        assert isinstance(result, Rejection) and result.reason is Reason.DCC_KEY_USAGE


def test_a_kid_only_in_the_unprotected_header_is_accepted_as_the_spec_requires(signer):
    result = dcc.check(_sign(signer, kid_in="unprotected"), DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Credential)


def test_a_wrong_protected_kid_is_not_rescued_by_a_right_unprotected_one(signer):
    parts = _parts(_sign(signer, kid_in="both"))
    header = dict(cbor2.loads(parts[0]))
    header[4] = b"\x00" * 8
    parts[0] = cbor2.dumps(header)
    payload = _code(parts)
    result = dcc.check(payload, DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Rejection) and result.reason is Reason.UNKNOWN_ISSUER


@pytest.mark.parametrize(("now_s", "reason"), [
    (NOW - 2 * DAY, Reason.NOT_YET_VALID),           # before iat
    (NOW + 300 * DAY, Reason.EXPIRED),               # exp
    (NOW + 366 * DAY, Reason.EXPIRED),               # after exp and the DSC
    (NOW, None),
])
def test_times_are_checked_against_the_clock(signer, now_s, reason):
    result = dcc.check(_sign(signer), DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Credential) and result.dcc is not None
    assert dcc.check_times(result.dcc, now_s) is reason


def test_a_dsc_that_has_expired_or_postdates_iat_is_refused(ca):
    short = dcc_issue.new_dsc(ca, not_before_s=NOW - 10 * DAY, not_after_s=NOW - DAY)
    result = dcc.check(_sign(short, iat_s=NOW - 5 * DAY, exp_s=NOW + 30 * DAY), DscStore([parse_dsc(short.der)]))
    assert isinstance(result, Credential) and result.dcc is not None
    assert dcc.check_times(result.dcc, NOW) is Reason.DCC_SIGNER_NOT_VALID
    late = dcc_issue.new_dsc(ca, not_before_s=NOW - DAY, not_after_s=NOW + 30 * DAY)
    result = dcc.check(_sign(late, iat_s=NOW - 5 * DAY, exp_s=NOW + 20 * DAY), DscStore([parse_dsc(late.der)]))
    assert isinstance(result, Credential) and result.dcc is not None
    assert dcc.check_times(result.dcc, NOW) is Reason.DCC_SIGNER_NOT_VALID


def test_check_payload_recognises_hc1_and_keeps_the_other_formats(signer):
    store = DscStore([parse_dsc(signer.der)])
    assert isinstance(check_payload(_sign(signer), TrustStore(), dcc_trust=store), Credential)
    without = check_payload(_sign(signer), TrustStore())
    assert isinstance(without, Rejection) and without.reason is Reason.UNKNOWN_ISSUER
    assert without.type is CredentialType.DCC
    other = check_payload(b"HC2:ABC", TrustStore(), dcc_trust=store)
    assert isinstance(other, Rejection) and other.reason is Reason.UNKNOWN_FORMAT


def test_an_uncompressed_code_is_malformed(signer):
    message = zlib.decompress(_b45(_sign(signer)))
    result = dcc.check(b"HC1:" + b45encode(message).encode(), DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Rejection) and result.reason is Reason.MALFORMED


def test_missing_exp_is_malformed(signer):
    parts = _parts(_sign(signer))
    claims = cbor2.loads(parts[2])
    del claims[4]
    payload = cbor2.dumps(claims)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from firmware.core.cose import sig_structure

    r, s = decode_dss_signature(signer.key.sign(sig_structure(parts[0], payload), ec.ECDSA(hashes.SHA256())))
    parts[2], parts[3] = payload, r.to_bytes(32, "big") + s.to_bytes(32, "big")
    code = _code(parts)
    inspection = dcc.inspect(code, DscStore([parse_dsc(signer.der)]))
    assert inspection.stages["signature"] == "ok" and inspection.stages["cwt"] == "failed"
    assert isinstance(inspection.result, Rejection) and inspection.result.reason is Reason.MALFORMED


def _valid_hcert() -> dict:
    return _vaccinated()


@pytest.mark.parametrize(("change", "problem"), [
    (lambda c: c.update(t=[{}]), "exactly one of v, t, r"),
    (lambda c: c.pop("v"), "exactly one of v, t, r"),
    (lambda c: c["v"].append(dict(c["v"][0])), "exactly one entry"),
    (lambda c: c["v"][0].update(dn=0), "v[0].dn"),
    (lambda c: c["v"][0].update(sd=10), "v[0].sd"),
    (lambda c: c["v"][0].update(dn=True), "v[0].dn"),
    (lambda c: c["v"][0].update(dt="2021-02-30"), "v[0].dt"),
    (lambda c: c["v"][0].pop("mp"), "v[0].mp is required"),
    (lambda c: c["v"][0].update(ci="X" * 81), "v[0].ci"),
    (lambda c: c["nam"].pop("fnt"), "nam.fnt is required"),
    (lambda c: c["nam"].update(fnt="nguyen"), "nam.fnt"),
    (lambda c: c.update(dob="1890-01-01"), "dob"),
    (lambda c: c.update(dob="1990-13"), "dob"),
    (lambda c: c.update(ver="2.0.0"), "ver"),
    (lambda c: c.update(ver=1), "ver"),
])
def test_the_schema_check_refuses_what_the_dcc_schema_refuses(change, problem):
    cert = _valid_hcert()
    change(cert)
    with pytest.raises(SchemaError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        validate(cert)


@pytest.mark.parametrize("dob", ["", "1990", "1990-04", "1990-04-30"])
def test_the_schema_accepts_partial_birth_dates(dob):
    cert = _valid_hcert()
    cert["dob"] = dob
    assert validate(cert) == "v"


def test_a_test_entry_sample_time_must_be_rfc3339():
    cert = dcc_issue.covid_test("A", "B", "1990", sampled="2021-02-20 12:34")
    with pytest.raises(SchemaError, match=r"t\[0\].sc"):
        validate(cert)


def test_a_schema_failure_is_malformed_even_when_the_signature_verifies(signer):
    cert = _vaccinated()
    cert["t"] = [dict(dcc_issue.covid_test("A", "B", "1990", sampled="2026-01-01T00:00:00Z")["t"][0])]
    result = dcc.check(_sign(signer, cert), DscStore([parse_dsc(signer.der)]))
    assert isinstance(result, Rejection) and result.reason is Reason.MALFORMED and "schema" in result.detail


@pytest.mark.parametrize("payload", [
    b"HC1:", b"HC1:A", b"HC1:" + b"A" * 9000, b"HC1:%%%", b"HC1:" + b45encode(b"\x78\x9c\x03\x00").encode(),
    b"HC1:" + b45encode(zlib.compress(b"\xd2\x84")).encode(),
    b"HC1:" + b45encode(zlib.compress(b"\x00" * 20000)).encode(),
    b"HC1:" + b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])))).encode(),
    b"HC1:" + b45encode(zlib.compress(cbor2.dumps([cbor2.dumps({1: -7, 2: [1]}), {}, b"", b"x" * 64]))).encode(),
    b"HC1:" + b45encode(zlib.compress(cbor2.dumps([cbor2.dumps({1: -257}), {4: b"k"}, b"", b"x" * 64]))).encode(),
    b"HC1:" + b45encode(zlib.compress(cbor2.dumps([cbor2.dumps({1: -7}), {4: b"k"}, b"\xa0", b"x" * 64]))).encode(),
])
def test_hostile_codes_are_refused_with_a_reason(payload):
    result = check_payload(payload, TrustStore(), dcc_trust=DscStore())
    assert isinstance(result, Rejection)
    assert result.reason in (Reason.MALFORMED, Reason.BAD_SIGNATURE, Reason.UNKNOWN_ISSUER)
    assert "internal" not in result.detail


def test_a_non_certificate_or_a_weak_key_is_not_a_dsc(ca):
    with pytest.raises(DscError):
        parse_dsc(b"\x30\x03\x02\x01\x01")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "p384")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
            .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)).sign(key, hashes.SHA384()))
    with pytest.raises(DscError, match="P-256"):
        parse_dsc(cert.public_bytes(serialization.Encoding.DER))


def test_a_list_kid_that_does_not_match_the_certificate_is_refused(signer):
    with pytest.raises(DscError, match="does not match"):
        parse_dsc(signer.der, kid=b"\x01" * 8)


def test_seeded_mutations_of_a_valid_certificate_are_never_accepted_as_anything_else(ca):
    """8,000 mutations at the text, zlib and COSE layers: a refusal with a reason, or the unchanged certificate."""
    import random

    from firmware.core.credentials.envelope import BASE45_ALPHABET, b45decode

    dsc = dcc_issue.new_dsc(ca, not_before_s=NOW - DAY, not_after_s=NOW + DAY, kinds=("v",))
    store = DscStore([parse_dsc(dsc.der)])
    code = _sign(dsc, iat_s=NOW - 60, exp_s=NOW + 3600)
    original = dcc.check(code, store)
    assert isinstance(original, Credential)
    compressed = b45decode(code[4:])
    message = zlib.decompress(compressed)
    layers = [(code[4:], lambda b: b"HC1:" + b), (compressed, lambda b: b"HC1:" + b45encode(b).encode()),
              (message, lambda b: b"HC1:" + b45encode(zlib.compress(b)).encode())]
    alphabet = BASE45_ALPHABET.encode()
    rng = random.Random(15)
    reasons: dict[str, int] = {}
    unchanged = 0
    for _ in range(8_000):
        source, rebuild = layers[rng.randrange(3)]
        data = bytearray(source)
        for _ in range(rng.choice((1, 1, 2, 4))):
            pos = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos] = rng.choice(alphabet) if source is code[4:] else rng.randrange(256)
            elif op == 2:
                del data[pos:pos + rng.randrange(1, 6)]
            else:
                data.insert(pos, rng.randrange(256))
        result = check_payload(rebuild(bytes(data)), TrustStore(), dcc_trust=store)
        if isinstance(result, Credential):
            assert result == original and result.dcc == original.dcc
            unchanged += 1
        else:
            assert "internal" not in result.detail
            reasons[result.reason.value] = reasons.get(result.reason.value, 0) + 1
    assert {"malformed", "bad_signature"} <= set(reasons), reasons
    assert unchanged < 80, unchanged  # deflate slack and unprotected-header bytes only
