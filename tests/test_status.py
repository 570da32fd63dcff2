"""`qrgate status` and the status file, unit-level and against a running `qrgate run` daemon.

The daemon test also plays systemd: it binds the NOTIFY_SOCKET and checks READY, WATCHDOG
(while frames flow, and none once they stop), STATUS on the camera fault and STOPPING.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.status_led import BLINK_CODES, UNIT_S
from device.synthetic import write_blank_png
from firmware.adapters.status_file import (
    EXIT_NOT_READY,
    EXIT_NOT_RUNNING,
    EXIT_READY,
    STATUS_SCHEMA,
    StatusWriter,
    daemon_running,
    read_status,
    write_status,
)
from firmware.core.device_state import DeviceState
from firmware.core.status_view import render_table
from tests.daemon_support import qrgate, start_gate, write_config

SNAPSHOT = {
    "schema": STATUS_SCHEMA, "pid": os.getpid(), "state": "ready", "device_id": "gate-1", "venue_id": "v-1",
    "direction": "in", "version": "0.1.0", "boot_id": "b", "uptime_s": 7260.0, "mode": "normal",
    "fire_alarm": False, "relay": "OFF", "camera": {"fps": 14.9, "last_frame_age_s": 0.05},
    "decode": {"p50_ms": 1.2, "p99_ms": 8.5}, "outbox": {"backlog": 12, "oldest_unsent_age_s": 95.0},
    "broker": {"configured": True, "connected": False, "address": "mqtt.lan:8883"},
    "lists": {"deny": {"version": 42, "age_s": 3600.0, "stale": False}},
    "clock": {"trusted": True, "synced": True}, "decisions": 3, "granted": 2,
    "last_decision": {"ts": "2026-11-26T10:00:00.000Z", "decision": "granted", "reason": "ok",
                      "credential": "qg1", "display": "NGUYỄN ĐÌNH *** 0966 323 ***", "code_sha256_prefix": "ab12"},
    "health": {"cpu_temp_c": 51.5}, "written_at": "2026-11-26T10:00:01.000Z",
}


def test_write_then_read_roundtrip_leaves_no_temp_file(tmp_path):
    path = tmp_path / "run" / "status.json"
    write_status(path, SNAPSHOT)
    assert read_status(path) == SNAPSHOT
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # readable by technicians outside the group


@pytest.mark.parametrize("content", ["", "{", "[]", json.dumps({"schema": "other"})])
def test_unreadable_or_foreign_status_files_read_as_none(tmp_path, content):
    path = tmp_path / "status.json"
    path.write_text(content)
    assert read_status(path) is None


def test_the_table_shows_every_field_with_masked_last_decision():
    table = render_table(SNAPSHOT, running=True)
    width = len("last decision")  # the longest key sets the column
    rows = {line[:width].strip(): line[width:].strip() for line in table.splitlines()}
    assert rows["state"] == "ready"
    assert "gate-1" in rows["device"] and "v-1" in rows["device"]
    assert "2.0 h" in rows["uptime"]
    assert "14.9 fps" in rows["camera"] and "p99 8.5 ms" in rows["decode"]
    assert "12 unsent, oldest 95.0 s" in rows["outbox"]
    assert "DISCONNECTED (mqtt.lan:8883)" in rows["broker"]
    assert rows["list deny"] == "version 42, age 60.0 min"
    assert rows["cpu temp"] == "51.5 °C"
    assert "NGUYỄN ĐÌNH *** 0966 323 ***" in table and "0966323" not in table
    assert "NOT running" in render_table(SNAPSHOT, running=False)


def test_daemon_running_needs_a_live_pid_and_the_state_lock(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert daemon_running({**SNAPSHOT, "pid": int(dead.stdout)}, tmp_path, lambda d: True) is False
    assert daemon_running(SNAPSHOT, tmp_path, lambda d: False) is False
    assert daemon_running(SNAPSHOT, tmp_path, lambda d: True) is True
    assert daemon_running(None, tmp_path, lambda d: True) is False


def test_writer_writes_on_change_or_after_the_interval(tmp_path):
    writer = StatusWriter(tmp_path / "status.json", interval_s=1.0)
    calls = []

    def snap():
        calls.append(1)
        return SNAPSHOT

    assert [writer.maybe_write(t, snap, s) for t, s in
            [(0.0, "ready"), (0.5, "ready"), (0.6, "offline"), (1.5, "offline"), (1.6, "offline")]] == [
        True, False, True, False, True]
    assert len(calls) == 3


def test_status_refuses_another_gates_file_in_a_shared_runtime_dir(tmp_path, capsys):
    """Two gates on one PC with one runtime_dir: gate-2's status must not show gate-1's state."""
    from firmware.adapters.process import hold_state_lock
    from firmware.cli import main

    shared = tmp_path / "run"
    write_status(shared / "status.json", SNAPSHOT)  # gate-1, ready, written by a live pid
    state_2 = tmp_path / "state-2"
    state_2.mkdir()
    config = tmp_path / "gate-2.toml"
    config.write_text(f'[device]\nid = "gate-2"\nstate_dir = "{state_2}"\nruntime_dir = "{shared}"\n')
    lock = hold_state_lock(state_2)  # gate-2 runs too
    try:
        rc = main(["status", "--config", str(config)])
        captured = capsys.readouterr()
        assert rc == EXIT_NOT_RUNNING
        assert "gate-1" not in captured.out and "ready" not in captured.out
        assert "is gate gate-1's" in captured.err and "device.runtime_dir" in captured.err
        assert main(["status", "--config", str(config), "--json"]) == EXIT_NOT_RUNNING
        answer = json.loads(capsys.readouterr().out)
        assert answer["running"] is False and answer["state"] is None and "gate-1" in answer["error"]
    finally:
        lock.close()


def test_writer_reports_and_keeps_another_running_gates_file(tmp_path, caplog):
    """A second daemon on the same runtime_dir says so once and never deletes the other's file."""
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    path = tmp_path / "status.json"
    gate_1 = {**SNAPSHOT, "pid": other.pid}
    try:
        write_status(path, gate_1)
        writer = StatusWriter(path)
        gate_2 = {**SNAPSHOT, "device_id": "gate-2"}
        with caplog.at_level("ERROR", logger="firmware.adapters.status_file"):
            assert writer.maybe_write(0.0, lambda: gate_2, "ready")
            assert writer.maybe_write(5.0, lambda: gate_2, "ready")
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "gate-1" in errors[0] and "runtime_dir" in errors[0]
        write_status(path, gate_1)  # gate-1 writes again, then gate-2 stops
        writer.remove()
        assert read_status(path) == gate_1
    finally:
        other.stdin.close()
        other.wait(timeout=10)
    writer.remove()  # gate-1's pid is gone now: a file left behind is removed as before
    assert not path.exists()


