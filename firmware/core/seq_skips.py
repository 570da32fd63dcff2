"""Seq numbers a fresh outbox will never use, and the signed document that declares them. Pure.

The outbox reserves seq numbers in blocks (``outbox.seq``). A fresh database (the old one
missing, or quarantined as unreadable) continues above that reservation, so the rest of the
block is never assigned to an event. Without a word from the gate a consumer can only call
that hole "missing scans". The gate therefore records each jump as a ``SeqSkip`` and publishes
its skips, signed with its device key, retained on ``<prefix>/<device_id>/skips``; the history
collector verifies them with the key registered for the device and writes the ranges off as
"skipped reservation".

Document ``qrgate.seq-skips/1``: compact UTF-8 JSON sealed like a scan event
(``event_signature.seal`` with ``SKIPS_CONTEXT``, so a scan signature is never valid for it
nor the reverse)::

    {"schema":"qrgate.seq-skips/1","device_id":"gate-1","skips":[{"first_seq":6,
     "last_seq":1000,"cause":"quarantined_outbox","exact":true,
     "file":"outbox.sqlite.corrupt-20260921T141320Z","declared_at":"2026-09-21T14:13:20.000Z"}],
     "sig":"..."}

- ``cause``: ``new_outbox`` (the database file was missing or empty) or
  ``quarantined_outbox`` (it was unreadable and moved aside as ``file``).
- ``exact``: true when the old file could still be read and held no seq at or above
  ``first_seq``: no seq of the range was ever given to an event. False when it could not be
  read (or was gone): the range is then the last reservation block from its start, and events
  the old file held inside it, if any, are lost with that file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware.core import event_signature

SKIPS_SCHEMA = "qrgate.seq-skips/1"
SKIPS_CONTEXT = b"qrgate.seq-skips-sig/1\n"
SKIPS_SUBTOPIC = "skips"
CAUSES = ("new_outbox", "quarantined_outbox")
# A gate keeps at most this many declarations (one per replaced outbox); the oldest go first.
MAX_SKIPS = 100
# Far above the gate's reservation block (1,000); a wider range is refused as not a gate's.
MAX_SKIP_SPAN = 1_000_000
MAX_SEQ = 2**53
MAX_DOCUMENT_BYTES = 32 * 1024
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,120}$")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
_FIELDS = {"first_seq", "last_seq", "cause", "exact", "file", "declared_at"}


class SkipsError(ValueError):
    """A skips document (or record) that is not one this gate format produces, or not signed."""


@dataclass(frozen=True)
class SeqSkip:
    """A seq range a fresh outbox jumped over: it will never be used by this gate.

    Attributes:
        first_seq, last_seq: the range, inclusive.
        cause: ``new_outbox`` or ``quarantined_outbox``.
        exact: True if no seq of the range was ever given to an event (the old file was read);
            False if the range is the whole last reservation block (the old file was unreadable
            or gone, so events it held in the range are lost with it).
        file: the quarantined file's name, or "".
        declared_at: when the gate recorded it (RFC 3339, UTC).
    """

    first_seq: int
    last_seq: int
    cause: str
    exact: bool
    file: str = ""
    declared_at: str = ""

    @property
    def count(self) -> int:
        """How many seq numbers the range covers."""
        return self.last_seq - self.first_seq + 1

    def to_json_dict(self) -> dict[str, Any]:
        """The record as it is stored in ``outbox.skips`` and published."""
        doc: dict[str, Any] = {"first_seq": self.first_seq, "last_seq": self.last_seq, "cause": self.cause,
                               "exact": self.exact}
        if self.file:
            doc["file"] = self.file
        doc["declared_at"] = self.declared_at
        return doc

    @classmethod
    def from_json_dict(cls, doc: Any) -> SeqSkip:
        """Check and read one record.

        Raises:
            SkipsError: a missing, unknown or out-of-range field (the message says which).
        """
        if not isinstance(doc, dict):
            raise SkipsError("a skip is not a JSON object")
        unknown = set(doc) - _FIELDS
        if unknown:
            raise SkipsError(f"unknown skip field {sorted(unknown)[0][:40]!r}")
        first, last = doc.get("first_seq"), doc.get("last_seq")
        if type(first) is not int or type(last) is not int or not 1 <= first <= last <= MAX_SEQ:
            raise SkipsError("first_seq and last_seq must be integers with 1 <= first_seq <= last_seq")
        if last - first + 1 > MAX_SKIP_SPAN:
            raise SkipsError(f"a skip of {last - first + 1} seq numbers is wider than {MAX_SKIP_SPAN}")
        cause, exact, file = doc.get("cause"), doc.get("exact"), doc.get("file", "")
        if cause not in CAUSES:
            raise SkipsError(f"cause must be one of {', '.join(CAUSES)}")
        if type(exact) is not bool:
            raise SkipsError("exact must be true or false")
        if not isinstance(file, str) or (file and not _FILE_NAME.match(file)):
            raise SkipsError("file must be a plain file name")
        declared_at = doc.get("declared_at")
        if not isinstance(declared_at, str) or not _RFC3339.match(declared_at):
            raise SkipsError("declared_at must be an RFC 3339 UTC time")
        return cls(first_seq=first, last_seq=last, cause=cause, exact=exact, file=file, declared_at=declared_at)


def skipped_range(reserved_through: int, block: int, highest_read: int | None) -> tuple[int, int, bool] | None:
    """The range a fresh outbox jumps over, or None if it jumps over nothing.

    Args:
        reserved_through: the seq reserved in ``outbox.seq`` (the fresh outbox starts above it).
        block: the reservation block size (the last block started at ``reserved_through - block + 1``).
        highest_read: the highest seq the old database held, read from it; None if it could
            not be read or was gone.

    Returns:
        ``(first_seq, last_seq, exact)``: from above ``highest_read`` when it is known and
        inside the last block (exact), otherwise the whole last block (not exact).
    """
    if reserved_through < 1:
        return None
    block_start = max(1, reserved_through - block + 1)
    if highest_read is not None and highest_read + 1 >= block_start:
        first, exact = highest_read + 1, True
    else:
        # Unknown, or lower than the block's start (an older copy of the file?): claim only the
        # block; seqs below it stay gaps for a person to explain.
        first, exact = block_start, False
    return None if first > reserved_through else (first, reserved_through, exact)


def describe(skip: SeqSkip) -> str:
    """One line for logs and write-off reasons: what the gate replaced and what is known."""
    what = (f"quarantined outbox {skip.file}" if skip.cause == "quarantined_outbox" and skip.file
            else "quarantined outbox" if skip.cause == "quarantined_outbox"
            else "new outbox (the old database was missing or empty)")
    if skip.exact:
        return f"{what}; it held no seq above {skip.first_seq - 1}"
    why = "could not be read" if skip.cause == "quarantined_outbox" else "was gone"
    return (f"{what}; unverified: the old database {why}, so this is the last reservation block "
            "from its start and scans it held in the range are lost with it")


def document_body(device_id: str, skips: Sequence[SeqSkip]) -> bytes:
    """The unsigned document (compact UTF-8 JSON) listing the skips, oldest first."""
    doc = {"schema": SKIPS_SCHEMA, "device_id": device_id, "skips": [s.to_json_dict() for s in skips]}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sealed_document(device_id: str, skips: Sequence[SeqSkip], key: Ed25519PrivateKey) -> bytes:
    """The payload the gate publishes: ``document_body`` sealed with its device key."""
    return event_signature.seal(document_body(device_id, skips), key, SKIPS_CONTEXT)


def open_document(device_id: str, payload: bytes, key: Ed25519PublicKey) -> tuple[SeqSkip, ...]:
    """Verify and read a published skips document.

    Args:
        device_id: the device the topic names; the document must name the same one.
        payload: the message as received.
        key: the public key registered for ``device_id``.

    Raises:
        SkipsError: too long, unsigned, not signed by ``key`` for skips, not the schema, for
            another device, or a bad record (the message says which; it never holds payload text).
    """
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise SkipsError(f"longer than {MAX_DOCUMENT_BYTES} bytes")
    try:
        body = event_signature.verify(event_signature.unseal(payload), key, SKIPS_CONTEXT)
    except event_signature.SignatureError as err:
        raise SkipsError(f"not signed by the device's key: {err}") from err
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise SkipsError("not UTF-8 JSON") from err
    if not isinstance(doc, dict) or doc.get("schema") != SKIPS_SCHEMA:
        raise SkipsError(f"not a {SKIPS_SCHEMA} document")
    if doc.get("device_id") != device_id:
        raise SkipsError("the document names another device than its topic")
    skips = doc.get("skips")
    if not isinstance(skips, list) or len(skips) > MAX_SKIPS:
        raise SkipsError(f"skips must be a list of at most {MAX_SKIPS}")
    return tuple(SeqSkip.from_json_dict(s) for s in skips)
