"""The device state machine: what the gate is doing, as one word for the LED, status and MQTT.

Pure: inputs in (a frozen ``DeviceInputs``), one ``DeviceState`` out, plus the reason
the policy must deny every code with (``blocked_reason``). No clock reads: frame ages
are computed by the caller from its monotonic clock.

Priority (the first that applies wins; the order is the table in the README):

1. ``booting``: the adapters are not all open yet.
2. ``free_passage``: the fire-alarm input is active, or was and still waits for a reset,
   or an operator chose ``mode free_passage``. Life safety beats every fault.
3. ``provisioning``: a provisioning session is running.
4. ``unprovisioned``: no venue id yet; every code is denied with ``not_provisioned``.
5. ``lockdown``: an operator locked the gate; every code is denied with ``lockdown``.
6. ``camera_fault``: no frame for ``max_frame_age_s``; the gate stays closed.
7. ``storage_alarm``: the outbox passed its alarm level, is full, or is unusable (fail closed).
8. ``clock_unsynced``: the wall clock is not trusted; passes with validity times fail closed.
9. ``lists_stale``: the deny/allow lists are older than ``lists.max_age_h``, or a needed list
   cannot be read (damaged, or moved aside and not replaced); with ``lists.stale_policy =
   "fail_closed"`` (the default) every code is then denied with ``lists_stale`` or
   ``lists_unavailable``.
10. ``offline``: a broker is configured but not connected; the gate still decides and buffers.
11. ``ready``.

``ModeControl`` holds the operator mode and the fire-alarm latch (also pure).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from firmware.core.model import Reason


class DeviceState(StrEnum):
    """The device's one-word state, in priority order (see module docstring)."""

    BOOTING = "booting"
    FREE_PASSAGE = "free_passage"
    PROVISIONING = "provisioning"
    UNPROVISIONED = "unprovisioned"
    LOCKDOWN = "lockdown"
    CAMERA_FAULT = "camera_fault"
    STORAGE_ALARM = "storage_alarm"
    CLOCK_UNSYNCED = "clock_unsynced"
    LISTS_STALE = "lists_stale"
    OFFLINE = "offline"
    READY = "ready"


class Mode(StrEnum):
    """The operator's chosen mode (``mode`` command)."""

    NORMAL = "normal"
    LOCKDOWN = "lockdown"
    FREE_PASSAGE = "free_passage"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """Parse a mode name; ``free`` (the MQTT convention's short name) means free_passage.

        Raises:
            ValueError: not a mode name.
        """
        value = text.strip().lower()
        if value == "free":
            value = "free_passage"
        return cls(value)


@dataclass(frozen=True)
class DeviceInputs:
    """Everything the device state depends on, sampled at one moment.

    Attributes:
        built: every adapter is open (False while booting).
        provisioned: the gate has a venue id.
        provisioning: a provisioning session is in progress.
        free_passage: the effective free-passage flag (``ModeControl.free_passage``).
        mode: the operator mode.
        frame_age_s: seconds since the last frame (or since start if none yet).
        max_frame_age_s: a camera silent for this long is faulty.
        storage_alarm: the outbox is at or above its alarm level.
        storage_full: the outbox cannot take new events.
        fail_closed: a store the gate cannot decide without is unusable (no outbox at all,
            or a quarantined outbox not yet recovered); shown as ``storage_alarm``, every code
            denied with ``fail_closed``.
        clock_trusted: the wall clock can be used for validity checks.
        lists_stale: the deny/allow lists are past their maximum age.
        lists_unavailable: a needed list (the deny list; the allow list too when it is required)
            could not be read: its file is damaged or was moved aside and no valid list replaced it.
        lists_fail_closed: with stale or unavailable lists, deny every code (``lists.stale_policy``).
        broker_configured: an MQTT host is set.
        broker_connected: the MQTT connection is up.
    """

    built: bool = True
    provisioned: bool = True
    provisioning: bool = False
    free_passage: bool = False
    mode: Mode = Mode.NORMAL
    frame_age_s: float = 0.0
    max_frame_age_s: float = 3.0
    storage_alarm: bool = False
    storage_full: bool = False
    fail_closed: bool = False
    clock_trusted: bool = True
    lists_stale: bool = False
    lists_unavailable: bool = False
    lists_fail_closed: bool = False
    broker_configured: bool = False
    broker_connected: bool = False

    @property
    def camera_ok(self) -> bool:
        """True while frames are younger than ``max_frame_age_s``."""
        return self.frame_age_s < self.max_frame_age_s


