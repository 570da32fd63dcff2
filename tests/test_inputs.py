"""Fire alarm and passage inputs: relay hold vs. pulses, input levels, unused grants, and the wiring."""

from __future__ import annotations

import time

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from device.gpio import GpiozeroOutputs
from device.inputs import GpioInputs
from firmware.adapters.config_file import load_config
from firmware.adapters.fakes import ScriptedFrames, TableDecoder
from firmware.app.builder import GateApp
from firmware.core.device_state import DeviceState
from firmware.core.model import Frame, Reason, ScanEvent
from firmware.core.passage import NOT_PASSED, PassageWatch, not_passed_event
from firmware.core.policy import subject_key
from provisioning import keys
from provisioning.commands import build_envelope, send_command
from provisioning.mqtt_request import Broker, Target
from tests.conftest import FakeClock, pin_levels
from tests.daemon_support import trust_new_key, valid_pass
from tests.field_support import build_app, write_site
from tests.mqtt_support import Collector

RELAY = 17


def outputs(factory, pulse_ms=60):
    return GpiozeroOutputs(pin_factory=factory, relay_pin=RELAY, relay_active_high=True, relay_pulse_ms=pulse_ms,
                           green_led_pin=27, red_led_pin=22, buzzer_pin=23,
                           monotonic=time.monotonic)


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


# The pull-up holds the pin HIGH at start: driving an active-high loop to its quiet LOW level is a
# real edge, reported (False) before the start report; on an active-low loop HIGH is no change.
@pytest.mark.parametrize(("active_high", "alarm_level", "quiet_level", "expected"), [
    (False, "low", "high", [False, True, False]),
    (True, "high", "low", [False, False, True, False]),
])
def test_fire_input_levels_follow_the_configured_active_level(active_high, alarm_level, quiet_level, expected):
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
    assert seen == expected


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


# --------------------------------------------------------------------------- through the built gate

@pytest.mark.broker
@pytest.mark.parametrize("reset_required", [False, True])
def test_fire_alarm_frees_the_passage_publishes_it_and_returns_to_normal(tmp_path, shared_broker, topic_prefix,
                                                                        reset_required):
    config, key = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix, gpio={"fire_alarm_pin": 5},
                             commands={"reset_required_after_fire": reset_required})
    factory = MockFactory()
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/state")
    app = build_app(config, factory)
    fire = factory.pin(5)
    relay = factory.pin(RELAY)

    def state_published(device_state):
        return collector.wait_until(lambda ms: any(m.json().get("device_state") == device_state for m in ms), 10)

    try:
        assert app.link.wait_ready(10)
        assert app.monitor.wait_for_state(DeviceState.READY, 5.0)
        fire.drive_low()  # active-low contact: alarm
        assert app.monitor.wait_for_state(DeviceState.FREE_PASSAGE, 5.0)
        assert app.service.gatekeeper.blocked is Reason.FREE_PASSAGE
        assert pin_levels(relay) == [False, True]  # held energised, no pulse timing ends it
        assert state_published("free_passage")
        doc = [m for m in collector.messages if m.json().get("device_state") == "free_passage"][-1].json()
        assert (doc["fire_alarm"], doc["free_passage"]) == (True, True)
        # a pulse timer running out must not drop the hold
        app.outputs.open_pulse(0.05)
        assert app.outputs.pulser.wait_idle(0.3) is False
        fire.drive_high()  # alarm clears
        if reset_required:
            assert app.monitor.wait_for_state(DeviceState.READY, 0.5) is False  # still latched
            assert pin_levels(relay) == [False, True]
            target = Target(Broker(shared_broker.host, shared_broker.port), device_id="gate-1", prefix=topic_prefix)
            envelope, tx = build_envelope(key, device_id="gate-1", command="mode", args={"mode": "normal"}, ttl_s=10,
                                          venue_id="v-1", prefix=topic_prefix)
            answer = send_command(target, "mode", envelope, tx, ttl_s=10, timeout_s=10)
            assert answer["status"] == "ok"
        assert app.monitor.wait_for_state(DeviceState.READY, 5.0)
        assert pin_levels(relay) == [False, True, False]
        assert app.service.gatekeeper.blocked is None
        assert collector.wait_until(lambda ms: ms[-1].json().get("device_state") == "ready"
                                    and ms[-1].json().get("fire_alarm") is False, 10)
    finally:
        app.close()
        collector.close()


def test_a_grant_without_passage_becomes_not_passed_and_frees_anti_passback(tmp_path):
    """Drives the real service loop with scripted frames: grant, no passage, timeout."""
    config, _ = write_site(tmp_path, gpio={"passage_sensor_pin": 6})
    issuer = keys.load_private_key(trust_new_key(tmp_path, "issuer", "issuers").private_path)
    alice, bob = valid_pass(issuer, "ALICE"), valid_pass(issuer, "BOB")
    clock = FakeClock(wall_s=time.time())
    stored: list[ScanEvent] = []
    app = GateApp(load_config(config), pin_factory=MockFactory(), clock=clock, environ={}, input_bounce_s=None,
                  on_event=[stored.append])
    service = app.build()
    frames = ScriptedFrames()
    service.frames = frames
    service.decoder = TableDecoder({"alice": [alice.encode()], "bob": [bob.encode()]})
    pixels = np.zeros((4, 4), np.uint8)

    def turn(origin: str | None) -> None:
        if origin:
            frames.push(Frame(pixels, clock.monotonic(), 0, origin))
        service.step(timeout_s=0.0)
        service.after_step()

    try:
        turn("alice")
        turn("bob")
        factory = app.pin_factory
        factory.pin(6).drive_low()   # one passage: settles alice's grant (the oldest)
        factory.pin(6).drive_high()
        turn(None)
        clock.advance(10.0)          # pass_timeout_s: bob never went through
        turn(None)
        assert [e.decision for e in stored] == ["granted", "granted", "not_passed"]
        assert stored[2].subject == stored[1].subject != stored[0].subject  # bob's, HMAC-protected
        assert stored[2].seq == 3 and stored[2].event_id not in (stored[0].event_id, stored[1].event_id)
        memory = service.gatekeeper.memory
        assert memory.last_passage(subject_key("ALICE")) is not None
        assert memory.last_passage(subject_key("BOB")) is None
        assert app.passback.load(clock.wall()).get(subject_key("BOB")) is None
    finally:
        app.close()
