"""Remote deny/allow list updates over MQTT, signed; and the lists' wiring into the gate.

Topic: ``<prefix>/<device_id>/lists/<deny|allow>`` (never retained). Reply: JSON on
``<prefix>/<device_id>/response/lists``, shaped like zigbee2mqtt's responses::

    {"status": "ok", "data": {"kind": "deny", "version": 8, "count": 1000000},
     "error": null, "transaction": "t-42"}
    {"status": "error", "data": {"kind": "deny"}, "error": "bad_signature: ...", "transaction": null}

Message (binary payload): the CBOR array ``[manifest, body]``.

- ``manifest`` is a COSE_Sign1 (``firmware.cose``) signed by a **remote command key**
  (trust directory ``keys.command_dir``, the same keys that sign remote commands; see
  README "Provisioning" for why). Its payload is a CBOR map: ``t`` = ``"qrgate.list/1"``,
  ``kind`` (``deny``/``allow``, must match the topic), ``mode`` (``full``/``delta``),
  ``version`` (int, must be above the gate's), ``base_version`` (delta only: must equal
  the gate's version), ``iat``, ``exp`` (Unix seconds, at most 7 days apart), optional
  ``device_id``, ``transaction`` (text), and ``sha256`` of ``body``.
- ``body`` is zlib-compressed UTF-8 text: for ``full`` one id per line; for ``delta``
  lines ``+id`` (add) and ``-id`` (remove).

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
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from firmware.cose import CoseError, loads_strict, parse1, sign1, verify1
from firmware.credentials.trust import TrustStore
from firmware.errors import StoreError
from firmware.lists import KINDS, ListStore, MemoryLists, normalise_id, open_lists

log = logging.getLogger(__name__)

LIST_TYPE = "qrgate.list/1"
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_VALIDITY_S = 7 * 86400
RESPONSE_TOPIC = "response/lists"
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


class ListMessageError(ValueError):
    """A list message was refused. ``reason`` is a short word, ``detail`` the explanation."""

    def __init__(self, reason: str, detail: str, transaction: str | None = None) -> None:
        self.reason, self.detail, self.transaction = reason, detail, transaction
        super().__init__(f"{reason}: {detail}")


def encode_message(private_key: Any, *, kind: str, version: int, now_s: float, ids: list[str] | None = None,
                   add: list[str] | None = None, remove: list[str] | None = None,
                   base_version: int | None = None, valid_s: int = 3600, device_id: str | None = None,
                   transaction: str | None = None, venue_id: str | None = None) -> bytes:
    """Build a signed list message (full when ``ids`` is given, else delta); with venue_id, only
    gates of that venue accept it (required on the venue-wide topic)."""
    if ids is not None:
        mode, text = "full", "\n".join(normalise_id(i) for i in ids)
    else:
        mode = "delta"
        text = "\n".join([f"+{normalise_id(i)}" for i in add or []] + [f"-{normalise_id(i)}" for i in remove or []])
    body = zlib.compress(text.encode("utf-8"), 6)
    claims: dict[str, Any] = {"t": LIST_TYPE, "kind": kind, "mode": mode, "version": int(version),
                              "iat": int(now_s), "exp": int(now_s) + int(valid_s),
                              "sha256": hashlib.sha256(body).digest()}
    if base_version is not None:
        claims["base_version"] = int(base_version)
    if device_id:
        claims["device_id"] = device_id
    if venue_id:
        claims["venue_id"] = venue_id
    if transaction:
        claims["transaction"] = transaction
    return cbor2.dumps([sign1(cbor2.dumps(claims), private_key), body])


def decode_message(payload: bytes, keys: TrustStore, *, topic_kind: str, device_id: str,
                   now_s: float, venue_id: str = "", venue_topic: bool = False) -> ListMessage:
    """Verify a list message. Pure.

    Args:
        venue_id: this gate's venue; a manifest ``venue_id`` must equal it.
        venue_topic: it came on the venue-wide topic: ``venue_id`` is required and only
            ``full`` lists are accepted.

    Raises:
        ListMessageError: reason ``unsigned``, ``malformed``, ``unknown_issuer``,
            ``bad_signature``, ``expired``, ``not_yet_valid``, ``wrong_device``, ``wrong_venue``,
            ``wrong_mode`` or ``wrong_kind``.
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
        raise ListMessageError(err.reason.value, err.detail, _unverified_transaction(manifest)) from err
    if not isinstance(claims, dict) or claims.get("t") != LIST_TYPE:
        raise ListMessageError("malformed", f"manifest type is not {LIST_TYPE}")
    transaction = claims.get("transaction") if isinstance(claims.get("transaction"), str) else None

    def fail(reason: str, detail: str) -> ListMessageError:
        return ListMessageError(reason, detail, transaction)

    kind, mode, version = claims.get("kind"), claims.get("mode"), claims.get("version")
    iat, exp, base = claims.get("iat"), claims.get("exp"), claims.get("base_version")
    if kind not in KINDS or mode not in ("full", "delta") or type(version) is not int or version < 1:
        raise fail("malformed", "kind, mode or version missing or invalid")
    if type(iat) is not int or type(exp) is not int or not 0 < exp - iat <= MAX_VALIDITY_S:
        raise fail("malformed", "iat/exp missing, or valid for more than 7 days")
    if base is not None and type(base) is not int:
        raise fail("malformed", "base_version must be a whole number")
    if kind != topic_kind:
        raise fail("wrong_kind", f"a {kind} list sent on the {topic_kind} topic")
    if claims.get("device_id") not in (None, device_id):
        raise fail("wrong_device", f"message is for gate {claims.get('device_id')}")
    claimed_venue = claims.get("venue_id")
    if venue_topic and claimed_venue is None:
        raise fail("wrong_venue", "a venue-wide list must name its venue_id in the signed manifest")
    if claimed_venue is not None and (not venue_id or claimed_venue != venue_id):
        raise fail("wrong_venue", f"message is for venue {claimed_venue!r}, this gate is in "
                   f"{venue_id or 'no venue'!r}")
    if venue_topic and mode != "full":
        raise fail("wrong_mode", "a venue-wide list is a full list; send deltas to each gate")
    if now_s < iat - 300:
        raise fail("not_yet_valid", "issued in the future; check the clocks")
    if now_s >= exp:
        raise fail("expired", "the message expired; send a new one")
    if claims.get("sha256") != hashlib.sha256(body).digest():
        raise fail("bad_signature", "the body does not match the signed hash")
    inflater = zlib.decompressobj()
    try:
        text_b = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as err:
        raise fail("malformed", f"body is not zlib data ({err})") from err
    if len(text_b) > MAX_BODY_BYTES or not inflater.eof:
        raise fail("malformed", f"body is truncated or inflates beyond {MAX_BODY_BYTES} bytes")
    try:
        lines = [line for line in text_b.decode("utf-8").split("\n") if line.strip()]
    except UnicodeDecodeError as err:
        raise fail("malformed", "body is not UTF-8") from err
    ids, add, remove = [], [], []
    if mode == "full":
        ids = lines
    else:
        for line in lines:
            if line[0] == "+":
                add.append(line[1:])
            elif line[0] == "-":
                remove.append(line[1:])
            else:
                raise fail("malformed", "delta lines must start with + or -")
    return ListMessage(kind, mode, version, base, iat, exp, claims.get("device_id"), transaction, ids, add, remove,
                       claims.get("venue_id"))


