"""The status LED: one blink code per device state, on its own thread, with no broker needed.

Codes are sequences of alternating on/off durations in 100 ms units, starting with
"on" and repeated for as long as the state lasts. Every cycle is at most 3 s, so a
technician reads any code within 3 s, and every code blinks (a steady LED would look
the same as a hung daemon). No two codes are the same, even starting mid-cycle.

| state | units (on, off, ...) | looks like |
|---|---|---|
| booting | 1,1 | fast flicker |
| provisioning | 3,3 | quick even blink |
| unprovisioned | 10,10 | slow even blink |
| ready | 1,19 | one short blip every 2 s |
| offline | 2,2,2,10 | 2 flashes, pause |
| camera_fault | 2,2,2,2,2,10 | 3 flashes, pause |
| storage_alarm | 2,2,2,2,2,2,2,10 | 4 flashes, pause |
| clock_unsynced | 2,2,2,2,2,2,2,2,2,10 | 5 flashes, pause |
| lists_stale | 8,2,2,8 | long flash, short flash |
| lockdown | 18,2 | on, with a short dark gap every 2 s |
| free_passage | 6,2,6,6 | two long flashes |

gpiozero is imported inside this module only; the pin factory is always passed in.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from firmware.core.device_state import DeviceState
from firmware.core.errors import GpioUnavailable

log = logging.getLogger(__name__)

UNIT_S = 0.1
MAX_CYCLE_UNITS = 30
SHOWN_KEPT = 64


def _flashes(n: int) -> tuple[int, ...]:
    return (2, 2) * (n - 1) + (2, 10)


BLINK_CODES: dict[DeviceState, tuple[int, ...]] = {
    DeviceState.BOOTING: (1, 1),
    DeviceState.PROVISIONING: (3, 3),
    DeviceState.UNPROVISIONED: (10, 10),
    DeviceState.READY: (1, 19),
    DeviceState.OFFLINE: _flashes(2),
    DeviceState.CAMERA_FAULT: _flashes(3),
    DeviceState.STORAGE_ALARM: _flashes(4),
    DeviceState.CLOCK_UNSYNCED: _flashes(5),
    DeviceState.LISTS_STALE: (8, 2, 2, 8),
    DeviceState.LOCKDOWN: (18, 2),
    DeviceState.FREE_PASSAGE: (6, 2, 6, 6),
}

# What the README's table tells the technician, per state.
TECHNICIAN_ACTIONS: dict[DeviceState, str] = {
    DeviceState.BOOTING: "wait; if it lasts over a minute, check `journalctl -u qrgate`",
    DeviceState.PROVISIONING: "finish provisioning (show the next provisioning QR)",
    DeviceState.UNPROVISIONED: "show the venue provisioning QR to the camera",
    DeviceState.READY: "nothing",
    DeviceState.OFFLINE: "check the network and the broker; scans are buffered meanwhile",
    DeviceState.CAMERA_FAULT: "check the camera cable and lens; the gate stays closed",
    DeviceState.STORAGE_ALARM: "restore the broker link so the outbox drains; check the SD card",
    DeviceState.CLOCK_UNSYNCED: "give the Pi network time (NTP); passes with dates are refused",
    DeviceState.LISTS_STALE: "update the deny/allow lists (`qrgate list deny import FILE.csv --remote`)",
    DeviceState.LOCKDOWN: "the back office locked the gate; ask them to send `mode normal`",
    DeviceState.FREE_PASSAGE: "fire alarm or free-passage mode; clear the alarm, then send `mode normal` "
                              "if a reset is required",
}


def describe(code: tuple[int, ...]) -> str:
    """Human text of a code: ``on 200 ms, off 200 ms, ...``."""
    parts = []
    for i, units in enumerate(code):
        parts.append(f"{'on' if i % 2 == 0 else 'off'} {units * 100} ms")
    return ", ".join(parts)


class StatusLed:
    """Plays the blink code of the current state on an LED, on a background thread.

    ``show(state)`` returns at once; the new code starts from its beginning at once
    (a cycle in progress is cut short). Waits are on a condition variable, never a
    sleep, so ``show`` and ``close`` interrupt them.

    Args:
        pin_factory: a gpiozero pin factory (``MockFactory()`` in tests).
        pin: BCM number of the status LED.
        unit_s: length of one unit (0.1 s; tests may shorten it).

    Raises:
        GpioUnavailable: the pin could not be claimed.
    """

    def __init__(self, *, pin_factory: Any, pin: int, unit_s: float = UNIT_S) -> None:
        from gpiozero import LED, GPIOZeroError

        try:
            self._led = LED(pin, initial_value=False, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, RuntimeError) as err:
            raise GpioUnavailable(f"cannot claim the status LED on gpio.status_led_pin {pin}: {err}; "
                                  "give it a free pin or -1 for none") from err
        self._unit_s = unit_s
        self._cond = threading.Condition()
        self._state: DeviceState | None = None
        # the states whose code was started, in order; bounded, as a flapping state must not grow it
        self._shown: deque[DeviceState] = deque(maxlen=SHOWN_KEPT)
        self._generation = 0
        self._cycles_left: int | None = None
        self._closed = False
        self._done = threading.Event()
        self._done.set()
        self._thread = threading.Thread(target=self._run, name="qrgate-status-led", daemon=True)
        self._thread.start()

    @property
    def state(self) -> DeviceState | None:
        """The state whose code is playing (None before the first ``show``)."""
        return self._state

    @property
    def shown(self) -> tuple[DeviceState, ...]:
        """The states whose code was started, oldest first (the last ``SHOWN_KEPT``). A repeated
        ``show`` of the state already playing changes nothing and is not listed. For tests and
        diagnostics."""
        with self._cond:
            return tuple(self._shown)

    def show(self, state: DeviceState, cycles: int | None = None) -> None:
        """Play state's code from its start, forever or for ``cycles`` cycles then dark.

        Showing the state already playing (forever) changes nothing. Returns at once.
        """
        with self._cond:
            if self._closed or (state is self._state and cycles is None and self._cycles_left is None):
                return
            self._state = state
            self._shown.append(state)
            self._cycles_left = cycles
            self._generation += 1
            self._done.clear()
            self._cond.notify_all()

    def wait_done(self, timeout_s: float) -> bool:
        """Wait until a ``show(..., cycles=n)`` has finished. False on timeout."""
        return self._done.wait(timeout_s)

    def close(self) -> None:
        """Stop the thread, switch the LED off and free the pin. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        try:
            self._led.close()
        except Exception as err:  # closing must never stop the shutdown sequence
            log.error("could not close the status LED: %s", err)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._state is None or self._cycles_left == 0:
                    self._led.off()
                    self._done.set()
                    self._cond.wait()
                    continue
                generation = self._generation
                if not self._play_cycle(BLINK_CODES[self._state], generation):
                    continue
                if self._cycles_left is not None:
                    self._cycles_left -= 1
            self._led.off()

    def _play_cycle(self, code: tuple[int, ...], generation: int) -> bool:
        """Play one cycle; False if interrupted by a new show() or close(). Holds the lock."""
        for i, units in enumerate(code):
            if i % 2 == 0:
                self._led.on()
            else:
                self._led.off()
            if self._cond.wait_for(lambda: self._closed or self._generation != generation,
                                   timeout=units * self._unit_s):
                return False
        return True
