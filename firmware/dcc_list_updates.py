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

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from firmware.cose import CoseError, loads_strict, parse1, sign1, verify1
from firmware.credentials.dcc_trust import DscStore
from firmware.credentials.trust import TrustStore
from firmware.dcc_keystore import ImportedList, json_entries, list_digest, write_trust_list
from firmware.list_updates import MAX_VALIDITY_S, RESPONSE_TOPIC, venue_list_topic

log = logging.getLogger(__name__)

KIND = "dcc"
TRUST_TYPE = "qrgate.dcc-trust/1"
MAX_BODY_BYTES = 16 * 1024 * 1024


class LiveDscStore:
    """The DSC store in force, swapped whole by the update feature (one writer: the MQTT thread).

    The scan loop reads ``store`` once per code; replacing the reference is atomic.
    """

    def __init__(self, store: DscStore) -> None:
        self.store = store

    def swap(self, store: DscStore) -> None:
        """Put a new store in force."""
        self.store = store


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
        raise TrustMessageError(err.reason.value, err.detail, _unverified_transaction(manifest)) from err
    if not isinstance(claims, dict) or claims.get("t") != TRUST_TYPE:
        raise TrustMessageError("malformed", f"manifest type is not {TRUST_TYPE}")
    transaction = claims.get("transaction") if isinstance(claims.get("transaction"), str) else None

    def fail(reason: str, detail: str) -> TrustMessageError:
        return TrustMessageError(reason, detail, transaction)

    version, iat, exp = claims.get("version"), claims.get("iat"), claims.get("exp")
    if type(version) is not int or version < 1:
        raise fail("malformed", "version missing or invalid")
    if type(iat) is not int or type(exp) is not int or not 0 < exp - iat <= MAX_VALIDITY_S:
        raise fail("malformed", "iat/exp missing, or valid for more than 7 days")
    if claims.get("device_id") not in (None, device_id):
        raise fail("wrong_device", f"message is for gate {claims.get('device_id')}")
    claimed_venue = claims.get("venue_id")
    if venue_topic and claimed_venue is None:
        raise fail("wrong_venue", "a venue-wide trust list must name its venue_id in the signed manifest")
    if claimed_venue is not None and (not venue_id or claimed_venue != venue_id):
        raise fail("wrong_venue", f"message is for venue {claimed_venue!r}, this gate is in {venue_id or 'no venue'!r}")
    if now_s < iat - 300:
        raise fail("not_yet_valid", "issued in the future; check the clocks")
    if now_s >= exp:
        raise fail("expired", "the message expired; send a new one")
    if claims.get("sha256") != hashlib.sha256(body).digest():
        raise fail("bad_signature", "the body does not match the signed hash")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as err:
        raise fail("malformed", f"body is not zlib data ({err})") from err
    if len(text) > MAX_BODY_BYTES or not inflater.eof:
        raise fail("malformed", f"body is truncated or inflates beyond {MAX_BODY_BYTES} bytes")
    return TrustMessage(version, iat, exp, text, transaction, claimed_venue)


def _unverified_transaction(manifest: bytes) -> str | None:
    """The transaction of a manifest that failed verification, only to correlate the answer."""
    try:
        claims = loads_strict(parse1(manifest).payload, "manifest")
    except CoseError:
        return None
    value = claims.get("transaction") if isinstance(claims, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


class DccTrustUpdates:
    """Applies verified trust-list messages; replies on ``response/lists``. Runs on the MQTT worker thread.

    Args:
        link: the gate's MqttLink.
        live: the DSC store in force.
        path: ``keys.dcc_trust_list`` (written atomically before the swap).
        keys: the trusted command keys.
        device_id, venue_id, prefix: this gate.
        wall: returns Unix seconds.
    """

    def __init__(self, link: Any, live: LiveDscStore, path: Path, keys: TrustStore, device_id: str, *,
                 venue_id: str = "", prefix: str = "qrgate", wall: Callable[[], float] = time.time) -> None:
        self.link, self.live, self.path, self.keys = link, live, Path(path), keys
        self.device_id, self.venue_id, self.prefix, self.wall = device_id, venue_id, prefix, wall

    def attach(self) -> None:
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
            self.reply("error", {"kind": KIND}, f"storage: {err}", msg.transaction)
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
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TrustMessageError("malformed", f"body is not a JSON DSC list ({err})", msg.transaction) from err
        for problem in out.problems:
            log.warning("DCC trust list version %d: skipped %s", msg.version, problem)
        if not out.dscs:
            raise TrustMessageError("malformed", "the list holds no usable DSC", msg.transaction)
        store = DscStore(out.dscs, installed_at_s=float(msg.issued_at_s), version=msg.version)
        write_trust_list(self.path, store, installed_at_s=float(msg.issued_at_s),
                         list_sha256=list_digest(msg.body_json), version=msg.version)
        self.live.swap(store)
        return store

    def reply(self, status: str, data: dict[str, Any], error: str | None, transaction: str | None) -> None:
        body = json.dumps({"status": status, "data": data, "error": error, "transaction": transaction},
                          ensure_ascii=False)
        self.link.publish(RESPONSE_TOPIC, body, qos=1, retain=False)


def attach_dcc_trust_updates(link: Any, live: LiveDscStore, cfg: Any) -> None:
    """With a broker, accept signed DCC trust-list updates (``GateApp.build`` calls it)."""
    if link is None:
        return
    from firmware.keystore import load_trust_dir

    keys = load_trust_dir(cfg.command_keys_dir, missing_ok=True)
    DccTrustUpdates(link, live, cfg.dcc_trust_list, keys, cfg.device.id, venue_id=cfg.device.venue_id,
                    prefix=cfg.mqtt.prefix).attach()
