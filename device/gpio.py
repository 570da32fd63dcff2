"""gpiozero adapter: the turnstile relay, green and red LEDs and the buzzer.

The pin factory is always passed in (``MockFactory()`` in tests and on a PC), never
set globally. gpiozero is imported inside this module only.

Feedback patterns (one table, also in the README):

| decision | relay | green LED | red LED | buzzer |
|---|---|---|---|---|
| granted | one pulse of ``relay_pulse_ms`` | on for the pulse | off | one short beep (120 ms) |
| denied | stays off | off | three flashes (150 ms on, 100 ms off) | three beeps, the same rhythm |

A person can tell them apart without looking: one beep opens, three beeps refuse.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from firmware.core.errors import GpioUnavailable
from firmware.core.model import Decision

log = logging.getLogger(__name__)

GRANT_BEEP_S = 0.12
DENY_ON_S = 0.15
DENY_OFF_S = 0.10
DENY_FLASHES = 3
# provisioning accepted: two long pulses of green and buzzer together
CONFIRM_ON_S = 0.6
CONFIRM_OFF_S = 0.2
CONFIRM_PULSES = 2


def make_pin_factory(name: str, chip: int = -1) -> Any:
    """Build a gpiozero pin factory from its config name (fixed table).

    Args:
        name: ``mock``, ``lgpio``, ``rpigpio``, ``pigpio``, ``native`` or ``default``.
        chip: gpiochip number for lgpio, -1 for gpiozero's choice.

    Returns:
        The pin factory, or None for gpiozero's default choice.

    Raises:
        GpioUnavailable: the factory's library is missing or the GPIO chip cannot be opened.
    """
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory

            return MockFactory()
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory(chip=chip) if chip >= 0 else LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory

            return PiGPIOFactory()
        if name == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
        return None
    except ImportError as err:
        raise GpioUnavailable(f"gpio.pin_factory = {name!r} needs a library that is missing ({err}); "
                              "on a Pi install it with `sudo apt-get install python3-lgpio`, on a PC "
                              "use pin_factory = \"mock\"") from err
    except Exception as err:  # gpiozero raises many kinds while probing the chip
        raise GpioUnavailable(f"gpio.pin_factory = {name!r} cannot open the GPIO chip ({err}); check "
                              "that the user is in the `gpio` group and gpio.chip is right") from err


class RelayPulser:
    """Drives the relay for timed pulses on its own thread, independent of the scan loop.

    A grant during a pulse extends it: the relay stays energised until ``pulse_s``
    after the latest grant (no chatter, no second click). ``release()`` de-energises
    at once and cancels any pulse.

    Args:
        relay: a gpiozero DigitalOutputDevice built with ``initial_value=False``.
        pulse_s: pulse length in seconds.
        monotonic: clock for deadlines (``time.monotonic`` on the device).
    """

    def __init__(self, relay: Any, pulse_s: float, monotonic: Any) -> None:
        self._relay = relay
        self._pulse_s = pulse_s
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._held = False  # free passage: energised until unhold(); pulse deadlines do not end it
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._listeners: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="qrgate-relay", daemon=True)
        self._thread.start()

    def add_listener(self, callback: Any) -> None:
        """Call callback(energised: bool) on every relay change (from the relay thread)."""
        self._listeners.append(callback)

    def pulse(self, pulse_s: float | None = None) -> None:
        """Energise now (or keep energised) until pulse_s from now. Returns at once."""
        length = self._pulse_s if pulse_s is None else pulse_s
        with self._cond:
            if self._closed:
                return
            deadline = self._monotonic() + length
            if self._deadline is None or deadline > self._deadline:
                self._deadline = deadline
            if not self._relay.value:
                self._idle.clear()
                self._relay.on()
                self._notify(True)
            self._cond.notify_all()

    def hold(self) -> None:
        """Energise and keep energised until ``unhold()`` or ``release()`` (free passage).

        A pulse in progress does not end the hold when its deadline passes.
        """
        with self._cond:
            if self._closed:
                return
            self._held = True
            if not self._relay.value:
                self._idle.clear()
                self._relay.on()
                self._notify(True)
            self._cond.notify_all()

    def unhold(self) -> None:
        """End a hold: de-energise now, unless a pulse is still due to run (it ends on time)."""
        with self._cond:
            if not self._held:
                return
            self._held = False
            if self._deadline is None and self._relay.value:
                self._relay.off()
                self._notify(False)
                self._idle.set()
            self._cond.notify_all()

    @property
    def held(self) -> bool:
        """True while a hold is in force."""
        return self._held

    def release(self) -> None:
        """De-energise now, cancel any pending pulse and any hold. Never raises."""
        with self._cond:
            self._deadline = None
            self._held = False
            try:
                if self._relay.value:
                    self._relay.off()
                    self._notify(False)
            except Exception as err:  # release must never stop the shutdown sequence
                log.error("relay release failed: %s", err)
            self._idle.set()
            self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the relay is released. Returns False on timeout."""
        return self._idle.wait(timeout_s)

    @property
    def energised(self) -> bool:
        """True while the relay is on."""
        return bool(self._relay.value)

    def lock_out(self) -> None:
        """Release now and refuse every later pulse or hold (shutdown: nothing may open the
        gate again, whatever thread asks). Never raises."""
        with self._cond:
            self._closed = True
        self.release()

    def close(self) -> None:
        """Lock out, release the relay and stop the thread."""
        self.lock_out()
        self._thread.join(timeout=2.0)

    def _notify(self, energised: bool) -> None:
        for callback in self._listeners:
            try:
                callback(energised)
            except Exception:
                log.exception("relay listener failed")

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - self._monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._deadline = None
                if self._held:
                    continue  # free passage: the hold outlives the pulse
                if self._relay.value:
                    self._relay.off()
                    self._notify(False)
                self._idle.set()


