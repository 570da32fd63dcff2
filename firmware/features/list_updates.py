"""Deny and allow lists in the running gate: staleness, reload, and signed updates over MQTT.

``GateLists`` owns the lists in force (``core.lists.MemoryLists``, read by the gatekeeper):
it reports their age to the device state (``lists_stale``) and to the status, reloads
them from disk on ``reload``, and with a broker accepts signed list messages
(``core.list_message``) on ``<prefix>/<device_id>/lists/<kind>`` and, for a provisioned
gate, on the venue-wide ``<prefix>/venues/<venue_id>/lists/<kind>`` (retained).
Each message is answered on ``response/lists``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.alarms import Alarms
from firmware.core.credentials.trust import TrustStore
from firmware.core.errors import StoreError
from firmware.core.list_message import RESPONSE_TOPIC, ListMessage, ListMessageError, decode_message, venue_list_topic
from firmware.core.lists import KINDS, MemoryLists
from firmware.ports import Link, ListFiles

log = logging.getLogger(__name__)



class ListUpdates:
    """Applies verified list messages arriving on ``lists/<kind>``; replies on ``response/lists``.

    Runs on the MQTT worker thread. The new list is written atomically before it is
    put in force; a failed write leaves the old list in force.

    Args:
        link: the gate's MQTT link.
        store: the list files.
        lists: the lists in force.
        keys: the trusted command keys.
        device_id: this gate.
        wall: returns Unix seconds.
    """

    def __init__(self, link: Link, store: ListFiles, lists: MemoryLists, keys: TrustStore, device_id: str,
                 wall: Callable[[], float], venue_id: str = "", prefix: str = "qrgate") -> None:
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
            return  # the DCC trust list has its own feature (firmware.features.dcc_trust_updates)
        catching_up = venue_topic and retained  # delivered because we (re)subscribed
        try:
            if retained and not venue_topic:
                raise ListMessageError("retained", "list messages must not be retained; publish with retain off")
            if kind not in KINDS:
                raise ListMessageError("wrong_kind", f"unknown list {kind!r}; use lists/deny or lists/allow")
            msg = decode_message(payload, self.keys, topic_kind=kind, device_id=self.device_id, now_s=self.wall(),
                                 venue_id=self.venue_id, venue_topic=venue_topic, prefix=self.prefix)
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
        except Exception as err:  # hostile input is a refusal with a reason, whatever it holds
            log.warning("list update on %s refused: malformed (%s)", topic, type(err).__name__)
            self.reply("error", {"kind": kind}, f"malformed: unreadable message ({type(err).__name__})", None)
            return
        log.info("%s list now version %d with %d entries (%s%s)", kind, snap.info.version, snap.info.count,
                 msg.mode, ", venue-wide" if venue_topic else "")
        data = {"kind": kind, "version": snap.info.version, "count": snap.info.count, "mode": msg.mode,
                "scope": "venue" if venue_topic else "device"}
        if snap.info.timed:
            data["timed"] = snap.info.timed  # entries with an end (within count)
        if msg.stripped:
            # reported, not refused: the ids are hashed in their canonical form without those characters
            log.warning("%s list version %d: %d id(s) held invisible or control characters, removed",
                        kind, snap.info.version, msg.stripped)
            data["stripped"] = msg.stripped
        self.reply("ok", data, None, msg.transaction)

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
                                          version=msg.version, current=current, ends=msg.ends)
            else:
                if msg.base_version is None:  # decode_message refuses these; never apply a delta blind
                    raise ValueError("a delta must name its base_version")
                snap = self.store.apply_delta(msg.kind, add=msg.add, remove=msg.remove,
                                              updated_s=float(msg.issued_at_s), source=source,
                                              version=msg.version, base_version=msg.base_version, current=current,
                                              ends=msg.ends)
        except ValueError as err:
            raise ListMessageError("base_version", str(err), msg.transaction) from err
        self.lists.swap(msg.kind, snap)
        return snap

    def reply(self, status: str, data: dict[str, Any], error: str | None, transaction: str | None) -> None:
        body = json.dumps({"status": status, "data": data, "error": error, "transaction": transaction},
                          ensure_ascii=False)
        self.link.publish(RESPONSE_TOPIC, body, qos=1, retain=False)


@dataclass(frozen=True)
class ListSettings:
    """What the lists feature needs from the config.

    Attributes:
        max_age_h: ``lists.max_age_h``: older lists are stale.
        stale_policy: ``lists.stale_policy`` (reported; the device monitor applies it).
        allow_list_required: ``policy.allow_list_required``: the allow list must be fresh too.
        device_id, venue_id, prefix: where list messages come from.
    """

    max_age_h: float
    stale_policy: str
    allow_list_required: bool
    device_id: str
    venue_id: str = ""
    prefix: str = "qrgate"


class GateLists:
    """The lists in force, their freshness, their reload and their remote updates.

    Args:
        store: the list files.
        lists: the lists in force, as loaded at start.
        alarms: where ``lists_stale`` is raised.
        settings: see ListSettings.
        wall: Unix seconds (list ages, message validity).
        link: the MQTT link, or None without a broker.
        command_keys: the keys that may sign list messages.
    """

    def __init__(self, *, store: ListFiles, lists: MemoryLists, alarms: Alarms, settings: ListSettings,
                 wall: Callable[[], float], link: Link | None = None,
                 command_keys: TrustStore | None = None) -> None:
        self.store, self.lists, self.alarms, self.settings, self.wall = store, lists, alarms, settings, wall
        self._needed = ("deny", "allow") if settings.allow_list_required else ("deny",)
        self.updates = None if link is None else ListUpdates(
            link, store, lists, command_keys or TrustStore(), settings.device_id, wall=wall,
            venue_id=settings.venue_id, prefix=settings.prefix)

    def start(self) -> None:
        """Subscribe to list messages (before the link starts)."""
        if self.updates is not None:
            self.updates.attach()

    def stop(self) -> None:
        """Nothing to stop: the link's shutdown ends the subscriptions."""

    def stale(self) -> list[str]:
        """The needed lists older than ``max_age_h`` (or damaged)."""
        return self.lists.stale(self.wall(), self.settings.max_age_h * 3600.0, self._needed)

    def unavailable(self) -> list[str]:
        """The needed lists that could not be read (damaged, or moved aside and not replaced)."""
        return sorted(k for k in self._needed if k in self.lists.damaged)

    def device_inputs(self) -> dict[str, Any]:
        names = self.stale()
        s = self.settings
        self.alarms.set("lists_stale", f"{', '.join(names)} list(s) older than {s.max_age_h:g} h or unreadable "
                        f"(policy {s.stale_policy})" if names else None)
        return {"lists_stale": bool(names), "lists_unavailable": bool(self.unavailable())}

    def status_fields(self) -> dict[str, Any]:
        return {"lists": self.lists.status(self.wall()), "lists_stale": self.stale(),
                "lists_unavailable": self.unavailable(), "lists_stale_policy": self.settings.stale_policy}

    def reload(self) -> dict[str, Any]:
        """Re-read both list files (after `qrgate list ... import` with the service stopped, or
        files copied in by hand); a damaged file keeps the list in memory as it was.

        Raises:
            StoreError: a list file is damaged.
        """
        versions = {}
        for kind in KINDS:
            self.lists.swap(kind, self.store.load(kind))
            versions[kind] = self.lists.snapshot(kind).info.version
        return {"lists": versions}
