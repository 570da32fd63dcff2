"""The port contracts on the adapters that work without hardware (the Pi runs tests/hardware)."""

from __future__ import annotations

import time

import numpy as np
from gpiozero.pins.mock import MockFactory

from device.camera import ReplayFrames
from device.gpio import GpiozeroOutputs
from device.synthetic import noise_frame, render_code_frame
from firmware.adapters.fakes import ScriptedFrames
from firmware.core.model import Frame
from tests.contracts import check_frame_source, check_outputs
from tests.test_camera_picamera import FakePicamera2, open_frames


def test_replay_frames_keep_the_frame_source_contract():
    check_frame_source(ReplayFrames([noise_frame(), render_code_frame("QG1:X")], fps=200, frames_per_image=3), live=False)


def test_scripted_frames_keep_the_frame_source_contract():
    frames = ScriptedFrames([Frame(np.zeros((48, 64), np.uint8), 1.0 + i, i) for i in range(5)])
    check_frame_source(frames, live=False)


def test_picamera_frames_on_a_picamera2_stand_in_keep_the_frame_source_contract():
    fake = FakePicamera2()
    for seed in range(8):
        fake.queue(noise_frame(seed=seed))
    # the module: time.monotonic() stamps each frame; the stand-in records each capture's flush
    check_frame_source(open_frames(fake, clock=time), live=True,
                       flush_requests=lambda: [flush is True for _, flush in fake.captures])


def test_gpiozero_outputs_on_mock_pins_keep_the_outputs_contract():
    outputs = GpiozeroOutputs(pin_factory=MockFactory(), relay_pin=17, relay_active_high=False, relay_pulse_ms=200,
                              green_led_pin=27, red_led_pin=22, buzzer_pin=23, monotonic=time.monotonic)
    check_outputs(outputs, pulse_s=0.2)