class GpiozeroOutputs:
    """The Outputs port on gpiozero: relay pulse plus LED and buzzer patterns.

    The relay is built with ``initial_value=False``, so it is driven to its off level
    the moment it is claimed and never energised at start.

    Args:
        pin_factory: a gpiozero pin factory (``MockFactory()`` in tests); None for the default.
        relay_pin, green_led_pin, red_led_pin, buzzer_pin: BCM numbers.
        relay_active_high: True if the relay board switches on HIGH.
        relay_pulse_ms: one grant's pulse length, in milliseconds.
        monotonic: clock for the relay deadlines.

    Raises:
        GpioUnavailable: a pin could not be claimed (in use, bad number, no permission).
    """

    def __init__(
        self,
        *,
        pin_factory: Any,
        relay_pin: int,
        relay_active_high: bool,
        relay_pulse_ms: int,
        green_led_pin: int,
        red_led_pin: int,
        buzzer_pin: int,
        monotonic: Any,
    ) -> None:
        from gpiozero import LED, Buzzer, DigitalOutputDevice, GPIOZeroError

        self._devices: list[Any] = []
        try:
            self.relay = self._claim(DigitalOutputDevice(relay_pin, active_high=relay_active_high,
                                                         initial_value=False, pin_factory=pin_factory))
            self.green = self._claim(LED(green_led_pin, initial_value=False, pin_factory=pin_factory))
            self.red = self._claim(LED(red_led_pin, initial_value=False, pin_factory=pin_factory))
            self.buzzer = self._claim(Buzzer(buzzer_pin, initial_value=False, pin_factory=pin_factory))
        except (GPIOZeroError, OSError, RuntimeError) as err:
            self.close()
            raise GpioUnavailable(f"cannot claim the GPIO outputs (relay {relay_pin}, green {green_led_pin}, "
                                  f"red {red_led_pin}, buzzer {buzzer_pin}): {err}; check that no other "
                                  "program uses these pins") from err
        self.pulse_s = relay_pulse_ms / 1000.0
        self.pulser = RelayPulser(self.relay, self.pulse_s, monotonic)

    def _claim(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    def show(self, decision: Decision) -> None:
        """Start the relay pulse (if granted) and the feedback pattern. Returns at once."""
        if decision.granted:
            self.pulser.pulse()
            self.red.off()
            self.green.blink(on_time=self.pulse_s, off_time=0.01, n=1, background=True)
            self.buzzer.blink(on_time=GRANT_BEEP_S, off_time=0.01, n=1, background=True)
        else:
            self.green.off()
            self.red.blink(on_time=DENY_ON_S, off_time=DENY_OFF_S, n=DENY_FLASHES, background=True)
            self.buzzer.blink(on_time=DENY_ON_S, off_time=DENY_OFF_S, n=DENY_FLASHES, background=True)

    def open_pulse(self, pulse_s: float | None = None) -> None:
        """Pulse the relay without a scan (remote open). Returns at once."""
        self.pulser.pulse(pulse_s)
        self.green.blink(on_time=pulse_s or self.pulse_s, off_time=0.01, n=1, background=True)

    def confirm(self, accepted: bool) -> None:
        """Provisioning feedback, never the relay. Returns at once (gpiozero threads play it).

        Accepted: green LED and buzzer play two long pulses together (a grant is one short
        beep, a denial three short ones, so a technician can tell them apart by ear).
        Refused: the red LED and buzzer play three quick pulses, as for a denied pass.
        """
        if accepted:
            self.red.off()
            for device in (self.green, self.buzzer):
                device.blink(on_time=CONFIRM_ON_S, off_time=CONFIRM_OFF_S, n=CONFIRM_PULSES, background=True)
        else:
            self.green.off()
            for device in (self.red, self.buzzer):
                device.blink(on_time=DENY_ON_S, off_time=DENY_OFF_S, n=DENY_FLASHES, background=True)

    def relay_energised(self) -> bool:
        """True while the relay is driven to its on level."""
        return bool(self.pulser.energised)

    def add_relay_listener(self, listener: Any) -> None:
        """Call listener(energised: bool) on the relay thread at every change."""
        self.pulser.add_listener(listener)

    def hold_open(self) -> None:
        """Hold the relay energised (free passage) until ``hold_released()``. Returns at once."""
        self.pulser.hold()

    def hold_released(self) -> None:
        """End a hold: the relay goes off now, or when a pulse in progress ends."""
        self.pulser.unhold()

    def release(self) -> None:
        """Release the relay first, then stop the LED and buzzer patterns. Never raises."""
        self.pulser.release()
        self._feedback_off()

    def lock_out(self) -> None:
        """Shutdown step 1: release the relay and refuse any later pulse or hold, from any
        thread (a remote command still being handled cannot reopen the gate). Never raises."""
        self.pulser.lock_out()
        self._feedback_off()

    def _feedback_off(self) -> None:
        for device in (self.green, self.red, self.buzzer):
            try:
                device.off()
            except Exception as err:
                log.error("could not switch %s off: %s", device, err)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the relay is released and the feedback patterns have finished."""
        deadline_ok = self.pulser.wait_idle(timeout_s)
        for device in (self.green, self.red, self.buzzer):
            thread = getattr(device, "_blink_thread", None)
            if thread is not None:
                thread.join(timeout_s)
                deadline_ok = deadline_ok and not thread.is_alive()
        return deadline_ok

    def close(self) -> None:
        """Release the relay and free every pin. Safe to call twice."""
        pulser = getattr(self, "pulser", None)
        if pulser is not None:
            pulser.close()
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception as err:
                log.error("could not close %s: %s", device, err)
        self._devices.clear()
