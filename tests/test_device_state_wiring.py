"""The device monitor on a built gate: camera fault closes the gate, alarms and providers, shutdown order."""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from firmware.app import GateApp
from firmware.config import load_config
from firmware.device_state import DeviceState
from firmware.fakes import ScriptedFrames
from firmware.model import Reason
from tests.conftest import FakeClock, pin_levels
from tests.field_support import write_site

RELAY, STATUS_LED = 17, 24


def built(tmp_path, clock=None, **site):
    config, _ = write_site(tmp_path, **site)
    cfg = load_config(config)
    app = GateApp(cfg, pin_factory=MockFactory(), clock=clock or FakeClock())
    app.field_options = {"environ": {}, "input_bounce_s": None}
    app.build()
    app.service.frames = ScriptedFrames()
    app.field.start()
    return app


def test_no_frames_for_max_frame_age_is_a_camera_fault_that_releases_a_pulse_in_progress(tmp_path):
    clock = FakeClock()
    app = built(tmp_path, clock)
    try:
        assert app.field.tick() is DeviceState.READY
        app.outputs.open_pulse(30.0)  # a long pulse is running when the camera goes quiet
        clock.advance(59.9)
        assert app.field.tick() is DeviceState.READY
        clock.advance(0.1)  # max_frame_age_s = 60 in this site
        assert app.field.tick() is DeviceState.CAMERA_FAULT
        assert pin_levels(app.pin_factory.pin(RELAY)) == [False, True, False]
        assert app.field.led.state is DeviceState.CAMERA_FAULT
        snap = app.field.snapshot()
        assert (snap["state"], snap["relay"]) == ("camera_fault", "OFF")
    finally:
        app.close()


def test_unusable_outbox_fails_closed_and_shows_a_storage_alarm(tmp_path):
    app = built(tmp_path)
    try:
        app.alarms.set("outbox_unavailable", "disk gone")
        assert app.field.tick() is DeviceState.STORAGE_ALARM
        assert app.service.gatekeeper.blocked is Reason.FAIL_CLOSED
        app.alarms.set("outbox_unavailable", None)
        assert app.field.tick() is DeviceState.READY
        assert app.service.gatekeeper.blocked is None
    finally:
        app.close()


def test_untrusted_clock_and_stale_lists_from_a_provider(tmp_path):
    clock = FakeClock(trusted=False)
    app = built(tmp_path, clock)
    stale = {"lists_stale": True, "lists_fail_closed": True}
    app.device_inputs.append(lambda: stale)
    try:
        assert app.field.tick() is DeviceState.CLOCK_UNSYNCED
        assert app.service.gatekeeper.blocked is Reason.LISTS_STALE
        clock.trusted = True
        assert app.field.tick() is DeviceState.LISTS_STALE
        stale["lists_stale"] = False
        assert app.field.tick() is DeviceState.READY
    finally:
        app.close()


def test_stopping_is_shutdown_step_two_right_after_the_relay(tmp_path):
    app = built(tmp_path)
    names = [name for name, _ in app.shutdown.steps]
    app.close()
    at = names.index("release relay")
    assert names[at + 1] == "notify systemd STOPPING"
    assert names.index("close camera") > at + 1
    assert not (tmp_path / "run" / "status.json").exists()


def test_status_led_shows_booting_then_the_state(tmp_path):
    app = built(tmp_path)
    try:
        assert app.field.led.state is DeviceState.READY
    finally:
        app.close()
    levels = pin_levels(app.pin_factory.pin(STATUS_LED))
    assert levels[0] is False and levels[-1] is False