# --------------------------------------------------------------------------- the daemon

class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def next(self, timeout_s: float) -> str | None:
        self.sock.settimeout(timeout_s)
        try:
            msg = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append(msg)
        return msg

    def wait_for(self, prefix: str, timeout_s: float) -> list[str]:
        """Messages received until one starts with prefix (fails after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next(left)
            if msg is None:
                break
            seen.append(msg)
            if msg.startswith(prefix):
                return seen
        raise AssertionError(f"no {prefix!r} within {timeout_s} s; got {seen}")


@pytest.fixture
def daemon_site(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        write_blank_png(images / f"blank{i}.png", seed=i)
    (tmp_path / "issuers").mkdir()
    # 2 images x 40 frames at 20 fps: about 4 s of frames, then the camera stops
    config = write_config(tmp_path, device={"id": "status-gate", "venue_id": "v-status"},
                          camera={"fps": 20, "frames_per_image": 40, "max_frame_age_s": 1.0},
                          gpio={"relay_active_high": True})
    return tmp_path, config


def test_status_and_systemd_notify_against_a_running_daemon(daemon_site):
    tmp_path, config = daemon_site
    notify = NotifySocket(tmp_path / "notify.sock")
    # JOURNAL_STREAM, as under systemd: the daemon logs at INFO, so every state change is in its log
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000",
           "JOURNAL_STREAM": "8:12345"}
    pin_log = tmp_path / "pins.json"
    daemon_log = tmp_path / "daemon.log"
    started = time.monotonic()
    with open(daemon_log, "w") as log_file:  # a file, not a pipe nobody reads: the daemon never blocks on it
        proc = start_gate(config, "--pin-log", str(pin_log), env=env, stdout=subprocess.PIPE,
                          stderr=log_file, text=True)
    try:
        first = notify.wait_for("READY=1", 30.0)
        ready_at = time.monotonic()
        assert first[-1].startswith("READY=1\nSTATUS=ready")
        assert notify.wait_for("WATCHDOG=1", 2.0)[-1] == "WATCHDOG=1"

        ready = qrgate("status", "--config", str(config))
        assert ready.returncode == EXIT_READY, ready.stdout + ready.stderr
        assert ready.stdout.splitlines()[0].split() == ["state", "ready"]
        # the file is rewritten about every second: probe (with a deadline) until it shows frames
        deadline = time.monotonic() + 10.0
        while (read_status(tmp_path / "run" / "status.json") or {}).get("camera", {}).get("frames", 0) < 10:
            assert time.monotonic() < deadline, "the status file never showed frames"
            time.sleep(0.05)
        as_json = json.loads(qrgate("status", "--config", str(config), "--json").stdout)
        assert (as_json["running"], as_json["device_id"], as_json["venue_id"]) == (True, "status-gate", "v-status")
        assert as_json["camera"]["fps"] > 5 and as_json["pid"] == proc.pid

        # frames stop when the replay ends: STATUS says camera_fault, and no WATCHDOG after it
        before_fault = notify.wait_for("STATUS=camera_fault", 15.0)
        fault_at = time.monotonic()
        assert "WATCHDOG=1" in before_fault
        assert notify.next(1.5) is None  # well over the 0.2 s ping interval: nothing is sent
        proc.send_signal(signal.SIGHUP)  # systemctl reload: handled, the daemon keeps running
        fault = qrgate("status", "--config", str(config), "--json")
        assert fault.returncode == EXIT_NOT_READY
        assert json.loads(fault.stdout)["state"] == "camera_fault"

        proc.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING=1", 10.0)[-1] == "STOPPING=1"
        assert proc.wait(timeout=20) == 0
        ended_at = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        notify.sock.close()
        proc.stdout.close()
    gone = qrgate("status", "--config", str(config))
    assert gone.returncode == EXIT_NOT_RUNNING
    # the gate stayed closed throughout: the relay was never energised
    pins = json.loads(pin_log.read_text())
    assert pins["GPIO17"] == [False]
    # the whole sequence of device states, each played on the LED by the tick that reached it
    # (the LED's own record is checked in-process in test_device_monitor.py): booting
    # (shown at build), ready, camera_fault; nothing else
    changes = re.findall(r"device state (\w+) -> (\w+)", daemon_log.read_text())
    assert changes == [("booting", "ready"), ("ready", "camera_fault")], daemon_log.read_text()
    told = [m.split("STATUS=", 1)[1].split(";")[0] for m in notify.messages if "STATUS=" in m]
    assert told == ["ready", "ready", "camera_fault"]  # the change, then READY=1 repeats it
    # the whole LED history: dark, then whole blinks, dark at the end. Its length is bounded by
    # the codes played over the measured phases (booting at most until READY=1, ready until
    # STATUS=camera_fault, camera_fault until exit), one extra "on" per phase for the cut cycle.
    # Below: 2 ready blips (ready lasts over 4 s: 80 frames at 20 fps, then 1 s of no frames) and
    # 3 fault flashes in the quiet 1.5 s, each phase's first "on" possibly merged with the last.
    levels = pins["GPIO24"]
    blinks = (len(levels) - 1) // 2
    assert levels == [False] + [True, False] * blinks, levels
    most = (_most_blinks(DeviceState.BOOTING, ready_at - started) + _most_blinks(DeviceState.READY, fault_at - ready_at)
            + _most_blinks(DeviceState.CAMERA_FAULT, ended_at - fault_at))
    assert 4 <= blinks <= most, (blinks, most)


def _most_blinks(state: DeviceState, seconds: float) -> int:
    """The most separate "on"s a state's code can make in seconds (a cycle started counts whole)."""
    code = BLINK_CODES[state]
    return math.ceil(seconds / (sum(code) * UNIT_S)) * (len(code) // 2) + 1


def test_status_says_not_running_after_the_daemon_is_killed(daemon_site):
    tmp_path, config = daemon_site
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    proc = start_gate(config, env=env)
    try:
        notify.wait_for("READY=1", 30.0)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        notify.sock.close()
    assert (tmp_path / "run" / "status.json").exists()  # left behind by kill -9
    stale = qrgate("status", "--config", str(config))
    assert stale.returncode == EXIT_NOT_RUNNING
    assert "NOT running" in stale.stdout
