"""Issue EU Digital COVID Certificates for tests, demos and rehearsals: a CA, DSCs, and signed codes.

NOT an issuing authority: real DCCs are signed by a country's health ministry. This
makes a throw-away signing chain with ``cryptography`` (real X.509 certificates and
real signatures), so the gate can be exercised with certificates of chosen contents.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from firmware.core.credentials import dcc
from firmware.core.credentials.dcc_trust import dsc_kid
from firmware.core.dcc_status import KIND_RECOVERY, KIND_TEST, KIND_VACCINATION

EKU_OIDS = {KIND_TEST: "1.3.6.1.4.1.1847.2021.1.1", KIND_VACCINATION: "1.3.6.1.4.1.1847.2021.1.2",
            KIND_RECOVERY: "1.3.6.1.4.1.1847.2021.1.3"}
COVID19 = "840539006"
PCR = "LP6464-4"
RAPID_ANTIGEN = "LP217198-3"
NOT_DETECTED = "260415000"
DETECTED = "260373001"
COMIRNATY = "EU/1/20/1528"


@dataclass(frozen=True)
class Signer:
    """A DSC and its private key.

    Attributes:
        key: the private key.
        cert: the X.509 certificate.
        der: its DER.
        kid: ``dsc_kid(der)``.
    """

    key: Any
    cert: x509.Certificate
    der: bytes
    kid: bytes

    def pem(self) -> bytes:
        """The certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, hcert: dict[str, Any], *, iat_s: float, exp_s: float, country: str | None = "VN",
             kid_in: str = "protected") -> str:
        """Return the ``HC1:`` text of hcert signed by this DSC."""
        return dcc.encode(hcert, self.key, self.kid, iat_s=int(iat_s), exp_s=int(exp_s), country=country,
                          kid_in=kid_in)


def new_key(key_type: str = "ec") -> Any:
    """A private key: ``ec`` (P-256), ``rsa`` (2048 bits) or ``ed25519``."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _sign_cert(builder: x509.CertificateBuilder, issuer_key: Any) -> x509.Certificate:
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def new_ca(country: str = "VN", *, not_before_s: float, not_after_s: float) -> tuple[Any, x509.Certificate]:
    """A self-signed country signing CA (CSCA): (private key, certificate)."""
    key = new_key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"qrgate test CSCA {country}")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(_utc(not_before_s)).not_valid_after(_utc(not_after_s))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True))
    return key, _sign_cert(builder, key)


def new_dsc(ca: tuple[Any, x509.Certificate], *, not_before_s: float, not_after_s: float,
            kinds: Iterable[str] | None = None, key_type: str = "ec", country: str = "VN") -> Signer:
    """A Document Signer Certificate issued by ca.

    Args:
        ca: (private key, certificate) from ``new_ca``.
        not_before_s, not_after_s: its validity, Unix seconds.
        kinds: the kinds to put in its extended key usage (``v``, ``t``, ``r``); None
            leaves the extension out (the DSC may then sign every kind).
        key_type: ``ec``, ``rsa`` or ``ed25519``.
        country: its subject's C.
    """
    ca_key, ca_cert = ca
    key = new_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"qrgate test DSC {country}")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_utc(not_before_s)).not_valid_after(_utc(not_after_s)))
    if kinds is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.ObjectIdentifier(EKU_OIDS[k]) for k in kinds]), critical=False)
    cert = _sign_cert(builder, ca_key)
    der = cert.public_bytes(serialization.Encoding.DER)
    return Signer(key=key, cert=cert, der=der, kid=dsc_kid(der))


def _base(family: str, given: str, dob: str) -> dict[str, Any]:
    def std(text: str) -> str:
        import unicodedata

        plain = unicodedata.normalize("NFKD", text.replace("Đ", "D").replace("đ", "d"))
        plain = "".join(ch for ch in plain if not unicodedata.combining(ch)).upper()
        return "".join(ch if "A" <= ch <= "Z" else "<" for ch in plain)[:80]

    return {"ver": "1.3.0", "nam": {"fn": family, "fnt": std(family), "gn": given, "gnt": std(given)}, "dob": dob}


def vaccination(family: str, given: str, dob: str, *, date: str, dose: int = 2, doses: int = 2,
                product: str = COMIRNATY, ci: str = "URN:UVCI:01:VN:QRGATE0001#A", country: str = "VN") -> dict[str, Any]:
    """A DCC payload with one vaccination entry."""
    cert = _base(family, given, dob)
    cert["v"] = [{"tg": COVID19, "vp": "J07BX03", "mp": product, "ma": "ORG-100030215", "dn": dose, "sd": doses,
                  "dt": date, "co": country, "is": "Ministry of Health of Viet Nam", "ci": ci}]
    return cert


def covid_test(family: str, given: str, dob: str, *, sampled: str, test_type: str = PCR, result: str = NOT_DETECTED,
         ci: str = "URN:UVCI:01:VN:QRGATE0002#B", country: str = "VN") -> dict[str, Any]:
    """A DCC payload with one test entry (``sampled`` is RFC 3339)."""
    cert = _base(family, given, dob)
    cert["t"] = [{"tg": COVID19, "tt": test_type, "sc": sampled, "tr": result, "tc": "Test centre 1",
                  "co": country, "is": "Ministry of Health of Viet Nam", "ci": ci}]
    return cert


def recovery(family: str, given: str, dob: str, *, first_positive: str, valid_from: str, valid_until: str,
             ci: str = "URN:UVCI:01:VN:QRGATE0003#C", country: str = "VN") -> dict[str, Any]:
    """A DCC payload with one recovery entry."""
    cert = _base(family, given, dob)
    cert["r"] = [{"tg": COVID19, "fr": first_positive, "df": valid_from, "du": valid_until, "co": country,
                  "is": "Ministry of Health of Viet Nam", "ci": ci}]
    return cert


def day(seconds: float) -> str:
    """The UTC date of Unix seconds, ``YYYY-MM-DD``."""
    return _utc(seconds).strftime("%Y-%m-%d")


def moment(seconds: float) -> str:
    """Unix seconds as RFC 3339 UTC, ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
