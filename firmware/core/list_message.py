"""The signed list message (deny/allow lists sent over MQTT): encode and verify. Pure.

Topic: ``<prefix>/<device_id>/lists/<deny|allow>`` (never retained). Reply: JSON on
``<prefix>/<device_id>/response/lists``, shaped like zigbee2mqtt's responses::

    {"status": "ok", "data": {"kind": "deny", "version": 8, "count": 1000000},
     "error": null, "transaction": "t-42"}
    {"status": "error", "data": {"kind": "deny"}, "error": "bad_signature: ...", "transaction": null}

Message (binary payload): the CBOR array ``[manifest, body]``.

- ``manifest`` is a COSE_Sign1 (``firmware.core.cose``) signed by a **remote command key**
  (trust directory ``keys.command_dir``, the same keys that sign remote commands; see
  README "Provisioning" for why). Its payload is a CBOR map: ``t`` = ``"qrgate.list/1"``
  (no entry ends) or ``"qrgate.list/2"`` (entries may carry an end; a gate that only knows
  ``/1`` refuses it as ``malformed`` rather than misreading it),
  ``kind`` (``deny``/``allow``, must match the topic), ``mode`` (``full``/``delta``),
  ``version`` (int from 1 to 10^12, must be above the gate's), ``base_version`` (delta only:
  must equal the gate's version), ``iat``, ``exp`` (Unix seconds between 2001 and 2100, at
  most 7 days apart; bounds in ``firmware.core.numbers``), ``prefix`` (the gates' topic
  prefix) and ``venue_id``: a message on a gate's own topic must name its ``device_id`` and
  its prefix, and a ``venue_id`` it names must be the gate's (``qrgate list --remote`` names
  the config's venue), so one captured at another venue or broker does not verify on a gate
  of the same id; optional
  ``device_id``, ``transaction`` (text), and ``sha256`` of ``body``.
- ``body`` is zlib-compressed UTF-8 text: for ``full`` one id per line; for ``delta``
  lines ``+id`` (add) and ``-id`` (remove). In ``/2`` an entry (a full line or a ``+`` line)
  may end with a TAB and its ``until``, whole Unix seconds from 2001 to 2100
  (``NV-0042\t1767225600``); an entry is a person id or a person's subject at the venue.

The manifest stays small (under the COSE size cap) whatever the list size; the body is
bound to it by its hash. A forged, unsigned, expired, misdirected or older message
changes nothing and is answered with an error.

Venue-wide lists: ``<prefix>/venues/<venue_id>/lists/<deny|allow>``, subscribed by every
provisioned gate of that venue. Only ``full`` lists, whose manifest carries ``venue_id``
(signed, so a list cannot be moved to another venue's topic). Published **retained**, so a
gate that was offline, or is installed later, gets the latest list when it connects. Each
gate answers on its own ``response/lists``; a retained copy of a version already in force,
or one that expired while it waited, is skipped without an answer (it comes back on every
reconnect).
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from firmware.core.cose import CoseError, loads_strict, parse1, sign1, verify1
from firmware.core.credentials.trust import TrustStore
from firmware.core.lists import KINDS, normalise_id
from firmware.core.numbers import MAX_LIST_VERSION, is_time_s
from firmware.core.text import count_invisible

log = logging.getLogger(__name__)


LIST_TYPE_V1 = "qrgate.list/1"  # no entry ends; what gates before ``until`` read
LIST_TYPE = "qrgate.list/2"  # entries may end: ``entry\tuntil``
RESPONSE_TOPIC = "response/lists"  # where a gate answers every list message


MAX_BODY_BYTES = 64 * 1024 * 1024


MAX_VALIDITY_S = 7 * 86400


VENUE_TOPICS = "venues"  # <prefix>/venues/<venue_id>/lists/<kind>; "venues" cannot be a device id


def venue_list_topic(prefix: str, venue_id: str, kind: str) -> str:
    """The venue-wide list topic (``kind`` may be ``+``)."""
    return f"{prefix}/{VENUE_TOPICS}/{venue_id}/lists/{kind}"


@dataclass(frozen=True)
class ListMessage:
    """A verified list message."""

    kind: str
    mode: str
    version: int
    base_version: int | None
    issued_at_s: int
    expires_s: int
    device_id: str | None
    transaction: str | None
    ids: list[str]
    add: list[str]
    remove: list[str]
    venue_id: str | None = None
    stripped: int = 0  # ids that held invisible, bidi or control characters (removed when hashed)
    ends: dict[str, int] = field(default_factory=dict)  # the until of the entries (of ids or add) that end


class ListMessageError(ValueError):
    """A list message was refused. ``reason`` is a short word, ``detail`` the explanation."""

    def __init__(self, reason: str, detail: str, transaction: str | None = None) -> None:
        self.reason, self.detail, self.transaction = reason, detail, transaction
        super().__init__(f"{reason}: {detail}")


def encode_message(private_key: Any, *, kind: str, version: int, now_s: float, ids: list[str] | None = None,
                   add: list[str] | None = None, remove: list[str] | None = None,
                   base_version: int | None = None, valid_s: int = 3600, device_id: str | None = None,
                   transaction: str | None = None, venue_id: str | None = None, prefix: str | None = None,
                   ends: Mapping[str, int] | None = None) -> bytes:
    """Build a signed list message (full when ``ids`` is given, else delta); with venue_id, only
    gates of that venue accept it (required on the venue-wide topic).

    Args:
        ends: the ``until`` (Unix seconds) of entries of ``ids`` or ``add`` that end; with any,
            the message is a ``qrgate.list/2``, else a ``/1`` every gate reads.

    Raises:
        ValueError: an ``until`` outside 2001-2100.
    """
    ends = dict(ends or {})
    if any(not is_time_s(u) for u in ends.values()):
        raise ValueError("an entry's until must be Unix seconds from 2001 to 2100")

    def entry(i: str) -> str:
        until = ends.get(i)
        return normalise_id(i) if until is None else f"{normalise_id(i)}\t{int(until)}"

    if ids is not None:
        mode, text = "full", "\n".join(entry(i) for i in ids)
    else:
        mode = "delta"
        text = "\n".join([f"+{entry(i)}" for i in add or []] + [f"-{normalise_id(i)}" for i in remove or []])
    body = zlib.compress(text.encode("utf-8"), 6)
    timed = any(i in ends for i in (ids if ids is not None else add or []))
    claims: dict[str, Any] = {"t": LIST_TYPE if timed else LIST_TYPE_V1, "kind": kind, "mode": mode,
                              "version": int(version),
                              "iat": int(now_s), "exp": int(now_s) + int(valid_s),
                              "sha256": hashlib.sha256(body).digest()}
    if base_version is not None:
        claims["base_version"] = int(base_version)
    if device_id:
        claims["device_id"] = device_id
    if venue_id:
        claims["venue_id"] = venue_id
    if prefix:
        claims["prefix"] = prefix
    if transaction:
        claims["transaction"] = transaction
    return cbor2.dumps([sign1(cbor2.dumps(claims), private_key), body])


def decode_message(payload: bytes, keys: TrustStore, *, topic_kind: str, device_id: str,
                   now_s: float, venue_id: str = "", venue_topic: bool = False, prefix: str = "qrgate") -> ListMessage:
    """Verify a list message. Pure.

    Args:
        venue_id: this gate's venue; a manifest ``venue_id`` must equal it.
        venue_topic: it came on the venue-wide topic: ``venue_id`` is required and only
            ``full`` lists are accepted. Otherwise (the gate's own topic) ``device_id`` and
            ``prefix`` are required.
        prefix: this gate's topic prefix; a manifest ``prefix`` must equal it.

    Raises:
        ListMessageError: reason ``unsigned``, ``malformed``, ``unknown_issuer``,
            ``bad_signature``, ``expired``, ``not_yet_valid``, ``wrong_device``, ``wrong_venue``,
            ``wrong_mode``, ``wrong_kind`` or ``base_version`` (a delta without one).
    """
    try:
        outer = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as err:
        raise ListMessageError("unsigned", f"not a signed list message ({type(err).__name__})") from err
    if not isinstance(outer, (list, tuple)) or len(outer) != 2 or not all(isinstance(p, bytes) for p in outer):
        raise ListMessageError("unsigned", "expected the CBOR array [COSE_Sign1 manifest, body]")
    manifest, body = outer
    try:
        verified = verify1(manifest, keys.keys_for)
        claims = loads_strict(verified.payload, "manifest")
    except CoseError as err:
        raise ListMessageError(err.reason.value, err.detail, unverified_transaction(manifest)) from err
    if not isinstance(claims, dict) or claims.get("t") not in (LIST_TYPE, LIST_TYPE_V1):
        raise ListMessageError("malformed", f"manifest type is not {LIST_TYPE} or {LIST_TYPE_V1}")
    may_end = claims["t"] == LIST_TYPE
    transaction = claims.get("transaction") if isinstance(claims.get("transaction"), str) else None

    def fail(reason: str, detail: str) -> ListMessageError:
        return ListMessageError(reason, detail, transaction)

    kind, mode, version = claims.get("kind"), claims.get("mode"), claims.get("version")
    iat, exp, base = claims.get("iat"), claims.get("exp"), claims.get("base_version")
    if kind not in KINDS or mode not in ("full", "delta") or type(version) is not int:
        raise fail("malformed", "kind, mode or version missing or invalid")
    if not 1 <= version <= MAX_LIST_VERSION:
        raise fail("malformed", f"version {version} is outside 1..{MAX_LIST_VERSION}")
    if (type(iat) is not int or type(exp) is not int or not is_time_s(iat) or not is_time_s(exp)
            or not 0 < exp - iat <= MAX_VALIDITY_S):
        raise fail("malformed", "iat/exp missing, outside 2001-2100, or valid for more than 7 days")
    if base is not None and (type(base) is not int or not 0 <= base <= MAX_LIST_VERSION):
        raise fail("malformed", f"base_version must be a whole number from 0 to {MAX_LIST_VERSION}")
    if mode == "delta" and base is None:
        raise fail("base_version", "a delta must name the base_version it applies to; send the full list "
                   "or name the gate's current version")
    if kind != topic_kind:
        raise fail("wrong_kind", f"a {kind} list sent on the {topic_kind} topic")
    if claims.get("device_id") not in (None, device_id):
        raise fail("wrong_device", f"message is for gate {claims.get('device_id')}")
    claimed_venue = claims.get("venue_id")
    if not venue_topic and claims.get("device_id") is None:
        raise fail("wrong_device", "a list sent to one gate must name its device_id in the signed manifest")
    if claims.get("prefix") != prefix and (claims.get("prefix") is not None or not venue_topic):
        raise fail("wrong_prefix", f"message is for topic prefix {claims.get('prefix')!r}, this gate uses {prefix!r}")
    if venue_topic and claimed_venue is None:
        raise fail("wrong_venue", "a venue-wide list must name its venue_id in the signed manifest")
    if claimed_venue is not None and (not venue_id or claimed_venue != venue_id):
        raise fail("wrong_venue", f"message is for venue {claimed_venue!r}, this gate is in "
                   f"{venue_id or 'no venue'!r}")
    if venue_topic and mode != "full":
        raise fail("wrong_mode", "a venue-wide list is a full list; send deltas to each gate")
    text_b = open_signed_body(claims, body, iat=iat, exp=exp, now_s=now_s, max_bytes=MAX_BODY_BYTES, fail=fail)
    try:
        lines = [line for line in text_b.decode("utf-8").split("\n") if line.strip()]
    except UnicodeDecodeError as err:
        raise fail("malformed", "body is not UTF-8") from err
    ids, add, remove = [], [], []
    ends: dict[str, int] = {}
    without_end: set[str] = set()

    def entry(line: str) -> str:
        if not may_end or "\t" not in line:
            without_end.add(line)
            return line
        name, _, until_text = line.partition("\t")
        until = int(until_text) if until_text.isascii() and until_text.isdigit() else None
        if until is None or not is_time_s(until):
            raise fail("malformed", "an entry's until must be whole Unix seconds from 2001 to 2100")
        ends[name] = max(until, ends.get(name, 0))
        return name

    if mode == "full":
        ids = [entry(line) for line in lines]
    else:
        for line in lines:
            if line[0] == "+":
                add.append(entry(line[1:]))
            elif line[0] == "-":
                remove.append(line[1:])
            else:
                raise fail("malformed", "delta lines must start with + or -")
    for name in without_end.intersection(ends):
        del ends[name]  # an entry also listed without an end has none
    stripped = sum(1 for i in (*ids, *add, *remove) if count_invisible(i))
    return ListMessage(kind, mode, version, base, iat, exp, claims.get("device_id"), transaction, ids, add, remove,
                       claims.get("venue_id"), stripped, ends)


def open_signed_body(claims: dict[Any, Any], body: bytes, *, iat: int, exp: int, now_s: float, max_bytes: int,
                     fail: Callable[[str, str], Exception]) -> bytes:
    """The checks every signed ``[manifest, body]`` message shares (lists, DCC trust lists): the
    validity window, the body's hash against the signed ``sha256``, and a bounded inflate.

    Returns:
        The inflated body.

    Raises:
        The exception ``fail(reason, detail)`` makes: ``not_yet_valid``, ``expired``,
        ``bad_signature`` (the body is not the signed one) or ``malformed`` (not zlib, truncated,
        or inflating beyond max_bytes).
    """
    if now_s < iat - 300:
        raise fail("not_yet_valid", "issued in the future; check the clocks")
    if now_s >= exp:
        raise fail("expired", "the message expired; send a new one")
    if claims.get("sha256") != hashlib.sha256(body).digest():
        raise fail("bad_signature", "the body does not match the signed hash")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise fail("malformed", f"body is not zlib data ({err})") from err
    if len(text) > max_bytes or not inflater.eof:
        raise fail("malformed", f"body is truncated or inflates beyond {max_bytes} bytes")
    return text


def unverified_transaction(manifest: bytes) -> str | None:
    """The transaction of a manifest that failed verification, only to correlate the answer."""
    try:
        claims = loads_strict(parse1(manifest).payload, "manifest")
    except CoseError:
        return None
    value = claims.get("transaction") if isinstance(claims, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None
