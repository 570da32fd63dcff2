"""The DCC trust list as data: the signed update message (``[manifest, body]``), and the JSON
DSC list format (``[{"kid", "country", "rawData"}]``). Pure.

Message: the CBOR array ``[manifest, body]``. ``manifest`` is a COSE_Sign1 by a **remote
command key** over ``{t: "qrgate.dcc-trust/1", version, iat, exp (at most 7 days after iat),
sha256 (of body), venue_id (required on the venue topic), device_id?, transaction?}``;
``body`` is zlib'd JSON, the DSC list format that ``qrgate keys dcc import`` reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any

import cbor2

from firmware.core.cose import CoseError, loads_strict, sign1, verify1
from firmware.core.credentials.dcc_trust import Dsc, DscError, parse_dsc
from firmware.core.credentials.trust import TrustStore
from firmware.core.list_message import MAX_VALIDITY_S, open_signed_body, unverified_transaction
from firmware.core.numbers import MAX_LIST_VERSION, is_time_s

KIND = "dcc"


TRUST_TYPE = "qrgate.dcc-trust/1"


MAX_BODY_BYTES = 16 * 1024 * 1024


class TrustMessageError(ValueError):
    """A trust-list message was refused. ``reason`` is a short word, ``detail`` the explanation."""

    def __init__(self, reason: str, detail: str, transaction: str | None = None) -> None:
        self.reason, self.detail, self.transaction = reason, detail, transaction
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class TrustMessage:
    """A verified trust-list message."""

    version: int
    issued_at_s: int
    expires_s: int
    body_json: bytes
    transaction: str | None
    venue_id: str | None


def encode_trust_message(private_key: Any, *, list_json: bytes, version: int, now_s: float,
                         valid_s: int = 3600, venue_id: str | None = None, device_id: str | None = None,
                         transaction: str | None = None) -> bytes:
    """Build a signed trust-list message carrying a JSON DSC list."""
    body = zlib.compress(list_json, 6)
    claims: dict[str, Any] = {"t": TRUST_TYPE, "version": int(version), "iat": int(now_s),
                              "exp": int(now_s) + int(valid_s), "sha256": hashlib.sha256(body).digest()}
    if venue_id:
        claims["venue_id"] = venue_id
    if device_id:
        claims["device_id"] = device_id
    if transaction:
        claims["transaction"] = transaction
    return cbor2.dumps([sign1(cbor2.dumps(claims), private_key), body])


def decode_trust_message(payload: bytes, keys: TrustStore, *, device_id: str, venue_id: str, now_s: float,
                         venue_topic: bool) -> TrustMessage:
    """Verify a trust-list message. Pure.

    Raises:
        TrustMessageError: ``unsigned``, ``malformed``, ``unknown_issuer``, ``bad_signature``,
            ``expired``, ``not_yet_valid``, ``wrong_device`` or ``wrong_venue``.
    """
    try:
        outer = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as err:
        raise TrustMessageError("unsigned", f"not a signed trust-list message ({type(err).__name__})") from err
    if not isinstance(outer, (list, tuple)) or len(outer) != 2 or not all(isinstance(p, bytes) for p in outer):
        raise TrustMessageError("unsigned", "expected the CBOR array [COSE_Sign1 manifest, body]")
    manifest, body = outer
    try:
        claims = loads_strict(verify1(manifest, keys.keys_for).payload, "manifest")
    except CoseError as err:
        raise TrustMessageError(err.reason.value, err.detail, unverified_transaction(manifest)) from err
    if not isinstance(claims, dict) or claims.get("t") != TRUST_TYPE:
        raise TrustMessageError("malformed", f"manifest type is not {TRUST_TYPE}")
    transaction = claims.get("transaction") if isinstance(claims.get("transaction"), str) else None

    def fail(reason: str, detail: str) -> TrustMessageError:
        return TrustMessageError(reason, detail, transaction)

    version, iat, exp = claims.get("version"), claims.get("iat"), claims.get("exp")
    if type(version) is not int or not 1 <= version <= MAX_LIST_VERSION:
        raise fail("malformed", f"version missing or outside 1..{MAX_LIST_VERSION}")
    if (type(iat) is not int or type(exp) is not int or not is_time_s(iat) or not is_time_s(exp)
            or not 0 < exp - iat <= MAX_VALIDITY_S):
        raise fail("malformed", "iat/exp missing, outside 2001-2100, or valid for more than 7 days")
    if claims.get("device_id") not in (None, device_id):
        raise fail("wrong_device", f"message is for gate {claims.get('device_id')}")
    claimed_venue = claims.get("venue_id")
    if venue_topic and claimed_venue is None:
        raise fail("wrong_venue", "a venue-wide trust list must name its venue_id in the signed manifest")
    if claimed_venue is not None and (not venue_id or claimed_venue != venue_id):
        raise fail("wrong_venue", f"message is for venue {claimed_venue!r}, this gate is in {venue_id or 'no venue'!r}")
    text = open_signed_body(claims, body, iat=iat, exp=exp, now_s=now_s, max_bytes=MAX_BODY_BYTES, fail=fail)
    return TrustMessage(version, iat, exp, text, transaction, claimed_venue)




@dataclass
class ImportedList:
    """What an import file held.

    Attributes:
        dscs: the usable DSCs.
        problems: one line per entry that was refused (it is left out).
        signed_body: the bytes a signature covers (the whole file, or what follows the signature line).
        embedded_signature: the signature from the first line, if the file had one.
    """

    dscs: list[Dsc] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    signed_body: bytes = b""
    embedded_signature: bytes | None = None


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not base64 text")
    return base64.b64decode(value.strip(), validate=True)


def json_entries(doc: Any, out: ImportedList) -> None:
    """Parse a JSON DSC list (or ``{"certificates": [...]}``) into out: DSCs, and a problem per bad entry."""
    entries = doc.get("certificates") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        out.problems.append('the JSON is neither a list nor {"certificates": [...]}')
        return
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            out.problems.append(f"entry {i}: not an object")
            continue
        if entry.get("certificateType", "DSC") != "DSC":
            continue
        try:
            der = _b64(entry.get("rawData"))
            kid = _b64(entry["kid"]) if entry.get("kid") is not None else None
            country = entry.get("country")
            out.dscs.append(parse_dsc(der, country if isinstance(country, str) else None, kid))
        except (ValueError, binascii.Error, DscError) as err:
            out.problems.append(f"entry {i}: {err}")


def list_entries(dscs: list[Dsc]) -> list[dict[str, str]]:
    """The JSON list entries for DSCs."""
    return [{"kid": base64.b64encode(d.kid).decode(), "country": d.country,
             "rawData": base64.b64encode(d.der).decode()} for d in dscs]


def list_digest(body: bytes) -> str:
    """SHA-256 hex of a list's bytes (recorded with the installed list)."""
    return hashlib.sha256(body).hexdigest()
