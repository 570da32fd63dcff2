"""The device monitor: the one writer of the device state and of the gatekeeper's blocking reason.

A thread (``qrgate-monitor``, every 0.25 s or when woken) samples the device inputs,
evaluates the pure ``DeviceState``, sets ``Gatekeeper.blocked`` (the only writer),
holds or releases the relay for free passage, plays the LED code, sends ``STATUS=`` to
systemd on each change and tells its observers (the status report). It needs neither the
broker nor the scan loop, so a hung camera still shows ``camera_fault`` on the LED.

Inputs come from the loop statistics (frame age), the clock (trusted or not), the
operator mode and fire latch (owned here), and from ``DeviceInputSource`` features:
provisioning (``provisioned``), the lists (``lists_stale``), the outbox
(``storage_alarm``, ``storage_full``, ``fail_closed``) and the broker (``broker_*``).

On the scan loop thread (``after_step``) it sends ``WATCHDOG=1`` while frames are fresh.
It also serves ``reload`` (SIGHUP sets ``reload_requested``; the signed ``reload``
command calls ``reload()``) by running every ``Reloadable`` it was given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from firmware.alarms import Alarms
from firmware.core.device_state import DeviceInputs, DeviceState, Mode, ModeControl, blocked_reason, evaluate
from firmware.core.errors import QrGateError
from firmware.core.gatekeeper import Gatekeeper, LoopStats
from firmware.core.model import ScanEvent
from firmware.ports import (
    Clock,
    DeviceInputSource,
    EventSink,
    Link,
    ModeStore,
    Notifier,
    Outputs,
    Reloadable,
    StatusIndicator,
)

log = logging.getLogger(__name__)

MONITOR_PERIOD_S = 0.25
_INPUT_FIELDS = {f.name for f in fields(DeviceInputs)}
# alarms (``firmware.alarms.Alarms`` names) that light the storage_alarm state
# State changes of a normal start, stop and provisioning: logged at INFO, every other one at WARNING.
NORMAL_CHANGES = {
    *((DeviceState.BOOTING, s) for s in (DeviceState.READY, DeviceState.OFFLINE, DeviceState.UNPROVISIONED)),
    *((a, b) for a in (DeviceState.READY, DeviceState.OFFLINE, DeviceState.UNPROVISIONED)
      for b in (DeviceState.READY, DeviceState.OFFLINE) if a is not b),
}
STORAGE_ALARMS = {"outbox_quarantined", "outbox_unavailable", "state_corrupt"}


class MonitorObserver(Protocol):
    """Told after every tick of the monitor (monitor thread, or whoever ticked)."""

    def monitor_ticked(self, state: DeviceState, inputs: DeviceInputs, modes: ModeControl) -> None:
        """The state, the inputs it came from and the operator mode. Must return quickly."""
        ...


@dataclass(frozen=True)
class MonitorSettings:
    """What the monitor needs from the config.

    Attributes:
        max_frame_age_s: a camera silent this long is faulty (``camera.max_frame_age_s``).
        lists_fail_closed: stale lists deny every code (``lists.stale_policy = "fail_closed"``).
        free_passage_hold: free passage holds the relay open (``gpio.free_passage_relay = "hold"``).
        period_s: how often the monitor samples when nothing wakes it.
    """

    max_frame_age_s: float = 3.0
    lists_fail_closed: bool = False
    free_passage_hold: bool = True
    period_s: float = MONITOR_PERIOD_S


class OutboxInputs:
    """The outbox as device inputs: alarm level, full, fail closed (missing or quarantined).

    Args:
        sink: the gate's event sink.
        alarms: the gate's alarms (``outbox_unavailable``, ``outbox_quarantined``, ``state_corrupt``).
    """

    def __init__(self, sink: EventSink, alarms: Alarms) -> None:
        self._sink, self._alarms = sink, alarms

    def device_inputs(self) -> dict[str, Any]:
        alarms = set(self._alarms.active())
        alarm = bool(alarms & STORAGE_ALARMS)
        fail_closed = "outbox_unavailable" in alarms
        try:
            s = self._sink.stats()
        except Exception:  # a closed or broken outbox: show the alarm, keep deciding what we can
            return {"storage_alarm": True, "storage_full": False, "fail_closed": fail_closed}
        # A quarantined outbox may hold unsent events: the gate fails closed until a technician
        # has recovered them and moved the file out, then reloads or restarts.
        quarantined = bool(s.quarantined)
        fail_closed = fail_closed or quarantined or s.problem is not None
        return {"storage_alarm": alarm or fail_closed or s.alarm_level >= 0.8,
                "storage_full": s.alarm_level >= 1.0, "fail_closed": fail_closed}


class BrokerInputs:
    """The MQTT connection as device inputs (``offline`` when configured and down)."""

    def __init__(self, link: Link | None) -> None:
        self._link = link

    def device_inputs(self) -> dict[str, Any]:
        if self._link is None:
            return {"broker_configured": False, "broker_connected": False}
        try:
            connected = bool(self._link.is_connected())
        except Exception:  # the link is shutting down
            connected = False
        return {"broker_configured": True, "broker_connected": connected}


class DeviceMonitor:
    """Device state, mode, LED, systemd status and the watchdog of one gate.

    Args:
        clock: the gate's clock.
        stats: the scan loop's statistics (read only here).
        gatekeeper: whose blocking reason this monitor alone sets.
        outputs: the relay (free passage hold, release on a camera fault).
        notifier: systemd.
        mode_store: where mode and fire latch persist.
        settings: see MonitorSettings.
        inputs: features that contribute device inputs.
        observers: told after every tick (the status report).
        reloadables: what ``reload`` refreshes, in order.
        led: the status LED, or None.
        reset_required_after_fire: the fire latch holds until a ``mode normal`` command.
        reload_requested: set by the SIGHUP handler; served on the monitor thread.
        wake: set by anyone to make the monitor sample now (for example after a provisioning).
    """

    def __init__(self, *, clock: Clock, stats: LoopStats, gatekeeper: Gatekeeper, outputs: Outputs,
                 notifier: Notifier, mode_store: ModeStore, settings: MonitorSettings,
                 inputs: Sequence[DeviceInputSource] = (), observers: Sequence[MonitorObserver] = (),
                 reloadables: Sequence[Reloadable] = (), led: StatusIndicator | None = None,
                 reset_required_after_fire: bool = True, reload_requested: threading.Event | None = None,
                 wake: threading.Event | None = None) -> None:
        self.clock, self.stats, self.gatekeeper, self.outputs = clock, stats, gatekeeper, outputs
        self.notifier, self.mode_store, self.settings, self.led = notifier, mode_store, settings, led
        self._inputs = tuple(inputs)
        self._observers = tuple(observers)
        self._reloadables = tuple(reloadables)
        self.reload_requested = reload_requested or threading.Event()
        self._wake = wake or threading.Event()
        self.started_mono_s = clock.monotonic()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.modes = mode_store.load(reset_required_after_fire)
        self.state = DeviceState.BOOTING
        self.inputs = DeviceInputs(built=False)
        self._holding = False
        self._started = False
        if led is not None:
            led.show(DeviceState.BOOTING)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Send READY=1 and start the monitor thread. Idempotent."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self.inputs = replace(self.inputs, built=True)
        self.tick()
        self.notifier.ready(self._status_text())
        self._thread = threading.Thread(target=self._run, name="qrgate-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the monitor thread (shutdown). Safe to call twice."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.period_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                try:
                    log.info("reload requested (SIGHUP): %s", self.reload()[0])
                except Exception:  # a failing reload must not stop the monitor
                    log.exception("reload failed")
            try:
                self.tick()
            except Exception:  # the monitor must outlive one bad sample
                log.exception("device monitor tick failed")

    def wake(self) -> None:
        """Sample now instead of at the next period. Any thread."""
        self._wake.set()

    # ------------------------------------------------------------------ the gate's controls

    def current_state(self) -> DeviceState:
        """The device state as of the last tick."""
        with self._lock:
            return self.state

    def current_mode(self) -> Mode:
        """The operator mode."""
        with self._lock:
            return self.modes.mode

    def fire_alarm(self, active: bool) -> None:
        """The fire-alarm input changed (gpiozero thread): update the latch, wake the monitor."""
        with self._lock:
            before = self.modes
            self.modes = self.modes.fire_alarm(active)
            if self.modes != before:
                log.warning("fire alarm %s", "ACTIVE: passage freed" if active else "cleared")
                self._save_modes()
        self._wake.set()

    def set_mode(self, mode: Mode) -> str | None:
        """Apply a verified ``mode`` command. Returns None, or the error text for the response."""
        with self._lock:
            control, error = self.modes.command(mode)
            if error is None:
                self.modes = control
                self._save_modes()
                log.warning("mode set to %s by a signed command", mode.value)
        self.tick()
        return error

    def reload(self) -> tuple[dict[str, Any], str | None]:
        """Run every reload in order; return what they report and the first failure's text."""
        data: dict[str, Any] = {}
        error = None
        for reloadable in self._reloadables:
            try:
                data.update(reloadable.reload() or {})
            except (QrGateError, ValueError) as err:
                log.error("reload: %s", err)
                error = error or str(err)
        return data, error

    def _save_modes(self) -> None:
        try:
            self.mode_store.save(self.modes)
        except OSError as err:
            log.error("cannot persist the mode (%s); it will be normal after a restart", err)

    # ------------------------------------------------------------------ scan loop thread

    def event_stored(self, event: ScanEvent) -> None:
        """Loop observer: nothing to do per event."""

    def after_step(self) -> None:
        """Scan loop thread, after each step: ``WATCHDOG=1`` only while frames are fresh."""
        self.notifier.ping_if_frames_fresh(self.clock.monotonic(), self.stats.last_frame_mono_s,
                                           self.settings.max_frame_age_s)

    # ------------------------------------------------------------------ the monitor

    def sample(self) -> DeviceInputs:
        """Gather the device inputs now."""
        now = self.clock.monotonic()
        last = self.stats.last_frame_mono_s if self.stats.last_frame_mono_s is not None else self.started_mono_s
        with self._lock:
            modes, built = self.modes, self.inputs.built
        inputs = DeviceInputs(
            built=built, free_passage=modes.free_passage, mode=modes.mode, frame_age_s=max(0.0, now - last),
            max_frame_age_s=self.settings.max_frame_age_s, clock_trusted=self.clock.wall_trusted(),
            lists_fail_closed=self.settings.lists_fail_closed)
        overrides: dict[str, Any] = {}
        for source in self._inputs:
            try:
                overrides.update({k: v for k, v in source.device_inputs().items() if k in _INPUT_FIELDS})
            except Exception:  # one broken source must not stop the monitor
                log.exception("device input source %s failed", type(source).__name__)
        return replace(inputs, **overrides) if overrides else inputs

    def tick(self) -> DeviceState:
        """Sample, evaluate and apply the device state. Returns it. Any thread; serialised."""
        with self._lock:
            inputs = self.sample()
            state = evaluate(inputs)
            self.gatekeeper.set_blocked(blocked_reason(inputs))
            self._apply_relay(inputs, state)
            if self.led is not None:
                self.led.show(state)
            previous, self.state, self.inputs = self.state, state, inputs
            if state is not previous:
                log.log(logging.INFO if (previous, state) in NORMAL_CHANGES else logging.WARNING,
                        "device state %s -> %s", previous.value, state.value)
                self.notifier.status(self._status_text())
                self._changed.notify_all()
            modes = self.modes
            for observer in self._observers:
                try:
                    observer.monitor_ticked(state, inputs, modes)
                except Exception:  # the status file must not stop the monitor
                    log.exception("monitor observer %s failed", type(observer).__name__)
        return state

    def _apply_relay(self, inputs: DeviceInputs, state: DeviceState) -> None:
        want_hold = inputs.free_passage and self.settings.free_passage_hold
        if want_hold and not self._holding:
            self.outputs.hold_open()
        elif self._holding and not want_hold:
            self.outputs.hold_released()
        self._holding = want_hold
        if state is DeviceState.CAMERA_FAULT and self.state is not DeviceState.CAMERA_FAULT and not want_hold:
            self.outputs.release()  # a camera fault keeps the gate closed

    def wait_for_state(self, state: DeviceState, timeout_s: float) -> bool:
        """Wait until the monitor reaches state (tests). False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self.state is state, timeout_s)

    def _status_text(self) -> str:
        return f"{self.state.value}; {self.stats.fps():.1f} fps; {self.stats.decisions} decisions"

    # ------------------------------------------------------------------ status source

    def status_fields(self) -> dict[str, Any]:
        """Device state, mode, free passage and fire alarm (retained MQTT state)."""
        with self._lock:
            return {"device_state": self.state.value, "mode": self.modes.mode.value,
                    "free_passage": self.modes.free_passage, "fire_alarm": self.modes.fire_active}