def _unverified_transaction(manifest: bytes) -> str | None:
    """The transaction of a manifest that failed verification, only to correlate the answer."""
    try:
        claims = loads_strict(parse1(manifest).payload, "manifest")
    except CoseError:
        return None
    value = claims.get("transaction") if isinstance(claims, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


class ListUpdates:
    """Applies verified list messages arriving on ``lists/<kind>``; replies on ``response/lists``.

    Runs on the MQTT worker thread. The new list is written atomically before it is
    put in force; a failed write leaves the old list in force.

    Args:
        link: the gate's MqttLink (``subscribe``, ``publish``).
        store: the list files.
        lists: the lists in force.
        keys: the trusted command keys.
        device_id: this gate.
        wall: returns Unix seconds.
    """

    def __init__(self, link: Any, store: ListStore, lists: MemoryLists, keys: TrustStore, device_id: str,
                 wall: Callable[[], float] = time.time, venue_id: str = "", prefix: str = "qrgate") -> None:
        self.link, self.store, self.lists, self.keys = link, store, lists, keys
        self.device_id, self.wall, self.venue_id, self.prefix = device_id, wall, venue_id, prefix

    def attach(self) -> None:
        """Subscribe to ``lists/+``, and to the venue-wide topic once the gate has a venue."""
        self.link.subscribe("lists/+", self.handle, qos=1)
        if self.venue_id:
            self.link.subscribe_absolute(venue_list_topic(self.prefix, self.venue_id, "+"), self.handle_venue, qos=1)

    def handle(self, topic: str, payload: bytes, retained: bool, properties: dict[str, Any]) -> None:
        """A list sent to this gate (``<prefix>/<device_id>/lists/<kind>``; never retained)."""
        self._handle(topic, payload, retained, venue_topic=False)

    def handle_venue(self, topic: str, payload: bytes, retained: bool, properties: dict[str, Any]) -> None:
        """A venue-wide list (``<prefix>/venues/<venue_id>/lists/<kind>``; retained on purpose)."""
        self._handle(topic, payload, retained, venue_topic=True)

    def _handle(self, topic: str, payload: bytes, retained: bool, *, venue_topic: bool) -> None:
        kind = topic.rsplit("/", 1)[-1]
        if kind == "dcc":
            return  # the DCC trust list has its own handler (firmware.dcc_list_updates)
        catching_up = venue_topic and retained  # delivered because we (re)subscribed
        try:
            if retained and not venue_topic:
                raise ListMessageError("retained", "list messages must not be retained; publish with retain off")
            if kind not in KINDS:
                raise ListMessageError("wrong_kind", f"unknown list {kind!r}; use lists/deny or lists/allow")
            msg = decode_message(payload, self.keys, topic_kind=kind, device_id=self.device_id, now_s=self.wall(),
                                 venue_id=self.venue_id, venue_topic=venue_topic)
            if catching_up and msg.version <= self.lists.snapshot(kind).info.version:
                log.debug("venue %s list version %d already in force", kind, msg.version)
                return
            snap = self.apply(msg)
        except ListMessageError as err:
            if catching_up and err.reason == "expired":
                log.warning("the retained venue-wide %s list on %s has expired; publish a fresh one", kind, topic)
                return
            log.warning("list update on %s refused: %s", topic, err)
            self.reply("error", {"kind": kind}, str(err), err.transaction)
            return
        except StoreError as err:
            log.error("list update on %s could not be stored: %s", topic, err)
            self.reply("error", {"kind": kind}, f"storage: {err}", msg.transaction)
            return
        log.info("%s list now version %d with %d entries (%s%s)", kind, snap.info.version, snap.info.count,
                 msg.mode, ", venue-wide" if venue_topic else "")
        self.reply("ok", {"kind": kind, "version": snap.info.version, "count": snap.info.count, "mode": msg.mode,
                          "scope": "venue" if venue_topic else "device"}, None, msg.transaction)

    def apply(self, msg: ListMessage) -> Any:
        """Write and put in force a verified message.

        Raises:
            ListMessageError: ``old_version`` or ``base_version`` mismatch.
            StoreError: the list cannot be written.
        """
        current = self.lists.snapshot(msg.kind)
        if msg.version <= current.info.version:
            raise ListMessageError("old_version", f"version {msg.version} is not above the gate's "
                                   f"{current.info.version}", msg.transaction)
        source = f"mqtt:{msg.mode}"
        try:
            if msg.mode == "full":
                snap = self.store.replace(msg.kind, msg.ids, updated_s=float(msg.issued_at_s), source=source,
                                          version=msg.version, current=current)
            else:
                snap = self.store.apply_delta(msg.kind, add=msg.add, remove=msg.remove,
                                              updated_s=float(msg.issued_at_s), source=source,
                                              version=msg.version, base_version=msg.base_version, current=current)
        except ValueError as err:
            raise ListMessageError("base_version", str(err), msg.transaction) from err
        self.lists.swap(msg.kind, snap)
        return snap

    def reply(self, status: str, data: dict[str, Any], error: str | None, transaction: str | None) -> None:
        body = json.dumps({"status": status, "data": data, "error": error, "transaction": transaction},
                          ensure_ascii=False)
        self.link.publish(RESPONSE_TOPIC, body, qos=1, retain=False)


def open_gate_lists(app: Any) -> MemoryLists:
    """Load the gate's lists, report their age to the device state, and accept remote updates.

    Used by ``GateApp._open_lists``. Registers with the app: a ``device_inputs`` provider
    (``lists_stale``), ``status_fields`` and ``state_fields`` (versions, counts, ages), the
    ``lists_stale`` alarm, and, with a broker, the ``lists/<kind>`` subscription.
    """
    from firmware.keystore import load_trust_dir

    cfg = app.cfg
    store, lists = open_lists(cfg.state_dir / "lists", getattr(app, "alarms", None))
    app.list_store = store
    max_age_s = cfg.lists.max_age_h * 3600.0
    needed = ("deny", "allow") if cfg.policy.allow_list_required else ("deny",)

    def stale() -> list[str]:
        return lists.stale(time.time(), max_age_s, needed)

    def inputs() -> dict[str, Any]:
        names = stale()
        alarms = getattr(app, "alarms", None)
        if alarms is not None:
            alarms.set("lists_stale", f"{', '.join(names)} list(s) older than {cfg.lists.max_age_h:g} h "
                       f"(policy {cfg.lists.stale_policy})" if names else None)
        return {"lists_stale": bool(names)}

    def fields() -> dict[str, Any]:
        return {"lists": lists.status(time.time()), "lists_stale": stale(),
                "lists_stale_policy": cfg.lists.stale_policy}

    def lists_reload() -> dict[str, Any]:
        """Re-read both list files (after `qrgate list ... import` with the service stopped, or
        files copied in by hand); a damaged file keeps the list in memory as it was."""
        versions = {}
        for kind in ("deny", "allow"):
            lists.swap(kind, store.load(kind))
            versions[kind] = lists.snapshot(kind).info.version
        return {"lists": versions}

    getattr(app, "reload_hooks", []).append(lists_reload)
    getattr(app, "device_inputs", []).append(inputs)
    getattr(app, "status_fields", []).append(fields)
    getattr(app, "state_fields", []).append(fields)
    link = getattr(app, "link", None)
    if link is not None:
        keys = load_trust_dir(cfg.command_keys_dir, missing_ok=True)
        ListUpdates(link, store, lists, keys, cfg.device.id, venue_id=cfg.device.venue_id,
                    prefix=cfg.mqtt.prefix).attach()
    return lists
