"""sd_notify: datagrams on a socket the test opens, and WATCHDOG only from the loop while frames flow."""

from __future__ import annotations

import os
import socket
import threading

import numpy as np
import pytest

from firmware.events import EventFactory
from firmware.fakes import MemorySink, ScriptedFrames, TableDecoder
from firmware.model import Frame
from firmware.notify import SystemdNotifier
from firmware.policy import Rules
from firmware.service import GateService, Gatekeeper
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


def _service(frames, clock) -> GateService:
    return GateService(frames=frames, decoder=TableDecoder(), outputs=_NoOutputs(), sink=MemorySink(), clock=clock,
                       gatekeeper=Gatekeeper(rules=Rules(), check=lambda p: None),
                       events=EventFactory(device_id="g", venue_id="v", direction="in", boot_id="b",
                                           subject_mode="none", secret=b"s" * 32, publish_codes=False))


class _NoOutputs:
    def show(self, decision):
        raise AssertionError("no codes in these frames")

    def release(self):
        pass


def test_watchdog_is_sent_from_the_loop_only_while_frames_are_fresh(notify_socket):
    clock = FakeClock()
    frames = ScriptedFrames()
    service = _service(frames, clock)
    n = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "1000000"})  # ping every 0.5 s
    service.after_step.append(lambda: n.ping_if_frames_fresh(clock.monotonic(), service.stats.last_frame_mono_s,
                                                             max_frame_age_s=3.0))
    pixels = np.zeros((8, 8), np.uint8)
    sent = []

    def step_with(frame: Frame | None) -> None:
        if frame is not None:
            frames.push(frame)
        service.step(timeout_s=0.0)
        for hook in service.after_step:
            hook()
        sent.append(n.sent)

    for i in range(4):  # frames 0.4 s apart: pings at 0 s and 0.8 s (interval 0.5 s)
        step_with(Frame(pixels, clock.monotonic(), i))
        clock.advance(0.4)
    assert sent == [1, 1, 2, 2]
    for _ in range(10):  # the camera delivers nothing: the loop turns, 3 s after the last frame pings stop
        step_with(None)
        clock.advance(0.5)
    # last frame at +1.2 s; pings every turn (0.5 s apart) until +4.2 s, then none
    assert sent[4:] == [3, 4, 5, 6, 7, 8, 8, 8, 8, 8]
    got = []
    while (msg := notify_socket.receive(0.2)) is not None:
        got.append(msg)
    assert got == ["WATCHDOG=1"] * 8
    n.close()
