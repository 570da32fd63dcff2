"""What simulated pins did: gpiozero mock pins that report each level change with its time and role.

Used by ``qrgate demo`` (its readable lines) and by ``qrgate run`` on ``gpio.pin_factory =
"mock"`` (``--print-outputs`` lines and the ``--pin-log`` JSON), so blink and beep codes
can be checked on a PC. Times are milliseconds since the watch started (the command's
start). A pin with no role (an input) is still logged, under its name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ROLE_NAMES = {"relay": "relay", "green": "green LED", "red": "red LED", "buzzer": "buzzer", "status": "status LED"}


def describe_change(role: str, level: bool, relay_active_high: bool) -> str:
    """A readable text for one level change of a role's pin ("relay ENERGISED (turnstile free)")."""
    if role == "relay":
        return "relay ENERGISED (turnstile free)" if level == relay_active_high else "relay released (locked)"
    return f"{ROLE_NAMES.get(role, role)} {'on' if level else 'off'}"


def roles_from_gpio(gpio: Any) -> dict[str, str]:
    """{pin name ("GPIO17"): role} of a ``[gpio]`` section; unused (-1) pins are left out."""
    wanted = {"relay": gpio.relay_pin, "green": gpio.green_led_pin, "red": gpio.red_led_pin,
              "buzzer": gpio.buzzer_pin, "status": getattr(gpio, "status_led_pin", -1)}
    out = {}
    for role, pin in wanted.items():
        if isinstance(pin, int) and pin >= 0:
            out[f"GPIO{pin}"] = role
        elif isinstance(pin, str) and pin:
            out[pin] = role
    return out


@dataclass(frozen=True)
class PinChange:
    """One level change: when (ms since the watch started), which pin, its role, the new level."""

    t_ms: float
    pin: str
    role: str
    level: bool

    def to_json(self) -> dict[str, Any]:
        return {"t_ms": round(self.t_ms, 1), "pin": self.pin, "role": self.role, "level": self.level}


class PinWatch:
    """Records every change of the pins its factory makes; tells ``on_change`` of each (any thread).

    Args:
        roles: {pin name: role}, e.g. from ``roles_from_gpio``.
        on_change: called with each PinChange as it happens (printing, for instance).
        monotonic: the clock (seconds).
    """

    def __init__(self, roles: Mapping[str, str], on_change: Callable[[PinChange], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.roles = dict(roles)
        self.on_change = on_change
        self._monotonic = monotonic
        self.start_s = monotonic()
        self.changes: list[PinChange] = []
        self._lock = threading.Lock()

    def record(self, pin: str, level: bool, initial: bool = False) -> None:
        """Log a level; ``on_change`` hears only real changes, not a pin's level when it is made."""
        change = PinChange((self._monotonic() - self.start_s) * 1000.0, pin, self.roles.get(pin, pin), level)
        with self._lock:
            self.changes.append(change)
        if self.on_change is not None and not initial:
            self.on_change(change)

    def factory(self) -> Any:
        """A gpiozero MockFactory whose pins report here (their first level too, when claimed)."""
        from gpiozero.pins.mock import MockFactory, MockPin

        watch = self

        class WatchedPin(MockPin):
            def __init__(self, factory: Any, info: Any) -> None:
                super().__init__(factory, info)
                watch.record(str(info.name), bool(self._state), initial=True)

            def _change_state(self, value: bool) -> bool:
                changed = bool(super()._change_state(value))
                if changed:
                    watch.record(str(self._info.name), bool(value))
                return changed

        return MockFactory(pin_class=WatchedPin)

    def log(self, factory: Any) -> dict[str, Any]:
        """The ``--pin-log`` document: ``{"GPIO17": [levels...], ...}`` (as before) plus ``roles``
        ({role: pin}) and ``changes`` (each with ``t_ms``, ``pin``, ``role``, ``level``)."""
        pins = getattr(factory, "pins", {})
        out: dict[str, Any] = {str(info.name): [bool(c.state) for c in pin.states] for info, pin in pins.items()}
        out["roles"] = {role: pin for pin, role in sorted(self.roles.items())}
        with self._lock:
            out["changes"] = [c.to_json() for c in self.changes]
        return out
