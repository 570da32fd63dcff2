"""sd_notify: datagrams on a socket the test opens, and WATCHDOG only from the loop while frames flow."""

from __future__ import annotations

import os
import socket
import threading

import numpy as np
import pytest

from firmware.adapters.fakes import MemorySink, ScriptedFrames, TableDecoder
from firmware.adapters.systemd_notify import SystemdNotifier
from firmware.core.events import EventFactory
from firmware.core.gatekeeper import Gatekeeper, LoopStats
from firmware.core.model import Frame
from firmware.core.policy import Rules
from firmware.features.scan_loop import EventRecorder, GateService
from tests.conftest import FakeClock


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path_or_abstract: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = "\0" + path_or_abstract[1:] if path_or_abstract.startswith("@") else path_or_abstract
        self.sock.bind(address)
        self.name = path_or_abstract

    def receive(self, timeout_s: float = 2.0) -> str | None:
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    s = NotifySocket(str(tmp_path / "notify.sock"))
    yield s
    s.close()


def test_messages_arrive_on_a_path_socket(notify_socket):
    n = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.name})
    assert n.enabled
    assert n.ready("ready; 15.0 fps") and n.status("camera_fault") and n.watchdog() and n.stopping()
    got = [notify_socket.receive() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=ready; 15.0 fps", "STATUS=camera_fault", "WATCHDOG=1", "STOPPING=1"]
    n.close()


def test_abstract_socket_names_start_with_at():
    name = f"@qrgate-test-{os.getpid()}-{threading.get_ident()}"
    s = NotifySocket(name)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": name})
        assert n.ready()
        assert s.receive() == "READY=1"
        n.close()
    finally:
        s.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = SystemdNotifier({})
    assert not n.enabled
    assert (n.ready(), n.watchdog(), n.stopping(), n.status("x")) == (False, False, False, False)
    assert n.sent == 0


def test_a_vanished_socket_does_not_raise(tmp_path):
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    n.close()


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert SystemdNotifier({"WATCHDOG_USEC": "15000000"}).ping_interval_s == 7.5
    assert SystemdNotifier({}).ping_interval_s == 1.0


def _service(frames, clock, stats, observers) -> GateService:
    return GateService(frames=frames, decoder=TableDecoder(), outputs=_NoOutputs(),
                       recorder=EventRecorder(MemorySink()), clock=clock,
                       gatekeeper=Gatekeeper.fixed(rules=Rules(), check=lambda p: None),
                       events=EventFactory.fixed(device_id="g", venue_id="v", direction="in", boot_id="b",
                                                 subject_mode="none", secret=b"s" * 32, publish_codes=False),
                       stats=stats, observers=observers)


class _AfterStep:
    """A loop observer that runs a function after each step (no events in these frames)."""

    def __init__(self, function) -> None:
        self.function = function

    def event_stored(self, event) -> None:
        raise AssertionError("no codes in these frames")

    def after_step(self) -> None:
        self.function()


class _NoOutputs:
    def show(self, decision):
        raise AssertionError("no codes in these frames")

    def release(self):
        pass


def test_watchdog_is_sent_from_the_loop_only_while_frames_are_fresh(notify_socket):
    clock = FakeClock()
    frames = ScriptedFrames()
    stats = LoopStats()
    n = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "1000000"})  # ping every 0.5 s
    # as the device monitor does after each step
    watchdog = _AfterStep(lambda: n.ping_if_frames_fresh(clock.monotonic(), stats.last_frame_mono_s,
                                                         max_frame_age_s=3.0))
    pixels = np.zeros((8, 8), np.uint8)
    # what the camera delivers on each turn of the real loop, and how far the clock moves after it:
    # 4 frames 0.4 s apart, then nothing for 5 turns 1 s apart (each such read waits out its real
    # 0.5 s timeout, as a silent camera would); then the script ends and run() returns
    script = [True, True, True, True, False, False, False, False, False]
    advance_s = [0.4, 0.4, 0.4, 0.4, 1.0, 1.0, 1.0, 1.0, 1.0]
    sent: list[int] = []

    def next_turn() -> None:  # after the watchdog hook, on the loop thread; must not raise
        sent.append(n.sent)
        clock.advance(advance_s[len(sent) - 1])
        if len(sent) == len(script):
            frames.end()  # the next read raises EOFError, which ends run()
        elif script[len(sent)]:
            frames.push(Frame(pixels, clock.monotonic(), len(sent)))

    service = _service(frames, clock, stats, [watchdog, _AfterStep(next_turn)])
    frames.push(Frame(pixels, clock.monotonic(), 0))
    stop = threading.Event()
    loop = threading.Thread(target=service.run, args=(stop,), name="test-loop", daemon=True)
    loop.start()
    loop.join(20.0)
    stop.set()  # only if run() did not end by itself: the assertions below then fail
    assert not loop.is_alive() and service.input_ended, "run() did not end when the script did"
    # frame turns at +0, 0.4, 0.8, 1.2 s: pings at 0 and 0.8 s (interval 0.5 s); empty turns at
    # +1.6, 2.6, 3.6 s (last frame +0.4, 1.4, 2.4 s ago) ping, at +4.6 and 5.6 s (over 3 s) not
    assert sent == [1, 1, 2, 2, 3, 4, 5, 5, 5]
    got = []
    while (msg := notify_socket.receive(0.2)) is not None:
        got.append(msg)
    assert got == ["WATCHDOG=1"] * 5
    n.close()
