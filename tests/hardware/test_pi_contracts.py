"""The same port contracts on a real Raspberry Pi: camera module through picamera2, relay through lgpio.

Run on a Pi, with the qrgate service stopped (one owner for the camera and the pins) and the
relay's turnstile disconnected or safe to click:

    QRGATE_HARDWARE=1 .venv/bin/python -m pytest -m hardware tests/hardware

Elsewhere these tests are deselected (not collected as skips): there is no camera or GPIO chip.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.contracts import check_frame_source, check_outputs

pytestmark = pytest.mark.hardware

RELAY_PIN = int(os.environ.get("QRGATE_HW_RELAY_PIN", "17"))


def test_picamera2_keeps_the_frame_source_contract():
    from device.camera import PicameraFrames

    check_frame_source(PicameraFrames(width=640, height=480, fps=15.0), live=True, frames_wanted=30)


def test_lgpio_outputs_keep_the_outputs_contract():
    from device.gpio import GpiozeroOutputs, make_pin_factory

    outputs = GpiozeroOutputs(pin_factory=make_pin_factory("lgpio"), relay_pin=RELAY_PIN,
                              relay_active_high=os.environ.get("QRGATE_HW_RELAY_ACTIVE_HIGH") == "1",
                              relay_pulse_ms=300, green_led_pin=27, red_led_pin=22, buzzer_pin=23,
                              monotonic=time.monotonic)
    check_outputs(outputs, pulse_s=0.3)