def evaluate(inputs: DeviceInputs) -> DeviceState:
    """Return the one state for these inputs (priority order in the module docstring)."""
    i = inputs
    if not i.built:
        return DeviceState.BOOTING
    if i.free_passage:
        return DeviceState.FREE_PASSAGE
    if i.provisioning:
        return DeviceState.PROVISIONING
    if not i.provisioned:
        return DeviceState.UNPROVISIONED
    if i.mode is Mode.LOCKDOWN:
        return DeviceState.LOCKDOWN
    if not i.camera_ok:
        return DeviceState.CAMERA_FAULT
    if i.storage_alarm or i.storage_full or i.fail_closed:
        return DeviceState.STORAGE_ALARM
    if not i.clock_trusted:
        return DeviceState.CLOCK_UNSYNCED
    if i.lists_stale or i.lists_unavailable:
        return DeviceState.LISTS_STALE
    if i.broker_configured and not i.broker_connected:
        return DeviceState.OFFLINE
    return DeviceState.READY


def blocked_reason(inputs: DeviceInputs) -> Reason | None:
    """The reason every code must be denied with, or None when the policy decides normally.

    Free passage pauses decisions (the passage is open anyway); a full outbox denies
    with ``storage_full`` (the outbox refuses rather than drops); an unsynced clock is
    not a block: the policy already fails time-dependent passes closed by itself.
    """
    i = inputs
    if i.free_passage:
        return Reason.FREE_PASSAGE
    if not i.provisioned or i.provisioning:
        return Reason.NOT_PROVISIONED
    if i.mode is Mode.LOCKDOWN:
        return Reason.LOCKDOWN
    if i.fail_closed:
        return Reason.FAIL_CLOSED
    if i.storage_full:
        return Reason.STORAGE_FULL
    if i.lists_unavailable and i.lists_fail_closed:
        return Reason.LISTS_UNAVAILABLE  # an unreadable deny list must not let its people in
    if i.lists_stale and i.lists_fail_closed:
        return Reason.LISTS_STALE
    return None


@dataclass(frozen=True)
class ModeControl:
    """The operator mode and the fire-alarm latch. Immutable; every change returns a new one.

    Attributes:
        mode: the mode set by the last accepted ``mode`` command.
        fire_active: the fire-alarm input is active now.
        fire_latched: the alarm was active and waits for a signed ``mode normal``
            (only with ``reset_required_after_fire``).
        reset_required_after_fire: ``[commands] reset_required_after_fire``.
    """

    mode: Mode = Mode.NORMAL
    fire_active: bool = False
    fire_latched: bool = False
    reset_required_after_fire: bool = False

    @property
    def free_passage(self) -> bool:
        """True while the passage must be free (fire now, fire latched, or operator mode)."""
        return self.fire_active or self.fire_latched or self.mode is Mode.FREE_PASSAGE

    def fire_alarm(self, active: bool) -> ModeControl:
        """The fire-alarm input changed. Clearing it keeps the latch if a reset is required."""
        if active:
            return replace(self, fire_active=True, fire_latched=self.reset_required_after_fire)
        return replace(self, fire_active=False)

    def command(self, mode: Mode) -> tuple[ModeControl, str | None]:
        """Apply a signed ``mode`` command.

        Returns:
            The new control and None, or the unchanged control and an error text
            (a fire alarm that is still active cannot be overridden remotely).
        """
        if self.fire_active and mode is not Mode.FREE_PASSAGE:
            return self, "fire_alarm_active"
        if mode is Mode.NORMAL:
            return replace(self, mode=Mode.NORMAL, fire_latched=False), None
        return replace(self, mode=mode), None
