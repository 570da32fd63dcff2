"""Remote control: signed commands over MQTT (``open``, ``mode``, ``reload``, ``rebirth``, ``identify``).

Commands: subscribed to ``<prefix>/<device_id>/cmd/+`` on a clean session (the link
never keeps a session, so the broker cannot queue an ``open`` for a gate that was
offline). Every message goes through ``core.remote_command.CommandVerifier``; the nonce
cache is persisted (atomically, fsynced) before the command is acted on; the answer
goes to ``<prefix>/<device_id>/response/<name>`` (QoS 1, not retained) with
``status``, ``error``, ``detail``, ``data`` and the echoed ``transaction``.

Adding a command: its name and argument checks go in the codec
(``firmware/core/remote_command.py``), its action in ``RemoteControl.ACTIONS`` here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from firmware.core.device_state import DeviceState
from firmware.core.errors import StoreError
from firmware.core.events import EventFactory
from firmware.core.model import CredentialType, Reason
from firmware.core.remote_command import Command, CommandVerifier, Reject, Verdict, response_body
from firmware.ports import Clock, GateControl, Link, NonceStore, Outputs, Recorder, Republisher

log = logging.getLogger(__name__)

ActionResult = tuple[dict[str, Any], str | None]


class RemoteControl:
    """Receives, verifies, acts on and answers remote commands. Runs on the MQTT worker thread.

    Args:
        link: the gate's MQTT link.
        verifier: the CommandVerifier for this gate (its nonce cache came from ``nonces``).
        nonces: where the nonce cache is persisted.
        clock: the gate's clock.
        control: the gate's state, mode and reload (the device monitor).
        outputs: the relay (``open``).
        recorder: records the event of a remote opening before the relay moves.
        events: builds that event.
        republishers: what ``rebirth`` publishes again (discovery, the retained state).
        relay_pulse_ms: the default pulse of ``open``.
    """

    ACTIONS: ClassVar[dict[str, str]] = {"open": "_open", "mode": "_mode", "reload": "_reload",
                                         "rebirth": "_rebirth", "identify": "_identify"}

    def __init__(self, *, link: Link, verifier: CommandVerifier, nonces: NonceStore, clock: Clock,
                 control: GateControl, outputs: Outputs, recorder: Recorder, events: EventFactory,
                 republishers: Sequence[Republisher] = (), relay_pulse_ms: int = 1000) -> None:
        self.link, self.verifier, self.nonces, self.clock = link, verifier, nonces, clock
        self.control, self.outputs, self.recorder, self.events = control, outputs, recorder, events
        self._republishers = tuple(republishers)
        self.relay_pulse_ms = relay_pulse_ms
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self._actions: dict[str, Callable[[Command], ActionResult]] = {
            name: getattr(self, method) for name, method in self.ACTIONS.items()}

    def start(self) -> None:
        """Subscribe to ``cmd/+`` (renewed by the link after every reconnect); before the link starts."""
        self.link.subscribe("cmd/+", self.handle, qos=1)

    def stop(self) -> None:
        """Nothing to stop: the link's shutdown ends the subscription."""

    def handle(self, topic: str, payload: bytes, retained: bool, props: dict[str, Any]) -> None:
        """One command message (MQTT worker thread)."""
        name = topic.rsplit("/", 1)[-1]
        try:
            verdict = self.verifier.verify(name, payload, retained, self.clock.wall(), self.clock.monotonic(),
                                           self.clock.wall_trusted())
        except Exception as err:  # hostile input is a refusal with a reason, whatever it holds
            verdict = Verdict(None, Reject.MALFORMED, f"unreadable command ({type(err).__name__})", None)
        if not verdict.ok:
            assert verdict.reject is not None
            self.rejected[verdict.reject.value] = self.rejected.get(verdict.reject.value, 0) + 1
            log.warning("command %s rejected: %s (%s)", name, verdict.reject.value, verdict.detail)
            self._answer(name, verdict)
            return
        command = verdict.command
        assert command is not None
        try:
            self.nonces.save(self.verifier.nonces)
        except OSError as err:
            # without a durable nonce a restart could accept a replay: refuse instead
            self.verifier.nonces.entries.pop(command.nonce, None)
            log.error("cannot persist the command nonce cache (%s); command refused", err)
            self._answer(name, verdict, error="storage_error")
            return
        self.accepted += 1
        log.warning("command %s accepted (key %s, transaction %s)", name, command.kid_hex, command.transaction)
        action = self._actions.get(name)
        try:
            if action is None:  # the codec knows a command this feature has no action for
                raise LookupError(f"no action for {name!r}")
            data, error = action(command)
        except Exception as err:  # an action bug must still answer the operator
            log.exception("command %s failed", name)
            data, error = {}, f"failed: {err}"
        self._answer(name, verdict, data, error)

    def _answer(self, name: str, verdict: Verdict, data: dict[str, Any] | None = None,
                error: str | None = None) -> None:
        self.link.publish(f"response/{name}", response_body(verdict, data, error), qos=1, retain=False)

    # ------------------------------------------------------------------ actions

    def _open(self, command: Command) -> ActionResult:
        state = self.control.current_state()
        if state in (DeviceState.LOCKDOWN, DeviceState.FREE_PASSAGE):
            return {"state": state.value}, state.value  # locked: no; free: already open
        pulse_ms = int(command.args.get("pulse_ms", self.relay_pulse_ms))
        # a remote opening is an opening: recorded before the relay moves, like a grant
        event = self.events.build_record(
            decision="granted", reason=Reason.REMOTE_OPEN.value, credential=CredentialType.REMOTE.value,
            code_sha256=hashlib.sha256(command.nonce.encode("utf-8")).hexdigest(),
            wall_s=self.clock.wall(), time_synced=self.clock.wall_trusted(), subject=f"key:{command.kid_hex}",
            display="remote open")
        try:
            stored = self.recorder.append(event)
        except StoreError as err:
            log.error("remote open refused, it cannot be recorded: %s", err)
            return {"pulse_ms": 0}, Reason.STORAGE_FULL.value
        self.outputs.open_pulse(pulse_ms / 1000.0)
        return {"pulse_ms": pulse_ms, "event_id": stored.event_id, "seq": stored.seq}, None

    def _mode(self, command: Command) -> ActionResult:
        error = self.control.set_mode(command.args["mode"])
        return {"mode": self.control.current_mode().value, "state": self.control.current_state().value}, error

    def _reload(self, command: Command) -> ActionResult:
        return self.control.reload()

    def _rebirth(self, command: Command) -> ActionResult:
        for republisher in self._republishers:
            republisher.republish()
        return {}, None

    def _identify(self, command: Command) -> ActionResult:
        """Show which gate this is: two long green-and-buzzer pulses, never the relay (a technician
        at a bus station with ten gates sends it and looks for the one that blinks)."""
        self.outputs.confirm(True)
        return {"state": self.control.current_state().value}, None
