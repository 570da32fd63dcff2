"""Provisioning by QR code while the gate runs, and the identity that follows from a record.

At start the composition root reads the stored provisioning record (``record_identity``
makes the identity from it and the config). While the gate runs, ``GateProvisioning``
sees every code before the policy (it is the loop's ``CodeInterceptor``). For one
provisioning code (``QGP1:``) seen by the camera:

1. the same payload seen again within ``repeat_window_s`` (it is still held in view):
   consumed silently, nothing else happens;
2. verify (``core.prov_code.check``) against the authority keys of
   ``keys.authority_dir`` only: ``malformed``, ``unknown_issuer``, ``bad_signature``,
   ``clock_unsynced``, ``not_yet_valid``, ``expired``;
3. a code for another gate (``device_id`` claim): ``wrong_device``;
4. a provisioned gate without re-provisioning allowed (``[provisioning]
   allow_reprovision`` or the re-provision pin held at boot): ``already_provisioned``;
5. a nonce used before: ``replayed``;
6. otherwise the record and the nonce are written in one atomic state write, the new
   identity is put in force at once (venue, direction, and the trusted issuers: exactly the
   config's plus the record's, so an issuer the new record drops stops working at the next
   code), the confirmation pattern plays and a ``provisioned`` event is recorded. The MQTT
   link cannot be re-pointed while it runs, so when the broker changed the gate asks for a
   restart (exit 75, which systemd follows with a start; the next start has that broker).

A refused code changes nothing: a ``denied`` event with credential ``provisioning`` and the
reason is recorded, the denial pattern plays, one log line says why. Scan loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.alarms import Alarms
from firmware.core import prov_code
from firmware.core.credentials.trust import TrustStore
from firmware.core.effective import issuers_from, record_identity
from firmware.core.errors import StoreError
from firmware.core.events import EventFactory
from firmware.core.identity import IdentityCell
from firmware.core.model import CredentialType, DecodedCode, Moment
from firmware.ports import Outputs, ProvisioningStore, Recorder, RestartRequest

log = logging.getLogger(__name__)

PROVISIONING_KEY = "provisioning"
PROVISIONED = "provisioned"
__all__ = ["GateProvisioning", "IntakeResult", "ProvisioningSettings", "issuers_from", "record_identity"]


@dataclass
class IntakeResult:
    """What happened to the last provisioning code (for status and tests)."""

    accepted: bool
    reason: str
    code: prov_code.ProvisioningCode | None = None


@dataclass(frozen=True)
class ProvisioningSettings:
    """What provisioning needs from the config.

    Attributes:
        device_id: this gate (a code addressed to another gate is refused).
        broker: the broker the gate is connected to now (``host``, ``port``), or None.
        allow_reprovision: accept codes on a provisioned gate (setting or pin held at boot).
        repeat_window_s: a payload held in view is handled once per window.
        clock_skew_s: tolerance on the code's validity window.
        device_key: the gate's Ed25519 public key (raw, base64url): the ``provisioned`` event
            carries it with the code's nonce, so the history can enrol it (empty: not carried).
    """

    device_id: str
    broker: tuple[str, int] | None = None
    allow_reprovision: bool = False
    repeat_window_s: float = 5.0
    clock_skew_s: float = 0.0
    device_key: str = ""


class GateProvisioning:
    """Applies valid provisioning codes; the only writer of the gate's identity.

    Args:
        identity: the cell holding the identity in force.
        config_trust: the issuer keys of the config's issuer directory.
        authority: the trusted provisioning authority keys (``keys.authority_dir``).
        store: the state store holding the record and the used nonces.
        record: the record loaded at start, or None.
        recorder: records ``provisioned`` and refused-code events.
        events: builds those events.
        outputs: the confirmation and refusal patterns.
        alarms: ``state_corrupt`` is cleared once a new record is written.
        restart: asked for a restart when a new record names another broker.
        settings: see ProvisioningSettings.
        on_change: called after a new identity is in force (wakes the device monitor).
    """

    def __init__(self, *, identity: IdentityCell, config_trust: TrustStore, authority: TrustStore,
                 store: ProvisioningStore, record: dict[str, Any] | None, recorder: Recorder, events: EventFactory,
                 outputs: Outputs, alarms: Alarms, restart: RestartRequest, settings: ProvisioningSettings,
                 on_change: Callable[[], None] | None = None) -> None:
        self.identity, self.config_trust, self.authority, self.store = identity, config_trust, authority, store
        self.record, self.recorder, self.events, self.outputs = record, recorder, events, outputs
        self.alarms, self.restart, self.settings, self._on_change = alarms, restart, settings, on_change
        self.last: IntakeResult | None = None
        self._seen: dict[str, float] = {}

    def start(self) -> None:
        """Nothing to start: codes come through the scan loop (``intercept``)."""

    def stop(self) -> None:
        """Nothing to stop: every record is written before it is applied."""

    # ------------------------------------------------------------------ sources

    def device_inputs(self) -> dict[str, Any]:
        """``provisioned``: the gate has a venue (from the config or a record)."""
        return {"provisioned": self.identity.current.provisioned}

    def status_fields(self) -> dict[str, Any]:
        identity = self.identity.current
        return {"provisioned": identity.provisioned, "venue_id": identity.venue_id,
                "venue_name": identity.venue_name, "direction": identity.direction,
                "state_alarm": self.store.alarm()}

    # ------------------------------------------------------------------ the interceptor

    def intercept(self, code: DecodedCode, now: Moment) -> bool:
        """Handle a provisioning code; return False at once for any other payload."""
        if not prov_code.detect(code.payload):
            return False
        sha = code.sha256
        window_s = self.settings.repeat_window_s
        seen = self._seen.get(sha)
        self._seen = {k: v for k, v in self._seen.items() if now.mono_s - v < window_s}
        self._seen[sha] = now.mono_s
        if seen is not None and now.mono_s - seen < window_s:
            return True
        result = prov_code.check(code.payload, self.authority, now.wall_s, now.wall_trusted,
                                 self.settings.clock_skew_s)
        if isinstance(result, prov_code.ProvisioningRefusal):
            self._refuse(result.reason, result.detail, sha, now)
            return True
        if result.device_id and result.device_id != self.settings.device_id:
            self._refuse(prov_code.WRONG_DEVICE, f"code is for gate {result.device_id}", sha, now)
            return True
        if self.identity.current.provisioned and not self.settings.allow_reprovision:
            self._refuse(prov_code.ALREADY_PROVISIONED, "the gate is provisioned; set [provisioning] "
                         "allow_reprovision or hold the re-provision pin at boot", sha, now)
            return True
        nonce_hex = result.nonce.hex()
        if self.store.nonce_used(nonce_hex):
            self._refuse(prov_code.REPLAYED, "this code was already used; make a new one", sha, now)
            return True
        record = result.to_record(now.wall_s)
        try:
            with self.store.batch():
                self.store.put(PROVISIONING_KEY, record)
                self.store.add_nonce(nonce_hex, result.expires_s, now.wall_s)
                self.store.clear_alarm()
        except StoreError as err:
            log.error("provisioning code valid but cannot be saved, nothing changed: %s", err)
            self._record(sha, now, "denied", "storage_full")
            self.outputs.confirm(False)
            self.last = IntakeResult(False, "storage_full", result)
            return True
        restarts = self._apply(record)
        log.info("provisioned: venue %s, direction %s, broker %s, %d issuer key(s), by authority key %s%s",
                 result.venue_id, result.direction, result.broker or "-", len(result.issuer_keys_der),
                 result.authority_kid_hex, "; the broker is new: restarting to connect to it" if restarts else "")
        self.outputs.confirm(True)
        self._record(sha, now, PROVISIONED, "ok", prov_nonce=nonce_hex)
        self.last = IntakeResult(True, "ok", result)
        return True

    def _apply(self, record: dict[str, Any]) -> bool:
        """Put the record's identity in force at once; ask for a restart if the broker changed.

        Returns:
            True if a restart was asked for (the caller's log line says so).
        """
        self.record = record
        self.identity.swap(record_identity(self.identity.current, record, self.config_trust))
        self.alarms.set("state_corrupt", None)
        if self._on_change is not None:
            self._on_change()
        broker = prov_code.parse_broker(record.get("broker") or "")
        if broker is not None and broker != self.settings.broker:
            # a normal step of a first provisioning: the INFO line of the caller says it
            self.restart.request_restart(f"new broker {record['broker']}")
            return True
        return False

    def _refuse(self, reason: str, detail: str, sha: str, now: Moment) -> None:
        log.warning("provisioning code %s refused: %s (%s)", sha[:12], reason, detail)
        self.outputs.confirm(False)
        self._record(sha, now, "denied", reason)
        self.last = IntakeResult(False, reason)

    def _record(self, sha: str, now: Moment, decision: str, reason: str, prov_nonce: str | None = None) -> None:
        enrol = prov_nonce is not None and bool(self.settings.device_key)
        event = self.events.build_record(decision=decision, reason=reason,
                                         credential=CredentialType.PROVISIONING.value, code_sha256=sha,
                                         wall_s=now.wall_s, time_synced=now.wall_trusted,
                                         prov_nonce=prov_nonce if enrol else None,
                                         device_key=self.settings.device_key if enrol else None)
        try:
            self.recorder.append(event)
        except StoreError as err:
            log.error("cannot record the provisioning event: %s", err)
