"""gpiozero adapter: read the re-provision button once at boot.

The button is wired between ``gpio.reprovision_pin`` and GND (internal pull-up), so
holding it pulls the pin LOW. Held while the daemon starts, it lets a provisioned
gate accept one new provisioning QR during this run. The pin is released right after
it is read.
"""

from __future__ import annotations

import logging
from typing import Any

from firmware.core.errors import GpioUnavailable

log = logging.getLogger(__name__)


def held_at_boot(pin_factory: Any, pin: int) -> bool:
    """Return True if the button on pin (BCM, -1 for none) is held (pin LOW) right now.

    Raises:
        GpioUnavailable: the pin cannot be claimed.
    """
    if pin < 0:
        return False
    from gpiozero import DigitalInputDevice, GPIOZeroError

    try:
        button = DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
    except (GPIOZeroError, OSError, RuntimeError) as err:
        raise GpioUnavailable(f"gpio.reprovision_pin {pin} cannot be read ({err}); check that no other "
                              "role uses it, or set it to -1") from err
    try:
        return bool(button.is_active)
    finally:
        button.close()
