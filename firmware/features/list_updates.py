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

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from firmware.adapters.list_files import ListStore, open_lists
from firmware.core.credentials.trust import TrustStore
from firmware.core.errors import StoreError
from firmware.core.list_message import ListMessage, ListMessageError, decode_message, venue_list_topic
from firmware.core.lists import KINDS, MemoryLists

log = logging.getLogger(__name__)


RESPONSE_TOPIC = "response/lists"


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
    from firmware.adapters.keystore import load_trust_dir

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
