"""The device monitor on a built gate: camera fault closes the gate, alarms and providers, shutdown order."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from device.synthetic import write_blank_png
from firmware.adapters.config_file import load_config
from firmware.adapters.fakes import ScriptedFrames
from firmware.app.builder import GateApp
from firmware.core.device_state import DeviceState
from firmware.core.errors import ConfigError
from firmware.core.model import Reason
from tests.conftest import FakeClock, pin_levels
from tests.field_support import write_site

RELAY, STATUS_LED = 17, 24


class Inputs:
    """A device-input source whose values the test changes."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def device_inputs(self) -> dict:
        return self.values


def built(tmp_path, clock=None, *, monitor=True, extra_inputs=(), **site):
    """A built and started gate (READY=1 sent, the device state past booting).

    monitor=False stops the monitor thread at once, for tests that call ``field.tick()`` by
    hand: every tick is then theirs, none runs alongside on the monitor thread.
    """
    config, _ = write_site(tmp_path, **site)
    cfg = load_config(config)
    app = GateApp(cfg, pin_factory=MockFactory(), clock=clock or FakeClock(), environ={}, input_bounce_s=None,
                  extra_inputs=extra_inputs)
    app.build()
    app.service.frames = ScriptedFrames()
    app.monitor.start()  # as the first GateApp.run() does: ticks once, then starts the monitor
    if not monitor:
        app.monitor.stop()  # joins the monitor thread
        monitor_thread = app.monitor._thread
        assert monitor_thread is not None and not monitor_thread.is_alive(), "the monitor thread is still running"
    return app


def test_no_frames_for_max_frame_age_is_a_camera_fault_that_releases_a_pulse_in_progress(tmp_path):
    clock = FakeClock()
    app = built(tmp_path, clock, monitor=False)
    try:
        assert app.monitor.tick() is DeviceState.READY
        app.outputs.open_pulse(30.0)  # a long pulse is running when the camera goes quiet
        clock.advance(59.9)
        assert app.monitor.tick() is DeviceState.READY
        clock.advance(0.1)  # max_frame_age_s = 60 in this site
        assert app.monitor.tick() is DeviceState.CAMERA_FAULT
        assert pin_levels(app.pin_factory.pin(RELAY)) == [False, True, False]
        assert app.monitor.led.shown == (DeviceState.BOOTING, DeviceState.READY, DeviceState.CAMERA_FAULT)
        snap = app.status_report.snapshot()
        assert (snap["state"], snap["relay"]) == ("camera_fault", "OFF")
    finally:
        app.close()


def test_unusable_outbox_fails_closed_and_shows_a_storage_alarm(tmp_path):
    app = built(tmp_path, monitor=False)
    try:
        app.alarms.set("outbox_unavailable", "disk gone")
        assert app.monitor.tick() is DeviceState.STORAGE_ALARM
        assert app.service.gatekeeper.blocked is Reason.FAIL_CLOSED
        app.alarms.set("outbox_unavailable", None)
        assert app.monitor.tick() is DeviceState.READY
        assert app.service.gatekeeper.blocked is None
        assert app.monitor.led.shown == (DeviceState.BOOTING, DeviceState.READY, DeviceState.STORAGE_ALARM,
                                       DeviceState.READY)
    finally:
        app.close()


def test_untrusted_clock_and_stale_lists_from_a_provider(tmp_path):
    clock = FakeClock(trusted=False)
    stale = {"lists_stale": True, "lists_fail_closed": True}
    app = built(tmp_path, clock, monitor=False, extra_inputs=[Inputs(stale)])
    try:
        assert app.monitor.tick() is DeviceState.CLOCK_UNSYNCED
        assert app.service.gatekeeper.blocked is Reason.LISTS_STALE
        clock.trusted = True
        assert app.monitor.tick() is DeviceState.LISTS_STALE
        stale["lists_stale"] = False
        assert app.monitor.tick() is DeviceState.READY
        # the clock was untrusted from the start: start()'s tick already showed clock_unsynced
        assert app.monitor.led.shown == (DeviceState.BOOTING, DeviceState.CLOCK_UNSYNCED, DeviceState.LISTS_STALE,
                                       DeviceState.READY)
    finally:
        app.close()


def test_shutdown_runs_in_the_documented_order(tmp_path, shared_broker, topic_prefix):
    # HOUSE_STYLE section 3: relay, STOPPING, camera, outbox flush, MQTT offline, GPIO and stores
    app = built(tmp_path, broker=shared_broker, prefix=topic_prefix)
    names = [name for name, _ in app.shutdown.steps]
    app.close()
    assert names == ["release relay", "notify systemd STOPPING", "stop monitor", "close camera",
                     "flush outbox", "MQTT offline and disconnect",
                     "close GPIO", "close state store", "close event sink", "close passback store",
                     "close notify socket", "close status LED", "remove status file"]
    assert not (tmp_path / "run" / "status.json").exists()


