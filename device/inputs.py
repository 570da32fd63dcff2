"""gpiozero adapter for the two optional inputs: the fire-alarm contact and the passage sensor.

Both inputs use the Pi's internal pull-up, so the contact is wired between the pin and
GND. ``fire_alarm_active_high`` says which level means "alarm": with a normally-closed
loop (the safer wiring: a cut wire reads as an alarm) the pin is LOW while all is well
and HIGH in alarm, so set it to true.

Callbacks run on gpiozero's own thread: they must only hand the news over (the
monitor wakes up; the passage queue takes the time) and return.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from firmware.core.errors import GpioUnavailable

log = logging.getLogger(__name__)

FIRE_BOUNCE_S = 0.05
PASSAGE_BOUNCE_S = 0.02


class GpioInputs:
    """The fire-alarm input and the passage sensor input (either may be absent: pin -1).

    Args:
        pin_factory: a gpiozero pin factory (``MockFactory()`` in tests).
        fire_alarm_pin: BCM pin of the fire-alarm contact, or -1.
        fire_alarm_active_high: True if the pin reads HIGH in alarm.
        passage_sensor_pin: BCM pin of the rotation/door sensor, or -1 (a pulse to GND
            per passage).
        on_fire: called with True/False when the alarm starts or ends (gpiozero thread),
            and once at start with the current level.
        on_passage: called once per passage (gpiozero thread).
        bounce_s: debounce time for both inputs; None for none (mock pins in tests).

    Raises:
        GpioUnavailable: a pin could not be claimed.
    """

    def __init__(self, *, pin_factory: Any, fire_alarm_pin: int, fire_alarm_active_high: bool,
                 passage_sensor_pin: int, on_fire: Callable[[bool], None],
                 on_passage: Callable[[], None], bounce_s: float | None = FIRE_BOUNCE_S) -> None:
        from gpiozero import DigitalInputDevice, GPIOZeroError

        self._fire_active_high = fire_alarm_active_high
        self._on_fire = on_fire
        self._on_passage = on_passage
        self.fire: Any = None
        self.passage: Any = None
        try:
            if fire_alarm_pin >= 0:
                self.fire = DigitalInputDevice(fire_alarm_pin, pull_up=True, bounce_time=bounce_s,
                                               pin_factory=pin_factory)
            if passage_sensor_pin >= 0:
                self.passage = DigitalInputDevice(passage_sensor_pin, pull_up=True,
                                                  bounce_time=None if bounce_s is None else PASSAGE_BOUNCE_S,
                                                  pin_factory=pin_factory)
        except (GPIOZeroError, OSError, RuntimeError) as err:
            self.close()
            raise GpioUnavailable(f"cannot claim the inputs (gpio.fire_alarm_pin {fire_alarm_pin}, "
                                  f"gpio.passage_sensor_pin {passage_sensor_pin}): {err}; give each a free "
                                  "pin or -1 for none") from err
        if self.fire is not None:
            self.fire.when_activated = self._fire_changed
            self.fire.when_deactivated = self._fire_changed
        if self.passage is not None:
            self.passage.when_activated = self._passage_pulse

    def fire_alarm_active(self) -> bool:
        """True if the fire-alarm input reads its alarm level now (False with no input)."""
        if self.fire is None:
            return False
        pin_high = not self.fire.is_active  # pull-up: "active" in gpiozero means LOW
        return pin_high if self._fire_active_high else not pin_high

    def report_fire_level(self) -> None:
        """Call on_fire with the current level (at start, so an alarm already on is seen)."""
        if self.fire is not None:
            self._on_fire(self.fire_alarm_active())

    def _fire_changed(self) -> None:
        self._on_fire(self.fire_alarm_active())

    def _passage_pulse(self) -> None:
        self._on_passage()

    def close(self) -> None:
        """Free both pins. Safe to call twice."""
        for device in (self.fire, self.passage):
            if device is not None:
                try:
                    device.close()
                except Exception as err:  # closing must never stop the shutdown sequence
                    log.error("could not close %s: %s", device, err)
        self.fire = self.passage = None
