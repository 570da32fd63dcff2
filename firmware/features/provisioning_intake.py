"""Device side of the provisioning QR: a CodeInterceptor that applies ``QGP1:`` codes.

Flow for one provisioning code seen by the camera:

1. the same payload seen again within ``repeat_window_s`` (it is still held in view):
   consumed silently, nothing else happens;
2. verify (``firmware.prov_code.check``) against the authority keys of
   ``keys.authority_dir`` only: ``malformed``, ``unknown_issuer``, ``bad_signature``,
   ``clock_unsynced``, ``not_yet_valid``, ``expired``;
3. a code for another gate (``device_id`` claim): ``wrong_device``;
4. a provisioned gate without re-provisioning allowed (``[provisioning]
   allow_reprovision`` or the re-provision pin held at boot): ``already_provisioned``;
5. a nonce used before: ``replayed``;
6. otherwise the record and the nonce are written in one atomic state write, the
   ``on_applied`` callback updates the running gate, the confirmation pattern plays
   and a ``provisioned`` event is recorded.

A refused code changes nothing: a ``denied`` event with credential ``provisioning``
and the reason is recorded, the denial pattern plays, one log line says why.
Runs on the scan loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.adapters.state_store import StateStore
from firmware.core import prov_code
from firmware.core.credentials.trust import TrustStore
from firmware.core.errors import StoreError
from firmware.core.events import EventFactory
from firmware.core.model import CredentialType, DecodedCode, Moment, ScanEvent

log = logging.getLogger(__name__)

PROVISIONING_KEY = "provisioning"
PROVISIONED = "provisioned"

# Confirmation: green LED and buzzer together, two long pulses (a grant is one short beep,
# a denial three short ones, so a technician can tell them apart by ear).
CONFIRM_ON_S = 0.6
CONFIRM_OFF_S = 0.2
CONFIRM_PULSES = 2


def confirm_on_outputs(outputs: Any) -> Callable[[bool], None]:
    """Feedback for provisioning on a GpiozeroOutputs-like object (green, red, buzzer devices).

    Accepted: green LED and buzzer play two long pulses together (never the relay).
    Refused: the red LED and buzzer play three quick pulses, as for a denied pass.
    Returns at once; gpiozero plays the patterns on its own threads.
    """
    def feedback(accepted: bool) -> None:
        green, red, buzzer = (getattr(outputs, n, None) for n in ("green", "red", "buzzer"))
        if accepted and green is not None and buzzer is not None:
            if red is not None:
                red.off()
            green.blink(on_time=CONFIRM_ON_S, off_time=CONFIRM_OFF_S, n=CONFIRM_PULSES, background=True)
            buzzer.blink(on_time=CONFIRM_ON_S, off_time=CONFIRM_OFF_S, n=CONFIRM_PULSES, background=True)
        elif red is not None and buzzer is not None:
            if green is not None:
                green.off()
            red.blink(on_time=0.15, off_time=0.1, n=3, background=True)
            buzzer.blink(on_time=0.15, off_time=0.1, n=3, background=True)
    return feedback


@dataclass
class IntakeResult:
    """What happened to the last provisioning code (for status and tests)."""

    accepted: bool
    reason: str
    code: prov_code.ProvisioningCode | None = None


class ProvisioningIntake:
    """Applies valid provisioning codes; implements ``firmware.service.CodeInterceptor``.

    Args:
        authority: the trusted provisioning authority keys (from ``keys.authority_dir``).
        store: the state store holding the provisioning record and used nonces.
        device_id: this gate's id (a code addressed to another gate is refused).
        record: stores a provisioning event and tells the gate's listeners (the service's
            ``record``, so the publisher and ``--print-events`` see it too); raises StoreError.
        events: returns the gate's current EventFactory (it changes when provisioned).
        on_applied: called with the new record after it is persisted; updates the gate.
        feedback: plays the accepted (True) or refused (False) pattern; returns at once.
        is_provisioned: True if the gate already has a venue.
        allow_reprovision: accept codes on a provisioned gate.
        repeat_window_s: a payload held in view is handled once per window.
        clock_skew_s: tolerance on the code's validity window.
    """

    def __init__(self, *, authority: TrustStore, store: StateStore, device_id: str,
                 record: Callable[[ScanEvent], ScanEvent],
                 events: Callable[[], EventFactory], on_applied: Callable[[dict[str, Any]], None],
                 feedback: Callable[[bool], None], is_provisioned: Callable[[], bool],
                 allow_reprovision: bool = False, repeat_window_s: float = 5.0,
                 clock_skew_s: float = 0.0) -> None:
        self.authority = authority
        self.store = store
        self.device_id = device_id
        self.record_event = record
        self.events = events
        self.on_applied = on_applied
        self.feedback = feedback
        self.is_provisioned = is_provisioned
        self.allow_reprovision = allow_reprovision
        self.repeat_window_s = repeat_window_s
        self.clock_skew_s = clock_skew_s
        self.last: IntakeResult | None = None
        self._seen: dict[str, float] = {}

    def intercept(self, code: DecodedCode, now: Moment) -> bool:
        """Handle a provisioning code; return False at once for any other payload."""
        if not prov_code.detect(code.payload):
            return False
        sha = code.sha256
        seen = self._seen.get(sha)
        self._seen = {k: v for k, v in self._seen.items() if now.mono_s - v < self.repeat_window_s}
        self._seen[sha] = now.mono_s
        if seen is not None and now.mono_s - seen < self.repeat_window_s:
            return True
        result = prov_code.check(code.payload, self.authority, now.wall_s, now.wall_trusted, self.clock_skew_s)
        if isinstance(result, prov_code.ProvisioningRefusal):
            self._refuse(result.reason, result.detail, sha, now)
            return True
        if result.device_id and result.device_id != self.device_id:
            self._refuse(prov_code.WRONG_DEVICE, f"code is for gate {result.device_id}", sha, now)
            return True
        if self.is_provisioned() and not self.allow_reprovision:
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
            self.feedback(False)
            self.last = IntakeResult(False, "storage_full", result)
            return True
        self.on_applied(record)
        log.info("provisioned: venue %s, direction %s, broker %s, %d issuer key(s), by authority key %s",
                 result.venue_id, result.direction, result.broker or "-", len(result.issuer_keys_der),
                 result.authority_kid_hex)
        self.feedback(True)
        self._record(sha, now, PROVISIONED, "ok")
        self.last = IntakeResult(True, "ok", result)
        return True

    def _refuse(self, reason: str, detail: str, sha: str, now: Moment) -> None:
        log.warning("provisioning code %s refused: %s (%s)", sha[:12], reason, detail)
        self.feedback(False)
        self._record(sha, now, "denied", reason)
        self.last = IntakeResult(False, reason)

    def _record(self, sha: str, now: Moment, decision: str, reason: str) -> None:
        event = self.events().build_record(decision=decision, reason=reason,
                                           credential=CredentialType.PROVISIONING.value, code_sha256=sha,
                                           wall_s=now.wall_s, time_synced=now.wall_trusted)
        try:
            self.record_event(event)
        except StoreError as err:
            log.error("cannot record the provisioning event: %s", err)
