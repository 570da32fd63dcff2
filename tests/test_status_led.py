"""Status LED blink codes: whole MockPin histories with timings from the pin's own timestamps."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device.status_led import BLINK_CODES, MAX_CYCLE_UNITS, UNIT_S, StatusLed
from firmware.core.device_state import DeviceState
from tests.conftest import pin_levels

TOLERANCE_S = 0.06  # a loaded 2-core CI box; waits are never early, only late


def _rotations(code):
    return {code[i:] + code[:i] for i in range(0, len(code), 2)}


def test_every_state_has_a_code_that_blinks_within_3_s():
    assert set(BLINK_CODES) == set(DeviceState)
    for state, code in BLINK_CODES.items():
        assert len(code) % 2 == 0 and len(code) >= 2, state
        assert all(units >= 1 for units in code), state
        assert sum(code) <= MAX_CYCLE_UNITS, f"{state} cycle {sum(code) * UNIT_S} s is over 3 s"


def test_no_two_codes_look_alike_from_any_starting_point():
    for (a, ca), (b, cb) in itertools.combinations(BLINK_CODES.items(), 2):
        # repeated forever, two codes are the same if one is a rotation of the other, even doubled
        assert not (_rotations(ca * 2) & _rotations(cb * 2)), (a, b)


def _expected_levels(code, cycles):
    return [False] + [i % 2 == 0 for i in range(len(code))] * cycles


def _check_timings(pin, code, cycles, unit_s):
    # states[k].timestamp is the time since the previous change: states[2:] measure the
    # segments of the code in order, except the very last "off" (nothing follows it)
    measured = [s.timestamp for s in pin.states[2:]]
    expected = [units * unit_s for units in (list(code) * cycles)[:-1]]
    assert len(measured) == len(expected)
    for i, (m, e) in enumerate(zip(measured, expected, strict=True)):
        assert e - 0.005 <= m <= e + TOLERANCE_S, f"segment {i}: {m:.3f} s, expected {e:.3f} s"


def test_each_state_plays_its_code_as_a_whole_pin_history():
    factory = MockFactory()
    unit_s = 0.05  # half speed units keep the test short; the real unit is checked below
    leds = {}
    try:
        for pin, state in enumerate(BLINK_CODES, start=4):
            leds[state] = (StatusLed(pin_factory=factory, pin=pin, unit_s=unit_s), factory.pin(pin))
        for state, (led, _) in leds.items():
            led.show(state, cycles=2)
        for state, (led, _) in leds.items():
            assert led.wait_done(10.0), state
        for state, (_led, pin) in leds.items():
            assert pin_levels(pin) == _expected_levels(BLINK_CODES[state], 2), state
            _check_timings(pin, BLINK_CODES[state], 2, unit_s)
    finally:
        for led, _ in leds.values():
            led.close()


def test_camera_fault_at_the_real_100_ms_unit_is_three_flashes_then_a_pause():
    factory = MockFactory()
    led = StatusLed(pin_factory=factory, pin=24)
    try:
        led.show(DeviceState.CAMERA_FAULT, cycles=1)
        assert led.wait_done(5.0)
        pin = factory.pin(24)
        assert pin_levels(pin) == [False, True, False, True, False, True, False]
        _check_timings(pin, (2, 2, 2, 2, 2, 10), 1, UNIT_S)
    finally:
        led.close()


def test_a_new_state_starts_its_code_at_once_and_close_leaves_the_led_dark():
    factory = MockFactory()
    led = StatusLed(pin_factory=factory, pin=24, unit_s=0.05)
    pin = factory.pin(24)
    try:
        led.show(DeviceState.LOCKDOWN)  # 18 units on: we switch while it is on
        led.show(DeviceState.READY, cycles=1)
        assert led.wait_done(5.0)
        assert led.state is DeviceState.READY
    finally:
        led.close()
    # lockdown's "on" continued into ready's "on" (no change), then ready's one blip
    assert pin_levels(pin) == [False, True, False]
    assert pin.states[2].timestamp == pytest.approx(0.05, abs=TOLERANCE_S)
    assert pin.state is False


def test_showing_the_same_state_again_does_not_restart_its_code():
    factory = MockFactory()
    led = StatusLed(pin_factory=factory, pin=24, unit_s=0.05)
    pin = factory.pin(24)
    try:
        led.show(DeviceState.UNPROVISIONED)
        led.show(DeviceState.UNPROVISIONED)
        led.show(DeviceState.UNPROVISIONED, cycles=1)  # a bounded show does restart it
        assert led.wait_done(5.0)
    finally:
        led.close()
    assert pin_levels(pin) == [False, True, False]
    assert pin.states[2].timestamp == pytest.approx(0.5, abs=TOLERANCE_S)


def test_the_readme_table_matches_the_codes():
    from device.status_led import TECHNICIAN_ACTIONS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for state, code in BLINK_CODES.items():
        row = [line for line in readme.splitlines() if line.startswith(f"| `{state.value}` |")]
        assert len(row) == 1, state
        cells = [c.strip() for c in row[0].strip("|").split("|")]
        assert cells[2] == ",".join(map(str, code)) and cells[3] == TECHNICIAN_ACTIONS[state], state
