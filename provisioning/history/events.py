"""The history's view of a scan event: validation of what arrives on the topic, and the row kept.

Pure: no I/O, no clock. ``parse_scan`` accepts the JSON published by the gate
(``firmware.core.model.ScanEvent.to_json_dict``, schema ``qrgate.scan/1``) and returns either a
``HistoryEvent`` or a ``Rejected`` with a reason that is safe to log (it never quotes the
payload, which may carry a name, a phone number or a raw code).
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from firmware.core import event_signature
from firmware.core.escrow import EscrowError, decode_sealed
from firmware.core.model import EVENT_SCHEMA

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 512
MAX_SEQ = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER on SQLite
MAX_LATENCY_MS = 86_400_000.0
MIN_TS_MS = 0  # 1970: a gate whose clock was never set still sends its events
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z: any time zone can still show it
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_WORD = re.compile(r"^[a-z0-9_]{1,64}$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class HistoryEvent:
    """One stored scan, as the history keeps it.

    The raw QR payload (``code``) is never kept, even when a gate publishes it.

    Attributes:
        event_id: the gate's unique id; the store keeps each id once.
        device_id, venue_id, direction: where it happened.
        ts: the gate's UTC RFC 3339 timestamp, as published.
        ts_ms: ``ts`` as Unix milliseconds (what filters and ordering use).
        seq: the device's sequence number (gaps mean lost scans).
        boot_id: the gate's boot id.
        time_synced: whether the gate's clock was trusted.
        decision: ``granted``, ``denied`` or another event type (``provisioned``...).
        reason, credential: why, and the credential family.
        subject: the person id as the gate's privacy setting left it (raw, HMAC or None).
        display: the masked name and phone.
        person_key: ``display`` folded for search (see ``person_key``).
        latency_ms: frame to decision at the gate.
        code_sha256: hash of the payload.
        received_ms: when the collector stored it (Unix ms, collector clock).
        contact_sealed: the person's contact sealed to the health office's key (base64url), or
            None; kept in its own table (``event_contacts``), never in pages or exports.
    """

    event_id: str
    device_id: str
    venue_id: str
    direction: str
    ts: str
    ts_ms: int
    seq: int
    boot_id: str
    time_synced: bool
    decision: str
    reason: str
    credential: str
    subject: str | None
    display: str
    person_key: str
    latency_ms: float
    code_sha256: str
    received_ms: int
    contact_sealed: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields of the ``events`` table as a plain dict (JSON-ready; no sealed contact)."""
        values = asdict(self)
        del values["contact_sealed"]
        return values


# The columns of the ``events`` table (the sealed contact lives in ``event_contacts``).
COLUMNS: tuple[str, ...] = tuple(name for name in HistoryEvent.__dataclass_fields__ if name != "contact_sealed")


@dataclass(frozen=True)
class Rejected:
    """A message on the scan topic that cannot be stored.

    Attributes:
        problem: what is wrong, without quoting any of the payload.
    """

    problem: str


def person_key(text: str) -> str:
    """Fold a name or phone for search: no accents, lower case, no spaces.

    ``"NGUYỄN ĐÌNH *** 0966 323 ***"`` becomes ``"nguyendinh***0966323***"``, so a search for
    ``"Nguyễn Đình"``, ``"nguyen dinh"`` or ``"0966323"`` finds it.
    """
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(stripped.casefold().split())


def parse_ts_ms(ts: str) -> int:
    """Parse an RFC 3339 timestamp with an offset into Unix milliseconds.

    Raises:
        ValueError: not RFC 3339, or no UTC offset.
    """
    parsed = datetime.fromisoformat(ts)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return int(round(parsed.timestamp() * 1000))


def format_ts(ts_ms: int) -> str:
    """Format Unix milliseconds as UTC RFC 3339 with milliseconds (``...T..:..:...123Z``)."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"the JSON holds {name}, which is not a number an event may carry")


def _clean(value: str, key: str) -> str:
    """Refuse text that either database or a page could choke on: control characters (NUL
    included: PostgreSQL refuses it in text) and lone surrogates (not encodable as UTF-8)."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"field {key!r} holds a control or surrogate character (U+{ord(char):04X})")
    return value


def _text(data: dict[str, Any], key: str, limit: int = MAX_TEXT_CHARS, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} is missing or not a string")
    if len(value) > limit:
        raise ValueError(f"field {key!r} is longer than {limit} characters")
    return _clean(value, key)


def load_json(payload: bytes) -> Any:
    """Parse a message body as strict JSON.

    Raises:
        ValueError: not UTF-8 JSON, NaN or Infinity, an integer too long to read, or nesting
            too deep (the parser's RecursionError is turned into this refusal).
    """
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError("not UTF-8 JSON") from err
    except RecursionError as err:
        raise ValueError("JSON nested too deeply") from err


@dataclass(frozen=True)
class Enrolment:
    """The enrolment fields of a ``provisioned`` event: the code's nonce and the gate's key."""

    nonce_hex: str
    public_key: str


