"""The trusted Document Signer Certificates (DSCs) for EU Digital COVID Certificates. Pure.

A DSC is an X.509 certificate; its kid is the first 8 bytes of the SHA-256 of the
certificate's DER (not of the public key, unlike qrgate's own keys). What the gate
keeps of each one: the public key, the validity period, the country, and which kinds
of certificate it may sign. The extended key usage OIDs of the DCC specification
say so: ``1.3.6.1.4.1.1847.2021.1.1`` test, ``.2`` vaccination, ``.3`` recovery
(some early issuers wrote them as ``1.3.6.1.4.1.0.1847.2021.1.x``; both are read).
A DSC that carries none of them may sign every kind, as the specification says.

Supported keys: ECDSA P-256 (ES256), RSA of 2048 bits or more (PS256), Ed25519
(EdDSA). Building a store parses bytes only; reading files is the caller's job
(``provisioning.dcc_trust_list``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from firmware.core.dcc_status import KIND_RECOVERY, KIND_TEST, KIND_VACCINATION, KINDS

KID_BYTES = 8
MAX_DSC_DER_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
EKU_KINDS = {
    "1.3.6.1.4.1.1847.2021.1.1": KIND_TEST,
    "1.3.6.1.4.1.1847.2021.1.2": KIND_VACCINATION,
    "1.3.6.1.4.1.1847.2021.1.3": KIND_RECOVERY,
    "1.3.6.1.4.1.0.1847.2021.1.1": KIND_TEST,
    "1.3.6.1.4.1.0.1847.2021.1.2": KIND_VACCINATION,
    "1.3.6.1.4.1.0.1847.2021.1.3": KIND_RECOVERY,
}


def dsc_kid(der: bytes) -> bytes:
    """The DCC kid of a certificate: SHA-256 of its DER, first 8 bytes."""
    return hashlib.sha256(der).digest()[:KID_BYTES]


@dataclass(frozen=True)
class Dsc:
    """One trusted Document Signer Certificate.

    Attributes:
        kid: the key id certificates signed by it carry (see ``dsc_kid``).
        country: the country the trust list filed it under (or the subject's C), "" if unknown.
        key: its public key (EC P-256, RSA or Ed25519).
        not_before_s, not_after_s: its validity period, Unix seconds.
        kinds: the certificate kinds (``v``, ``t``, ``r``) it may sign.
        der: the certificate DER.
        subject: its subject name (RFC 4514), for listings.
    """

    kid: bytes
    country: str
    key: Any
    not_before_s: float
    not_after_s: float
    kinds: frozenset[str]
    der: bytes
    subject: str

    @property
    def key_type(self) -> str:
        """``EC P-256``, ``RSA <bits>`` or ``Ed25519``."""
        if isinstance(self.key, rsa.RSAPublicKey):
            return f"RSA {self.key.key_size}"
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            return "Ed25519"
        return "EC P-256"


class DscError(ValueError):
    """A certificate cannot be trusted as a DSC; the message says why."""


def _key_problem(key: Any) -> str | None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if isinstance(key.curve, ec.SECP256R1) else f"EC curve {key.curve.name} is not P-256"
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= MIN_RSA_BITS else f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return f"{type(key).__name__.lstrip('_')} keys are not used by DCC signers"


def _oid_der(dotted: str) -> bytes:
    """The DER encoding (tag, length, body) of an OID with small arcs and base-128 large ones."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


_EKU_DER = {_oid_der(oid): kind for oid, kind in EKU_KINDS.items()}


def _kinds(cert: x509.Certificate, der: bytes) -> frozenset[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset(KINDS)
    except ValueError:
        # Extensions that cryptography refuses (an empty EKU sequence, as in the EU test
        # vector CO15): look for the DCC OIDs' encodings; none found means no restriction.
        found = frozenset(kind for encoded, kind in _EKU_DER.items() if encoded in der)
        return found or frozenset(KINDS)
    found = frozenset(EKU_KINDS[oid.dotted_string] for oid in eku if oid.dotted_string in EKU_KINDS)
    return found or frozenset(KINDS)


def _subject_country(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else ""


def parse_dsc(der: bytes, country: str | None = None, kid: bytes | None = None) -> Dsc:
    """Parse one DSC from its DER.

    Args:
        der: the certificate DER.
        country: the country the list gave it (default: the subject's C attribute).
        kid: the kid the list gave it; when given it must equal ``dsc_kid(der)``.

    Raises:
        DscError: not a certificate, an unsupported key, or a kid that does not match.
    """
    if not isinstance(der, (bytes, bytearray)) or not der or len(der) > MAX_DSC_DER_BYTES:
        raise DscError(f"a certificate is 1 to {MAX_DSC_DER_BYTES} bytes of DER")
    der = bytes(der)
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        not_before = cert.not_valid_before_utc.timestamp()
        not_after = cert.not_valid_after_utc.timestamp()
        kinds = _kinds(cert, der)
        subject = cert.subject.rfc4514_string()
        subject_country = _subject_country(cert)
    except (ValueError, TypeError) as err:
        raise DscError(f"not a readable X.509 certificate ({type(err).__name__})") from err
    problem = _key_problem(key)
    if problem:
        raise DscError(problem)
    own_kid = dsc_kid(der)
    if kid is not None and bytes(kid) != own_kid:
        raise DscError(f"kid {bytes(kid).hex()} given by the list does not match the certificate ({own_kid.hex()})")
    if not (math.isfinite(not_before) and math.isfinite(not_after)) or not_after < not_before:
        raise DscError("validity period ends before it starts")
    return Dsc(kid=own_kid, country=(country or subject_country or "").upper(), key=key,
               not_before_s=not_before, not_after_s=not_after, kinds=kinds, der=der, subject=subject)


class DscStore:
    """An immutable set of trusted DSCs, looked up by kid. Several may share a kid; all are tried.

    Usage: ``DscStore([parse_dsc(der) ...])`` then ``store.for_kid(kid)``.

    Attributes:
        installed_at_s: when the list was issued or installed (Unix seconds), if known;
            the rules may refuse certificates while the list is older than allowed.
        version: the installed list's version (0 if unknown); updates must go above it.
    """

    __slots__ = ("_by_kid", "_all", "installed_at_s", "version")

    def __init__(self, dscs: Iterable[Dsc] = (), installed_at_s: float | None = None, version: int = 0) -> None:
        self.installed_at_s = installed_at_s
        self.version = version
        by_kid: dict[bytes, list[Dsc]] = {}
        seen: set[bytes] = set()
        kept: list[Dsc] = []
        for dsc in dscs:
            if dsc.der in seen:
                continue
            seen.add(dsc.der)
            kept.append(dsc)
            by_kid.setdefault(dsc.kid, []).append(dsc)
        self._by_kid = {kid: tuple(items) for kid, items in by_kid.items()}
        self._all = tuple(kept)

    @classmethod
    def from_ders(cls, ders: Iterable[bytes]) -> DscStore:
        """Build a store from certificate DERs.

        Raises:
            DscError: one of them is not a usable DSC.
        """
        return cls(parse_dsc(der) for der in ders)

    def for_kid(self, kid: bytes) -> tuple[Dsc, ...]:
        """The DSCs with this kid (empty if none)."""
        return self._by_kid.get(bytes(kid), ())

    def all(self) -> tuple[Dsc, ...]:
        """Every DSC, in the order given."""
        return self._all

    def countries(self) -> list[str]:
        """The countries of the DSCs, sorted, without repeats."""
        return sorted({d.country for d in self._all if d.country})

    def __len__(self) -> int:
        return len(self._all)

    def __repr__(self) -> str:
        return f"DscStore({len(self)} DSCs, {', '.join(self.countries())})"


class LiveDscStore:
    """The DSC store in force, swapped whole by the update feature (one writer: the MQTT thread).

    The scan loop reads ``store`` once per code; replacing the reference is atomic.
    """

    def __init__(self, store: DscStore) -> None:
        self.store = store

    def swap(self, store: DscStore) -> None:
        """Put a new store in force."""
        self.store = store
