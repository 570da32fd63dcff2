"""The device state machine: priority order, blocking reasons, mode and fire-alarm latch."""

from __future__ import annotations

from dataclasses import replace

import pytest

from firmware.core.device_state import DeviceInputs, DeviceState, Mode, ModeControl, blocked_reason, evaluate
from firmware.core.model import Reason

HEALTHY = DeviceInputs(built=True, provisioned=True, frame_age_s=0.1, max_frame_age_s=3.0,
                       broker_configured=True, broker_connected=True)


@pytest.mark.parametrize(("change", "state"), [
    ({}, DeviceState.READY),
    ({"built": False}, DeviceState.BOOTING),
    ({"free_passage": True}, DeviceState.FREE_PASSAGE),
    ({"provisioning": True}, DeviceState.PROVISIONING),
    ({"provisioned": False}, DeviceState.UNPROVISIONED),
    ({"mode": Mode.LOCKDOWN}, DeviceState.LOCKDOWN),
    ({"frame_age_s": 3.0}, DeviceState.CAMERA_FAULT),
    ({"storage_alarm": True}, DeviceState.STORAGE_ALARM),
    ({"storage_full": True}, DeviceState.STORAGE_ALARM),
    ({"fail_closed": True}, DeviceState.STORAGE_ALARM),
    ({"clock_trusted": False}, DeviceState.CLOCK_UNSYNCED),
    ({"lists_stale": True}, DeviceState.LISTS_STALE),
    ({"broker_connected": False}, DeviceState.OFFLINE),
    ({"broker_configured": False, "broker_connected": False}, DeviceState.READY),
])
def test_each_input_alone_gives_its_state(change, state):
    assert evaluate(replace(HEALTHY, **change)) is state


def test_every_state_is_reachable_from_the_table_above():
    reached = {evaluate(replace(HEALTHY, **c)) for c in (
        {}, {"built": False}, {"free_passage": True}, {"provisioning": True}, {"provisioned": False},
        {"mode": Mode.LOCKDOWN}, {"frame_age_s": 9.0}, {"storage_alarm": True}, {"clock_trusted": False},
        {"lists_stale": True}, {"broker_connected": False})}
    assert reached == set(DeviceState)


# Every fault at once, then removed one by one in priority order: each removal reveals the next.
PRIORITY = [
    ("built", True, DeviceState.BOOTING),
    ("free_passage", False, DeviceState.FREE_PASSAGE),
    ("provisioning", False, DeviceState.PROVISIONING),
    ("provisioned", True, DeviceState.UNPROVISIONED),
    ("mode", Mode.NORMAL, DeviceState.LOCKDOWN),
    ("frame_age_s", 0.0, DeviceState.CAMERA_FAULT),
    ("storage_alarm", False, DeviceState.STORAGE_ALARM),
    ("clock_trusted", True, DeviceState.CLOCK_UNSYNCED),
    ("lists_stale", False, DeviceState.LISTS_STALE),
    ("broker_connected", True, DeviceState.OFFLINE),
]


def test_priority_order_is_the_documented_one():
    inputs = DeviceInputs(built=False, free_passage=True, provisioning=True, provisioned=False,
                          mode=Mode.LOCKDOWN, frame_age_s=10.0, storage_alarm=True, clock_trusted=False,
                          lists_stale=True, broker_configured=True, broker_connected=False)
    seen = []
    for name, fixed, _ in PRIORITY:
        seen.append(evaluate(inputs))
        inputs = replace(inputs, **{name: fixed})
    seen.append(evaluate(inputs))
    assert seen == [state for _, _, state in PRIORITY] + [DeviceState.READY]


@pytest.mark.parametrize(("change", "reason"), [
    ({}, None),
    ({"free_passage": True, "mode": Mode.LOCKDOWN}, Reason.FREE_PASSAGE),
    ({"provisioned": False}, Reason.NOT_PROVISIONED),
    ({"provisioning": True}, Reason.NOT_PROVISIONED),
    ({"mode": Mode.LOCKDOWN, "storage_full": True}, Reason.LOCKDOWN),
    ({"storage_full": True}, Reason.STORAGE_FULL),
    ({"fail_closed": True, "storage_full": True}, Reason.FAIL_CLOSED),
    ({"fail_closed": True, "mode": Mode.LOCKDOWN}, Reason.LOCKDOWN),
    ({"storage_alarm": True}, None),
    ({"lists_stale": True}, None),
    ({"lists_stale": True, "lists_fail_closed": True}, Reason.LISTS_STALE),
    ({"clock_trusted": False}, None),
    ({"frame_age_s": 60.0}, None),
    ({"broker_connected": False}, None),
])
def test_blocked_reason(change, reason):
    assert blocked_reason(replace(HEALTHY, **change)) == reason


def test_mode_parse_accepts_the_mqtt_short_name_free():
    assert [Mode.parse(t) for t in ("normal", "LOCKDOWN", "free", "free_passage")] == [
        Mode.NORMAL, Mode.LOCKDOWN, Mode.FREE_PASSAGE, Mode.FREE_PASSAGE]
    with pytest.raises(ValueError):
        Mode.parse("open")


def test_fire_alarm_without_reset_returns_to_normal_when_the_input_clears():
    c = ModeControl(reset_required_after_fire=False)
    c = c.fire_alarm(True)
    assert c.free_passage
    c = c.fire_alarm(False)
    assert not c.free_passage


def test_fire_alarm_with_reset_stays_free_until_mode_normal_after_the_input_clears():
    c = ModeControl(reset_required_after_fire=True).fire_alarm(True)
    same, error = c.command(Mode.NORMAL)
    assert (error, same.free_passage) == ("fire_alarm_active", True)
    c = c.fire_alarm(False)
    assert c.free_passage and c.fire_latched
    c, error = c.command(Mode.NORMAL)
    assert (error, c.free_passage, c.mode) == (None, False, Mode.NORMAL)


def test_lockdown_is_overridden_by_fire_and_comes_back_after_it():
    c, _ = ModeControl().command(Mode.LOCKDOWN)
    c = c.fire_alarm(True)
    assert evaluate(replace(HEALTHY, free_passage=c.free_passage, mode=c.mode)) is DeviceState.FREE_PASSAGE
    c = c.fire_alarm(False)
    assert evaluate(replace(HEALTHY, free_passage=c.free_passage, mode=c.mode)) is DeviceState.LOCKDOWN