def enrolment_of(body: bytes) -> Enrolment | None:
    """The ``prov_nonce`` and ``device_key`` of an event body, or None if it has none (or bad ones)."""
    try:
        data = load_json(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    nonce, key = data.get("prov_nonce"), data.get("device_key")
    if not isinstance(nonce, str) or not _NONCE.match(nonce) or not isinstance(key, str) or not _KEY.match(key):
        return None
    return Enrolment(nonce, key)


def parse_scan(topic_device: str, payload: bytes, received_ms: int) -> HistoryEvent | Rejected:
    """Validate one event body from ``<prefix>/<topic_device>/scan``.

    Every field is checked for type, range and content, so that what is returned fits both
    databases and every page and export: integers within 64 bits, finite numbers, timestamps
    from 1970 to 2100 (``MIN_TS_MS``, ``MAX_TS_MS``; a gate's clock may be wrong, but
    a page in any time zone can still show the time), text without control
    characters and within its length. Never raises.

    Args:
        topic_device: the device id taken from the topic.
        payload: the event's JSON (the signed body, without its ``sig`` member).
        received_ms: the collector's wall clock, Unix ms.

    Returns:
        The event to store, or ``Rejected`` with a reason safe to log.
    """
    try:
        return _parse_scan(topic_device, payload, received_ms)
    except Exception as err:  # hostile input: a refusal with a reason, never a crash
        return Rejected(f"unreadable event ({type(err).__name__})")


def _parse_scan(topic_device: str, payload: bytes, received_ms: int) -> HistoryEvent | Rejected:
    try:
        data = load_json(payload)
    except ValueError as err:
        return Rejected(str(err)[:120])
    if not isinstance(data, dict):
        return Rejected("JSON is not an object")
    schema = data.get("schema", EVENT_SCHEMA)
    if schema != EVENT_SCHEMA:
        return Rejected(f"unknown schema {_clean_quote(schema)}; this collector reads {EVENT_SCHEMA}")
    try:
        event_id = _text(data, "event_id", MAX_ID_CHARS)
        device_id = _text(data, "device_id", MAX_ID_CHARS)
        seq = data.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError("field 'seq' is missing or not a whole number >= 0")
        if seq > MAX_SEQ:
            raise ValueError(f"field 'seq' is above {MAX_SEQ}, the largest a database column holds")
        texts = {key: _text(data, key) for key in ("venue_id", "direction", "boot_id", "decision", "reason",
                                                   "credential", "code_sha256", "ts")}
        for key in ("decision", "reason", "credential"):
            if not _WORD.match(texts[key]):
                raise ValueError(f"field {key!r} is not a lower-case word")
        display = _text(data, "display", required=False)
        subject = data.get("subject")
        if subject is not None:
            if not isinstance(subject, str) or len(subject) > MAX_TEXT_CHARS:
                raise ValueError("field 'subject' is not a string or null")
            _clean(subject, "subject")
        latency = data.get("latency_ms", 0.0)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            raise ValueError("field 'latency_ms' is not a number")
        if not (math.isfinite(latency) and 0 <= latency <= MAX_LATENCY_MS):
            raise ValueError(f"field 'latency_ms' is not a finite number from 0 to {MAX_LATENCY_MS}")
        time_synced = data.get("time_synced", False)
        if not isinstance(time_synced, bool):
            raise ValueError("field 'time_synced' is not true or false")
        sealed = data.get("contact_sealed")
        if sealed is not None:
            try:
                decode_sealed(sealed)
            except EscrowError as err:
                raise ValueError(f"field 'contact_sealed': {err}") from err
        ts_ms = parse_ts_ms(texts["ts"])
        if not _TS.match(texts["ts"]):
            raise ValueError("field 'ts' is not an RFC 3339 time like 2026-11-26T13:40:01.123Z")
        if not MIN_TS_MS <= ts_ms < MAX_TS_MS:
            raise ValueError("field 'ts' is not between 1970 and 2100")
    except (KeyError, TypeError) as err:
        return Rejected(f"missing or bad field ({type(err).__name__})")
    except (ValueError, OverflowError) as err:
        return Rejected(str(err)[:160])
    if not event_id:
        return Rejected("field 'event_id' is empty")
    if not _DEVICE_ID.match(device_id):
        return Rejected("field 'device_id' is not a device id")
    if device_id != topic_device:
        return Rejected("device_id does not match the topic's device")
    return HistoryEvent(
        event_id=event_id, device_id=device_id, venue_id=texts["venue_id"], direction=texts["direction"],
        ts=texts["ts"], ts_ms=ts_ms, seq=seq, boot_id=texts["boot_id"], time_synced=time_synced,
        decision=texts["decision"], reason=texts["reason"], credential=texts["credential"], subject=subject,
        display=display, person_key=person_key(display), latency_ms=float(latency),
        code_sha256=texts["code_sha256"], received_ms=received_ms, contact_sealed=sealed,
    )


def _clean_quote(value: Any) -> str:
    text = str(value)[:40]
    return repr("".join(c if unicodedata.category(c) not in ("Cc", "Cs") else "?" for c in text))


# --------------------------------------------------------------------------- signed scan messages

MAX_SCAN_PAYLOAD_BYTES = 16 * 1024
"""The largest scan message accepted (a gate's signed event is well under 2 KiB)."""


@functools.lru_cache(maxsize=4096)
def registered_key(text: str) -> Any:
    """A registered device key's text (``HistoryStore.device_keys``) parsed, cached: the
    collector, the import and the quarantine re-check verify thousands of events per key.

    Raises:
        ValueError: the text is not an Ed25519 public key.
    """
    return event_signature.public_key_from_text(text)


def verifies(sealed: event_signature.Sealed, key_text: str) -> bool:
    """Whether ``sealed`` carries a valid signature by the key ``key_text`` (False for a bad key text too)."""
    try:
        event_signature.verify(sealed, registered_key(key_text))
        return True
    except (event_signature.SignatureError, ValueError):
        return False


def no_key_reason(device: str) -> str:
    """Why a signed event of ``device`` cannot be verified yet."""
    return f"no key registered for device {device} (`qrgate history device add`)"


def bad_signature_reason(device: str) -> str:
    """Why a signed event of ``device`` is refused."""
    return f"signature does not verify with the key registered for {device}"
