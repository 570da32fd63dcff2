"""The history's view of a scan event: validation of what arrives on the topic, and the row kept.

Pure: no I/O, no clock. ``parse_scan`` accepts the JSON published by the gate
(``firmware.core.model.ScanEvent.to_json_dict``, schema ``qrgate.scan/1``) and returns either a
``HistoryEvent`` or a ``Rejected`` with a reason that is safe to log (it never quotes the
payload, which may carry a name, a phone number or a raw code).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from firmware.core.model import EVENT_SCHEMA, ScanEvent

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 512
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (JSON-ready)."""
        return asdict(self)


COLUMNS: tuple[str, ...] = tuple(HistoryEvent.__dataclass_fields__)


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


def _text(data: dict[str, Any], key: str, limit: int = MAX_TEXT_CHARS, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} is missing or not a string")
    if len(value) > limit:
        raise ValueError(f"field {key!r} is longer than {limit} characters")
    return value


def parse_scan(topic_device: str, payload: bytes, received_ms: int) -> HistoryEvent | Rejected:
    """Validate one message from ``<prefix>/<topic_device>/scan``.

    Args:
        topic_device: the device id taken from the topic.
        payload: the raw message body.
        received_ms: the collector's wall clock, Unix ms.

    Returns:
        The event to store, or ``Rejected`` with a reason safe to log.
    """
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Rejected("not UTF-8 JSON")
    if not isinstance(data, dict):
        return Rejected("JSON is not an object")
    schema = data.get("schema", EVENT_SCHEMA)
    if schema != EVENT_SCHEMA:
        return Rejected(f"unknown schema {str(schema)[:40]!r}; this collector reads {EVENT_SCHEMA}")
    try:
        scan = ScanEvent.from_json_dict(data)
        event_id = _text(data, "event_id", MAX_ID_CHARS)
        device_id = _text(data, "device_id", MAX_ID_CHARS)
        seq = data.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError("field 'seq' is missing or not a whole number >= 0")
        for key in ("venue_id", "direction", "boot_id", "decision", "reason", "credential",
                    "code_sha256"):
            _text(data, key)
        display = _text(data, "display", required=False)
        subject = data.get("subject")
        if subject is not None and (not isinstance(subject, str) or len(subject) > MAX_TEXT_CHARS):
            raise ValueError("field 'subject' is not a string or null")
        latency = data.get("latency_ms", 0.0)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)):
            raise ValueError("field 'latency_ms' is not a number")
        ts_ms = parse_ts_ms(scan.ts)
    except (KeyError, TypeError) as err:
        return Rejected(f"missing or bad field ({type(err).__name__}: {str(err)[:60]})")
    except ValueError as err:
        return Rejected(str(err)[:120])
    if not event_id:
        return Rejected("field 'event_id' is empty")
    if not _DEVICE_ID.match(device_id):
        return Rejected("field 'device_id' is not a device id")
    if device_id != topic_device:
        return Rejected("device_id does not match the topic's device")
    return HistoryEvent(
        event_id=event_id, device_id=device_id, venue_id=scan.venue_id, direction=scan.direction,
        ts=scan.ts, ts_ms=ts_ms, seq=seq, boot_id=scan.boot_id, time_synced=bool(data.get("time_synced")),
        decision=scan.decision, reason=scan.reason, credential=scan.credential, subject=subject,
        display=display, person_key=person_key(display), latency_ms=float(latency),
        code_sha256=scan.code_sha256, received_ms=received_ms,
    )