def test_without_a_broker_there_is_nothing_to_flush(tmp_path):
    app = built(tmp_path)
    names = [name for name, _ in app.shutdown.steps]
    app.close()
    assert names == ["release relay", "notify systemd STOPPING", "stop monitor", "close camera",
                     "close GPIO", "close state store", "close event sink", "close passback store",
                     "close notify socket", "close status LED", "remove status file"]


def test_status_led_shows_booting_then_the_state(tmp_path):
    app = built(tmp_path, monitor=False)
    try:
        # booting from the build (the LED's first code), ready from start(); nothing in between
        assert app.monitor.led.shown == (DeviceState.BOOTING, DeviceState.READY)
        assert app.monitor.led.state is DeviceState.READY
    finally:
        app.close()
    # the whole pin history: created dark, whole blinks only (how many depends on how long each
    # code played, in real time), dark after close
    levels = pin_levels(app.pin_factory.pin(STATUS_LED))
    blinks = (len(levels) - 1) // 2
    assert blinks >= 1 and levels == [False] + [True, False] * blinks, levels


def test_a_build_that_fails_at_the_camera_closes_what_it_opened(tmp_path):
    config, _ = write_site(tmp_path)
    cfg = load_config(config)
    for image in (tmp_path / "images").iterdir():
        image.unlink()  # the dir: source now has no image: the camera cannot open
    factory = MockFactory()
    app = GateApp(cfg, pin_factory=factory, clock=FakeClock(), environ={}, input_bounce_s=None)
    with pytest.raises(ConfigError, match="holds no PNG"):
        app.build()
    app.close()
    assert pin_levels(factory.pin(RELAY)) == [False]  # claimed off (active-high), never energised
    # pins, stores and the state-dir lock were all released: the same gate can be built again
    write_blank_png(tmp_path / "images" / "blank.png")
    again = GateApp(cfg, pin_factory=factory, clock=FakeClock(), environ={}, input_bounce_s=None)
    again.build()
    again.close()


def test_a_live_camera_returning_the_same_frame_counts_as_silent_and_faults(tmp_path):
    """R4: a frozen capture (picamera2 handing back one buffer) must close the gate like a dead one."""
    import numpy as np

    from firmware.core.model import Frame

    clock = FakeClock()
    app = built(tmp_path, clock, monitor=False)
    frames = app.service.frames
    frames.live = True  # stands in for picamera2 or v4l2; this site's own source replays files
    rng = np.random.default_rng(7)
    frozen = rng.integers(0, 255, (48, 64), dtype=np.uint8)

    def show(pixels) -> None:
        frames.push(Frame(pixels=pixels, captured_mono_s=clock.monotonic(), index=0, origin="picamera2"))
        assert app.service.step(0.0) == 0

    try:
        assert app.monitor.tick() is DeviceState.READY
        for _ in range(3):  # noise: every live frame differs
            show(rng.integers(0, 255, (48, 64), dtype=np.uint8))
            clock.advance(20.0)
            assert app.monitor.tick() is DeviceState.READY
        show(frozen)
        for _ in range(3):  # then the same buffer again and again, 60 s in all
            clock.advance(20.0)
            show(frozen.copy())
        assert app.service.stats.frozen_frames == 3 and app.service.stats.frames == 7
        assert app.monitor.tick() is DeviceState.CAMERA_FAULT
        show(rng.integers(0, 255, (48, 64), dtype=np.uint8))  # the capture recovers
        assert app.monitor.tick() is DeviceState.READY
    finally:
        app.close()


def test_a_replay_source_may_repeat_an_image_without_a_fault(tmp_path):
    import numpy as np

    from firmware.core.model import Frame

    clock = FakeClock()
    app = built(tmp_path, clock, monitor=False)
    assert app.frames.live is False  # the site's dir: source, as built
    assert app.service.frames.live is False
    still = np.zeros((48, 64), dtype=np.uint8)
    try:
        for _ in range(4):
            app.service.frames.push(Frame(pixels=still, captured_mono_s=clock.monotonic(), index=0, origin="dir"))
            assert app.service.step(0.0) == 0
            clock.advance(20.0)
        assert app.monitor.tick() is DeviceState.READY and app.service.stats.frozen_frames == 0
    finally:
        app.close()
