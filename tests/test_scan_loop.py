"""The scan loop with fake frames, a table decoder, mock pins and an in-memory sink."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from device.gpio import GpiozeroOutputs
from firmware.adapters.fakes import MemorySink, ScriptedFrames, TableDecoder
from firmware.core.errors import StoreError
from firmware.core.events import EventFactory
from firmware.core.gatekeeper import Gatekeeper
from firmware.core.model import Credential, CredentialType, DecodedCode, Frame, Reason, Rejection
from firmware.core.policy import Rules, subject_key
from firmware.features.scan_loop import EventRecorder, GateService
from tests.conftest import FakeClock, pin_levels

RELAY, GREEN, RED, BUZZER = 17, 27, 22, 23
VALID = Credential(type=CredentialType.QG1, subject="P-001", name="NGUYỄN ĐÌNH HÙNG", phone="0966323123",
                   signed=True, expires_s=4.0e9)


def check(payload: bytes):
    if payload.startswith(b"GOOD"):
        return Credential(**{**VALID.__dict__, "subject": payload.decode()})
    return Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT)


def make_outputs(factory, pulse_ms=40, active_high=False):
    return GpiozeroOutputs(pin_factory=factory, relay_pin=RELAY, relay_active_high=active_high,
                           relay_pulse_ms=pulse_ms, green_led_pin=GREEN, red_led_pin=RED,
                           buzzer_pin=BUZZER, monotonic=time.monotonic)


class Gate:
    """A service wired to fakes, driven by step()."""

    def __init__(self, table, sink=None, active_high=False, listeners=(), observers=()):
        self.factory = MockFactory()
        self.clock = FakeClock()
        self.frames = ScriptedFrames()
        self.sink = sink or MemorySink()
        self.outputs = make_outputs(self.factory, active_high=active_high)
        self.service = GateService(
            frames=self.frames, decoder=TableDecoder(table), outputs=self.outputs,
            recorder=EventRecorder(self.sink, listeners), clock=self.clock, gatekeeper=Gatekeeper.fixed(rules=Rules(repeat_window_s=5.0), check=check),
            events=EventFactory.fixed(device_id="gate-1", venue_id="v-1", direction="in", boot_id="b",
                                      subject_mode="raw"),
            observers=observers)

    def show(self, origin: str) -> int:
        self.frames.push(Frame(np.zeros((4, 4), np.uint8), self.clock.monotonic(), origin=origin))
        count = self.service.step(timeout_s=0.1)
        assert self.outputs.wait_idle(5.0)
        return count

    def pin(self, number):
        return self.factory.pin(number)

    def close(self):
        self.outputs.close()


@pytest.fixture
def gate():
    g = Gate({"valid": [b"GOOD-1"], "junk": [b"https://example.com"], "blank": [],
              "two": [b"GOOD-2", b"nonsense"]})
    yield g
    g.close()


def test_relay_is_driven_off_at_start_and_never_energised(gate):
    # active-low board: off is HIGH. Created LOW by the mock, driven HIGH at once.
    assert pin_levels(gate.pin(RELAY)) == [False, True]


def test_grant_pulses_relay_once_with_green_and_one_beep(gate):
    assert gate.show("valid") == 1
    assert pin_levels(gate.pin(RELAY)) == [False, True, False, True]
    assert pin_levels(gate.pin(GREEN)) == [False, True, False]
    assert pin_levels(gate.pin(RED)) == [False]
    assert pin_levels(gate.pin(BUZZER)) == [False, True, False]
    [event] = gate.sink.events
    assert (event.decision, event.reason, event.seq, event.subject) == ("granted", "ok", 1, "GOOD-1")


def test_denial_flashes_red_three_times_with_three_beeps_and_relay_untouched(gate):
    gate.show("junk")
    assert pin_levels(gate.pin(RELAY)) == [False, True]
    assert pin_levels(gate.pin(RED)) == [False] + [True, False] * 3
    assert pin_levels(gate.pin(BUZZER)) == [False] + [True, False] * 3
    assert pin_levels(gate.pin(GREEN)) == [False]
    [event] = gate.sink.events
    assert (event.decision, event.reason, event.credential) == ("denied", "unknown_format", "unknown")


def test_blank_frame_gives_no_event_and_no_pin_change(gate):
    assert gate.show("blank") == 0
    assert gate.sink.events == []
    assert pin_levels(gate.pin(RELAY)) == [False, True]


def test_code_held_in_view_opens_once_and_again_after_a_window_out_of_view(gate):
    # in view for 12 s in 0.5 s steps, well over the 5 s repeat window: the window slides while
    # the code stays in view, so it opens once (a window counted from the decision would reopen at 5 s)
    for _ in range(24):
        gate.show("valid")
        gate.clock.advance(0.5)
    assert [e.decision for e in gate.sink.events] == ["granted"]
    assert pin_levels(gate.pin(RELAY)) == [False, True, False, True]
    # out of view (frames without it) for 5.5 s, longer than the window; then back: a second decision
    for _ in range(11):
        gate.show("blank")
        gate.clock.advance(0.5)
    gate.show("valid")
    assert [e.decision for e in gate.sink.events] == ["granted", "granted"]
    assert pin_levels(gate.pin(RELAY)) == [False, True, False, True, False, True]


def test_grant_is_committed_before_the_relay_moves():
    relay_level_at_commit = []

    class ProbeSink(MemorySink):
        def append(self, event):
            relay_level_at_commit.append(g.outputs.pulser.energised)
            return super().append(event)

    g = Gate({"valid": [b"GOOD-1"]}, sink=ProbeSink())
    try:
        g.show("valid")
        assert relay_level_at_commit == [False]
        assert pin_levels(g.pin(RELAY)) == [False, True, False, True]
    finally:
        g.close()


def test_grant_that_cannot_be_recorded_is_refused_and_the_relay_stays_off():
    sink = MemorySink()
    sink.fail_with = StoreError("disk full")
    g = Gate({"valid": [b"GOOD-1"]}, sink=sink)
    try:
        g.show("valid")
        assert pin_levels(g.pin(RELAY)) == [False, True]
        assert pin_levels(g.pin(RED)) == [False] + [True, False] * 3
    finally:
        g.close()


def test_two_codes_in_one_frame_are_both_decided(gate):
    assert gate.show("two") == 2
    assert [(e.decision, e.reason) for e in gate.sink.events] == [("granted", "ok"), ("denied", "unknown_format")]


def test_empty_source_waits_out_the_timeout_instead_of_spinning(gate):
    started = time.monotonic()
    assert gate.service.step(timeout_s=0.2) == 0
    assert time.monotonic() - started >= 0.19


def test_grant_during_a_pulse_extends_it_without_a_second_click():
    factory = MockFactory()
    outputs = make_outputs(factory, pulse_ms=300, active_high=True)
    try:
        outputs.pulser.pulse()
        outputs.pulser.pulse()
        assert outputs.wait_idle(5.0)
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
    finally:
        outputs.close()


def test_release_drops_the_relay_at_once():
    factory = MockFactory()
    outputs = make_outputs(factory, pulse_ms=30_000, active_high=True)
    try:
        outputs.pulser.pulse()
        outputs.release()
        assert outputs.pulser.wait_idle(0.0)
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
    finally:
        outputs.close()


def test_after_lock_out_no_thread_can_energise_the_relay_again():
    factory = MockFactory()
    outputs = make_outputs(factory, pulse_ms=30_000, active_high=True)
    try:
        outputs.pulser.pulse()
        outputs.lock_out()
        outputs.open_pulse(1.0)
        outputs.hold_open()
        outputs.pulser.pulse()
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
    finally:
        outputs.close()


class BrokenPrinter:
    def event_stored(self, event):
        raise BrokenPipeError("stdout closed")


class BrokenTimer:
    def event_stored(self, event):
        pass

    def after_step(self):
        return 1 / 0


def test_a_failing_listener_is_logged_and_the_loop_goes_on(caplog):
    gate = Gate({"valid": [b"GOOD-1"], "junk": [b"https://example.com"]}, listeners=[BrokenPrinter()],
                observers=[BrokenTimer()])
    stop = threading.Event()
    gate.frames.push(Frame(np.zeros((4, 4), np.uint8), gate.clock.monotonic(), origin="valid"))
    gate.frames.push(Frame(np.zeros((4, 4), np.uint8), gate.clock.monotonic(), origin="junk"))
    gate.frames.end()
    gate.service.run(stop)
    assert gate.service.input_ended
    assert [(e.decision, e.seq) for e in gate.sink.events] == [("granted", 1), ("denied", 2)]
    assert sum("failed; the gate goes on" in r.message for r in caplog.records) == 2
    assert gate.outputs.wait_idle(5.0)
    gate.close()


def test_memory_is_pruned_once_a_minute(gate):
    gate.show("valid")
    memory = gate.service.gatekeeper.memory
    sha = DecodedCode(b"GOOD-1").sha256
    assert memory.last_seen_mono(sha) is not None
    gate.clock.advance(61.0)
    gate.service.gatekeeper.prune_if_due(gate.clock.monotonic(), gate.clock.wall())
    assert memory.last_seen_mono(sha) is None and memory.last_grant_mono(subject_key("GOOD-1")) is None
    # passages stay while they can still block a second entry, then go
    assert memory.last_passage(subject_key("GOOD-1")) is not None
    gate.clock.advance(4000.0)
    gate.service.gatekeeper.prune_if_due(gate.clock.monotonic(), gate.clock.wall())
    assert memory.last_passage(subject_key("GOOD-1")) is None
