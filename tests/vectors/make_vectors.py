"""Write the stage-by-stage QG1 test vectors into tests/vectors/qg1/ (run by hand; the files are committed).

Usage: .venv/bin/python tests/vectors/make_vectors.py

Each vector is built by hand here with cbor2, cryptography, zlib and the base45
package, not with firmware code, so the vectors check the parser against an
independent encoder. Keys come from fixed seeds; Ed25519 output is reproducible,
ES256 signatures change on every run (ECDSA nonces) but stay valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from pathlib import Path

import base45
import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

OUT = Path(__file__).resolve().parent / "qg1"
NOW = 1_780_000_000  # 2026-05-28T20:26:40Z
STAGES = ("prefix", "base45", "zlib", "cose", "signature", "claims")


def seed_ed(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def seed_p256(label: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(hashlib.sha256(label.encode()).digest(), "big"), ec.SECP256R1())


ISSUER = seed_ed("vector issuer ed25519")
ISSUER_ES = seed_p256("vector issuer p256")
OTHER = seed_ed("vector other issuer")
STRANGER = seed_ed("vector stranger")


def spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def kid(key) -> bytes:
    return hashlib.sha256(spki(key)).digest()[:8]


def claims(over: dict | None = None, **named) -> dict:
    base = {1: "Sở Y tế Hà Nội", 2: "NV-0042", 4: NOW + 30 * 86400, 5: NOW - 86400, 6: NOW - 86400,
            7: bytes.fromhex("00112233445566778899aabbccddeeff"), "name": "NGUYỄN ĐÌNH HÙNG",
            "phone": "0966323123", "hd": NOW - 3600}
    base.update(over or {})
    base.update(named)
    return {k: v for k, v in base.items() if v is not None}


def signature(key, protected: bytes, payload: bytes) -> bytes:
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(to_sign)
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@dataclasses.dataclass
class Msg:
    payload: bytes
    protected: bytes
    unprotected: dict
    sig: bytes
    tag: int | None = 18

    def encode(self) -> bytes:
        arr = [self.protected, self.unprotected, self.payload, self.sig]
        return cbor2.dumps(cbor2.CBORTag(self.tag, arr) if self.tag is not None else arr)


def msg(key=ISSUER, c=None, *, alg=None, kid_value=None, protected=None, unprotected=None, tag=18,
        payload=None) -> Msg:
    alg = alg if alg is not None else (-8 if isinstance(key, ed25519.Ed25519PrivateKey) else -7)
    payload = payload if payload is not None else cbor2.dumps(claims() if c is None else c)
    if protected is None:
        protected = cbor2.dumps({1: alg, 4: kid(key) if kid_value is None else kid_value})
    return Msg(payload, protected, unprotected or {}, signature(key, protected, payload), tag)


def text(message: bytes, compress: bool = True, prefix: str = "QG1:") -> str:
    body = zlib.compress(message, 9) if compress else message
    return prefix + base45.b45encode(body).decode()


def trust(*keys, kid_override: bytes | None = None) -> list[dict]:
    return [{"kid": (kid_override or kid(k)).hex(), "public_key_pem": pem(k)} for k in keys]


def stages(upto: str, failed: bool = True, zlib_state: str = "ok") -> dict:
    out = {}
    reached = True
    for name in STAGES:
        if not reached:
            out[name] = "not_reached"
        elif name == upto:
            out[name] = "failed" if failed else "ok"
            reached = False
        else:
            out[name] = zlib_state if name == "zlib" else "ok"
    return out


def credential(c: dict, key) -> dict:
    def num(k):
        return float(c[k]) if k in c else None
    return {"type": "qg1", "subject": c[2], "name": c.get("name"), "phone": c.get("phone"), "issuer": c.get(1),
            "kid_hex": kid(key).hex(), "issued_at_s": num(6), "not_before_s": num(5), "expires_s": num(4),
            "health_declared_s": num("hd"), "token_id": c[7].hex() if 7 in c else None, "signed": True}


def vectors():
    good = msg()
    c0 = claims()
    yield "valid-ed25519-zlib", "Valid pass, EdDSA, tagged, zlib", text(good.encode()), trust(ISSUER), \
        stages("claims", failed=False), "ok", credential(c0, ISSUER)
    yield "valid-ed25519-plain", "Valid pass, EdDSA, no zlib", text(good.encode(), False), trust(ISSUER), \
        stages("claims", failed=False, zlib_state="absent"), "ok", credential(c0, ISSUER)
    es = msg(ISSUER_ES, tag=None)
    yield "valid-es256-untagged", "Valid pass, ES256 (raw r||s), untagged array", text(es.encode()), \
        trust(ISSUER_ES), stages("claims", failed=False), "ok", credential(c0, ISSUER_ES)
    cwt = cbor2.dumps(cbor2.CBORTag(61, cbor2.CBORTag(18, [good.protected, {}, good.payload, good.sig])))
    yield "valid-cwt-tag-61", "Valid pass wrapped in the CWT tag 61", text(cwt), trust(ISSUER), \
        stages("claims", failed=False), "ok", credential(c0, ISSUER)
    c_exp = claims({4: NOW - 1})
    yield "valid-but-expired", "Signature and claims valid, exp one second before now: the policy denies it", \
        text(msg(c=c_exp).encode()), trust(ISSUER), stages("claims", failed=False), "ok", credential(c_exp, ISSUER)
    c_nbf = claims({5: NOW + 1})
    yield "valid-not-yet", "Signature and claims valid, nbf one second after now: the policy denies it", \
        text(msg(c=c_nbf).encode()), trust(ISSUER), stages("claims", failed=False), "ok", credential(c_nbf, ISSUER)
    c_min = {2: "P1"}
    yield "valid-minimal-claims", "Only sub: no times, no name", text(msg(c=c_min).encode()), trust(ISSUER), \
        stages("claims", failed=False), "ok", credential(c_min, ISSUER)
    shared = b"\x5a" * 8
    yield "valid-shared-kid", "Two trusted keys share a kid; the second one verifies", \
        text(msg(kid_value=shared).encode()), trust(OTHER, kid_override=shared) + trust(ISSUER, kid_override=shared), \
        stages("claims", failed=False), "ok", credential(c0, ISSUER) | {"kid_hex": shared.hex()}

    yield "prefix-hc1", "EU DCC prefix, not ours", text(good.encode(), prefix="HC1:"), trust(ISSUER), \
        stages("prefix"), "unknown_format", None
    yield "prefix-lowercase", "Prefix in lower case", text(good.encode(), prefix="qg1:"), trust(ISSUER), \
        stages("prefix"), "unknown_format", None
    t = text(good.encode())
    yield "base45-lowercase", "Body in lower case (outside the alphabet)", "QG1:" + t[4:].lower(), trust(ISSUER), \
        stages("base45"), "malformed", None
    pad = "0" * ((1 - len(t[4:]) % 3) % 3)
    yield "base45-extra-char", "Extra characters making the length 3n+1", t + pad, trust(ISSUER), stages("base45"), \
        "malformed", None
    yield "base45-overflow", "A triple over 65535", "QG1:" + ":::" + t[7:], trust(ISSUER), stages("base45"), \
        "malformed", None
    yield "base45-newline", "Trailing newline", t + "\n", trust(ISSUER), stages("base45"), "malformed", None
    z = bytearray(zlib.compress(good.encode(), 9))
    z[-1] ^= 1
    yield "zlib-bad-checksum", "Adler-32 checksum flipped", "QG1:" + base45.b45encode(bytes(z)).decode(), \
        trust(ISSUER), stages("zlib"), "malformed", None
    bomb = zlib.compress(b"\xa0" * (1024 * 1024), 9)
    yield "zlib-bomb", "Inflates to 1 MiB, over the 16 KiB cap", "QG1:" + base45.b45encode(bomb).decode(), \
        trust(ISSUER), stages("zlib"), "malformed", None
    yield "zlib-trailing-data", "Bytes after the end of the zlib stream", \
        "QG1:" + base45.b45encode(zlib.compress(good.encode()) + b"\x00\x00").decode(), trust(ISSUER), \
        stages("zlib"), "malformed", None
    yield "zlib-truncated", "zlib stream cut short", \
        "QG1:" + base45.b45encode(zlib.compress(good.encode())[:-6]).decode(), trust(ISSUER), stages("zlib"), \
        "malformed", None
    yield "cose-not-array", "A CBOR map instead of COSE_Sign1", text(cbor2.dumps(c0)), trust(ISSUER), \
        stages("cose", zlib_state="ok"), "malformed", None
    yield "cose-trailing-bytes", "A byte after the COSE message", text(good.encode() + b"\x00"), trust(ISSUER), \
        stages("cose"), "malformed", None
    yield "cose-truncated", "COSE message cut short", text(good.encode()[:-10]), trust(ISSUER), stages("cose"), \
        "malformed", None
    yield "cose-wrong-tag", "Tag 17 (COSE_Mac0) instead of 18", \
        text(cbor2.dumps(cbor2.CBORTag(17, [good.protected, {}, good.payload, good.sig]))), trust(ISSUER), \
        stages("cose"), "malformed", None
    p_noalg = cbor2.dumps({4: kid(ISSUER)})
    yield "alg-unprotected-only", "alg only in the unprotected header (signature otherwise valid)", \
        text(msg(protected=p_noalg, unprotected={1: -8}).encode()), trust(ISSUER), stages("cose"), \
        "bad_signature", None
    yield "kid-unprotected-only", "kid only in the unprotected header", \
        text(msg(protected=cbor2.dumps({1: -8}), unprotected={4: kid(ISSUER)}).encode()), trust(ISSUER), \
        stages("cose"), "bad_signature", None
    yield "alg-es384", "alg -35 (ES384) is not accepted", \
        text(msg(ISSUER_ES, protected=cbor2.dumps({1: -35, 4: kid(ISSUER_ES)})).encode()), trust(ISSUER_ES), \
        stages("cose"), "bad_signature", None
    yield "alg-mismatch", "Header says ES256, the key and signature are Ed25519", \
        text(msg(protected=cbor2.dumps({1: -7, 4: kid(ISSUER)})).encode()), trust(ISSUER), stages("signature"), \
        "bad_signature", None
    yield "crit-header", "A crit header (no critical extension is understood)", \
        text(msg(protected=cbor2.dumps({1: -8, 4: kid(ISSUER), 2: [99], 99: True})).encode()), trust(ISSUER), \
        stages("cose"), "bad_signature", None
    yield "unknown-kid", "Signed by a key the device does not trust", text(msg(STRANGER).encode()), trust(ISSUER), \
        stages("signature"), "unknown_issuer", None
    forged = msg(STRANGER, kid_value=kid(ISSUER))
    yield "wrong-key-trusted-kid", "Signed by another key under a trusted kid", text(forged.encode()), \
        trust(ISSUER), stages("signature"), "bad_signature", None
    flipped = dataclasses.replace(good, sig=bytes([good.sig[0] ^ 1]) + good.sig[1:])
    yield "signature-bit-flip", "One bit of the signature flipped", text(flipped.encode()), trust(ISSUER), \
        stages("signature"), "bad_signature", None
    short = dataclasses.replace(good, sig=good.sig[:63])
    yield "signature-truncated", "63-byte signature", text(short.encode()), trust(ISSUER), stages("cose"), \
        "bad_signature", None
    tampered = dataclasses.replace(good, payload=cbor2.dumps(claims({4: NOW + 3650 * 86400})))
    yield "claims-tampered", "exp extended after signing", text(tampered.encode()), trust(ISSUER), \
        stages("signature"), "bad_signature", None
    yield "claims-no-sub", "Signed claims without sub", text(msg(c=claims({2: None})).encode()), trust(ISSUER), \
        stages("claims"), "malformed", None
    yield "claims-not-a-map", "Signed payload is an array", text(msg(payload=cbor2.dumps([2, "P1"])).encode()), \
        trust(ISSUER), stages("claims"), "malformed", None
    deep: object = 0
    for _ in range(40):
        deep = [deep]
    yield "claims-deep-nesting", "Signed claims nested 40 deep", text(msg(c=claims(deep=deep)).encode()), \
        trust(ISSUER), stages("claims"), "malformed", None
    yield "claims-exp-text", "exp as text", text(msg(c=claims({4: "2027-01-01"})).encode()), trust(ISSUER), \
        stages("claims"), "malformed", None


def opened(payload: str) -> dict:
    """Intermediate bytes as hex, as far as they can be computed independently."""
    out: dict = {}
    if not payload.startswith("QG1:"):
        return out
    try:
        raw = base45.b45decode(payload[4:])
    except ValueError:
        return out
    if payload[4:].endswith("\n"):
        return out  # the base45 package strips it; ours refuses it
    out["base45_hex"] = raw.hex()
    if raw[:1] == b"\x78":
        try:
            d = zlib.decompressobj()
            inflated = d.decompress(raw, 16 * 1024 + 1)
            if d.eof and not d.unused_data and len(inflated) <= 16 * 1024:
                out["cose_hex"] = inflated.hex()
        except zlib.error:
            pass
    else:
        out["cose_hex"] = raw.hex()
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for n, (name, description, payload, keys, expected_stages, reason, cred) in enumerate(vectors(), 1):
        doc = {
            "description": description,
            "context": {"now_s": NOW, "trusted_keys": keys},
            "payload": payload,
            "intermediate": opened(payload),
            "expected": {"stages": expected_stages, "reason": reason, "credential": cred,
                         "expired_at_now": None if cred is None or cred["expires_s"] is None
                         else cred["expires_s"] <= NOW},
        }
        path = OUT / f"{n:02d}-{name}.json"
        path.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(path.name)


if __name__ == "__main__":
    main()
