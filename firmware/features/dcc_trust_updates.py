"""DCC trust-list updates over MQTT, signed like the deny/allow lists (feature of a running gate).

Topics: ``<prefix>/<device_id>/lists/dcc`` (one gate, never retained) and
``<prefix>/venues/<venue_id>/lists/dcc`` (every gate of a venue, **retained**, so a gate
that was offline or is installed later gets the latest list when it connects). Answers go
to ``<prefix>/<device_id>/response/lists`` like the other lists'.

Message: the CBOR array ``[manifest, body]``. ``manifest`` is a COSE_Sign1 by a **remote
command key** (``keys.command_dir``) over ``{t: "qrgate.dcc-trust/1", version, iat, exp
(at most 7 days after iat), sha256 (of body), venue_id (required on the venue topic),
device_id?, transaction?}``; ``body`` is zlib'd JSON, the DSC list format that
``qrgate keys dcc import`` reads (``[{"kid", "country", "rawData"}]``). A list is put in
force only when its version is above the installed one and it holds at least one usable
DSC; it is written atomically first (``keys.dcc_trust_list``), with the manifest's
``iat`` as its issue time, so ``[policy.dcc] max_trust_list_age_h`` counts from when the
operator signed it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from firmware.core.credentials.dcc_trust import DscStore, LiveDscStore
from firmware.core.credentials.trust import TrustStore
from firmware.core.dcc_trust_message import (
    KIND,
    ImportedList,
    TrustMessage,
    TrustMessageError,
    decode_trust_message,
    json_entries,
    list_digest,
)
from firmware.core.list_message import RESPONSE_TOPIC, venue_list_topic
from firmware.ports import DccTrustFile, Link

log = logging.getLogger(__name__)



class DccTrustUpdates:
    """Applies verified trust-list messages; replies on ``response/lists``. Runs on the MQTT worker thread.

    Args:
        link: the gate's MQTT link.
        live: the DSC store in force.
        trust_file: the installed list (``keys.dcc_trust_list``), written atomically before the swap.
        keys: the trusted command keys.
        device_id, venue_id, prefix: this gate.
        wall: returns Unix seconds.
    """

    def __init__(self, link: Link, live: LiveDscStore, trust_file: DccTrustFile, keys: TrustStore, device_id: str, *,
                 wall: Callable[[], float], venue_id: str = "", prefix: str = "qrgate") -> None:
        self.link, self.live, self.trust_file, self.keys = link, live, trust_file, keys
        self.device_id, self.venue_id, self.prefix, self.wall = device_id, venue_id, prefix, wall

    def stop(self) -> None:
        """Nothing to stop: the link's shutdown ends the subscriptions."""

    def start(self) -> None:
        """Subscribe to ``lists/dcc``, and to the venue-wide topic once the gate has a venue."""
        self.link.subscribe(f"lists/{KIND}", self.handle, qos=1)
        if self.venue_id:
            self.link.subscribe_absolute(venue_list_topic(self.prefix, self.venue_id, KIND), self.handle_venue, qos=1)

    def handle(self, topic: str, payload: bytes, retained: bool, properties: dict[str, Any]) -> None:
        """A trust list sent to this gate (never retained)."""
        self._handle(topic, payload, retained, venue_topic=False)

    def handle_venue(self, topic: str, payload: bytes, retained: bool, properties: dict[str, Any]) -> None:
        """A venue-wide trust list (retained on purpose)."""
        self._handle(topic, payload, retained, venue_topic=True)

    def _handle(self, topic: str, payload: bytes, retained: bool, *, venue_topic: bool) -> None:
        catching_up = venue_topic and retained
        if not payload:
            return  # a retained topic being cleared
        try:
            if retained and not venue_topic:
                raise TrustMessageError("retained", "trust lists to one gate must not be retained")
            msg = decode_trust_message(payload, self.keys, device_id=self.device_id, venue_id=self.venue_id,
                                       now_s=self.wall(), venue_topic=venue_topic)
            if catching_up and msg.version <= self.live.store.version:
                log.debug("venue DCC trust list version %d already in force", msg.version)
                return
            store = self.apply(msg)
        except TrustMessageError as err:
            if catching_up and err.reason == "expired":
                log.warning("the retained venue-wide DCC trust list on %s has expired; publish a fresh one", topic)
                return
            log.warning("DCC trust list update on %s refused: %s", topic, err)
            self.reply("error", {"kind": KIND}, str(err), err.transaction)
            return
        except OSError as err:
            log.error("DCC trust list update on %s could not be stored: %s", topic, err)
            self.reply("error", {"kind": KIND}, f"storage: {err}", None)
            return
        except Exception as err:  # hostile input is a refusal with a reason, whatever it holds
            log.warning("DCC trust list update on %s refused: malformed (%s)", topic, type(err).__name__)
            self.reply("error", {"kind": KIND}, f"malformed: unreadable message ({type(err).__name__})", None)
            return
        log.info("DCC trust list now version %d with %d DSC(s)%s", store.version, len(store),
                 ", venue-wide" if venue_topic else "")
        self.reply("ok", {"kind": KIND, "version": store.version, "count": len(store), "countries": store.countries(),
                          "scope": "venue" if venue_topic else "device"}, None, msg.transaction)

    def apply(self, msg: TrustMessage) -> DscStore:
        """Write and put in force a verified message.

        Raises:
            TrustMessageError: ``old_version``, or ``malformed`` (not a DSC list, or no usable DSC).
            OSError: the list file cannot be written (the old list stays in force).
        """
        current = self.live.store.version
        if msg.version <= current:
            raise TrustMessageError("old_version", f"version {msg.version} is not above the gate's {current}",
                                    msg.transaction)
        out = ImportedList()
        try:
            json_entries(json.loads(msg.body_json.decode("utf-8")), out)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise TrustMessageError("malformed", f"body is not a JSON DSC list ({err})", msg.transaction) from err
        for problem in out.problems:
            log.warning("DCC trust list version %d: skipped %s", msg.version, problem)
        if not out.dscs:
            raise TrustMessageError("malformed", "the list holds no usable DSC", msg.transaction)
        store = DscStore(out.dscs, installed_at_s=float(msg.issued_at_s), version=msg.version)
        self.trust_file.write(store, installed_at_s=float(msg.issued_at_s), list_sha256=list_digest(msg.body_json),
                              version=msg.version)
        self.live.swap(store)
        return store

    def reply(self, status: str, data: dict[str, Any], error: str | None, transaction: str | None) -> None:
        body = json.dumps({"status": status, "data": data, "error": error, "transaction": transaction},
                          ensure_ascii=False)
        self.link.publish(RESPONSE_TOPIC, body, qos=1, retain=False)
