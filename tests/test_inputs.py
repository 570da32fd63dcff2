"""Fire alarm and passage inputs: relay hold vs. pulses, input levels, unused grants, and the wiring."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.gpio import GpiozeroOutputs
from device.inputs import GpioInputs
from firmware.device_state import DeviceState, Mode
from firmware.model import Reason, ScanEvent
from firmware.passage import NOT_PASSED, PassageWatch, not_passed_event
from tests.conftest import pin_levels

RELAY = 17


def outputs(factory, pulse_ms=60):
    return GpiozeroOutputs(pin_factory=factory, relay_pin=RELAY, relay_active_high=True, relay_pulse_ms=pulse_ms,
                           green_led_pin=27, red_led_pin=22, buzzer_pin=23,
                           monotonic=__import__("time").monotonic)


def test_hold_during_a_pulse_is_not_released_when_the_pulse_ends():
    factory = MockFactory()
    out = outputs(factory)
    try:
        out.open_pulse(0.05)
        out.hold_open()
        # the pulse deadline passes inside this wait; a correct pulser stays energised
        assert out.pulser.wait_idle(0.3) is False
        assert pin_levels(factory.pin(RELAY)) == [False, True]
        out.hold_released()
        assert out.pulser.wait_idle(1.0)
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
    finally:
        out.close()


def test_pulses_during_a_hold_change_nothing_and_a_release_mid_pulse_waits_for_the_pulse():
    factory = MockFactory()
    out = outputs(factory)
    try:
        out.hold_open()
        out.open_pulse(0.05)
        assert out.pulser.wait_idle(0.3) is False
        out.open_pulse(0.2)
        out.hold_released()  # the 0.2 s pulse is still running: it ends on its own time
        assert pin_levels(factory.pin(RELAY)) == [False, True]
        assert out.pulser.wait_idle(2.0)
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
        assert factory.pin(RELAY).states[-1].timestamp >= 0.19
    finally:
        out.close()


def test_shutdown_release_ends_a_hold_at_once():
    factory = MockFactory()
    out = outputs(factory)
    out.hold_open()
    out.release()
    assert out.pulser.held is False
    out.close()
    assert pin_levels(factory.pin(RELAY)) == [False, True, False]


@pytest.mark.parametrize(("active_high", "alarm_level", "quiet_level"), [(False, "low", "high"),
                                                                          (True, "high", "low")])
def test_fire_input_levels_follow_the_configured_active_level(active_high, alarm_level, quiet_level):
    factory = MockFactory()
    seen: list[bool] = []
    inputs = GpioInputs(pin_factory=factory, fire_alarm_pin=5, fire_alarm_active_high=active_high,
                        passage_sensor_pin=-1, on_fire=seen.append, on_passage=lambda: None, bounce_s=None)
    pin = factory.pin(5)
    try:
        getattr(pin, f"drive_{quiet_level}")()
        inputs.report_fire_level()
        getattr(pin, f"drive_{alarm_level}")()
        getattr(pin, f"drive_{quiet_level}")()
    finally:
        inputs.close()
    # report at start (quiet), then the alarm and its end, each exactly once
    assert seen[0] is False and seen[-2:] == [True, False]
    assert seen.count(True) == 1


def test_passage_sensor_pulses_call_back_once_each():
    factory = MockFactory()
    count = []
    inputs = GpioInputs(pin_factory=factory, fire_alarm_pin=-1, fire_alarm_active_high=False,
                        passage_sensor_pin=6, on_fire=lambda a: None, on_passage=lambda: count.append(1),
                        bounce_s=None)
    pin = factory.pin(6)
    try:
        for _ in range(3):
            pin.drive_low()
            pin.drive_high()
    finally:
        inputs.close()
    assert len(count) == 3


def _event(decision="granted", seq=1) -> ScanEvent:
    return ScanEvent(device_id="g", venue_id="v", direction="in", ts="2026-11-26T10:00:00.000Z", time_synced=True,
                     boot_id="b", decision=decision, reason="ok", credential="qg1", subject="s", display="N***",
                     latency_ms=12.0, code_sha256="ab" * 32, event_id=f"e{seq}", seq=seq)


def test_passage_watch_settles_grants_in_order_and_expires_the_rest():
    watch = PassageWatch(pass_timeout_s=10.0)
    watch.passage_recorded("k1")
    watch.granted(_event(seq=1), 100.0)
    watch.granted(_event("denied", seq=2), 101.0)  # denials wait for nothing
    watch.passage_recorded("k3")
    watch.granted(_event(seq=3), 102.0)
    assert watch.waiting == 2
    settled = watch.passage()
    assert settled.subject_key == "k1"
    assert watch.expired(111.9) == []
    late = watch.expired(112.0)
    assert [(g.subject_key, g.event.seq) for g in late] == [("k3", 3)]
    assert watch.passage() is None and watch.unmatched_passages == 1
    ev = not_passed_event(late[0].event, 1.7e9, True)
    assert (ev.decision, ev.reason, ev.event_id, ev.seq, ev.code_sha256) == (NOT_PASSED, NOT_PASSED, None, None,
                                                                            "ab" * 32)
