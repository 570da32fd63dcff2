"""`qrgate cmd bridge`: Home Assistant's dashboard presses signed and forwarded, so the gate
still acts only on signed commands. Real Mosquitto, a built gate on mock pins, the bridge as
a child process."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.adapters.outbox import read_events
from firmware.core.cose import kid_for
from firmware.core.device_state import DeviceState
from provisioning.commands import DashboardPress, read_dashboard_press
from tests.conftest import pin_levels
from tests.field_support import build_app, write_site
from tests.mqtt_support import Collector, publish_raw

RELAY = 17
WAIT_S = 20.0


@pytest.mark.parametrize("topic, payload, retained, want", [
    ("qrgate/gate-1/dashboard/open", b"PRESS", False, DashboardPress("gate-1", "open", {})),
    ("qrgate/gate-1/dashboard/mode", b" lockdown\n", False, DashboardPress("gate-1", "mode", {"mode": "lockdown"})),
    ("qrgate/gate-1/dashboard/open", b"PRESS", True, "retained"),
    ("qrgate/gate-1/dashboard/open", b"OPEN", False, "expects the payload PRESS"),
    ("qrgate/gate-1/dashboard/open", b"PRESS" * 20, False, "expects the payload PRESS"),
    ("qrgate/gate-1/dashboard/mode", b"sideways", False, "is not normal, lockdown or free_passage"),
    ("qrgate/gate-1/dashboard/reload", b"PRESS", False, "'reload' is not forwarded"),
    ("qrgate/Gate 1/dashboard/open", b"PRESS", False, "is not a device id"),
    ("qrgate/gate-1/cmd/open", b"PRESS", False, "not a dashboard topic"),
    ("other/gate-1/dashboard/open", b"PRESS", False, "not a dashboard topic"),
    ("qrgate/gate-2/dashboard/open", b"PRESS", False, "gate 'gate-2' is not bridged"),
])
def test_a_dashboard_message_becomes_a_press_or_a_reason(topic, payload, retained, want):
    got = read_dashboard_press("qrgate", topic, payload, retained, ("open", "mode"), ("gate-1",))
    if isinstance(want, DashboardPress):
        assert got == want
    else:
        assert isinstance(got, str) and want in got


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


class Bridge:
    """`qrgate cmd bridge` as a child process, its log lines on a queue."""

    def __init__(self, tmp_path, broker, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware.cli", "-v", "cmd", "bridge", "--key", str(tmp_path / "ops.pem"),
             "--broker", f"{broker.host}:{broker.port}", "--prefix", prefix, "--gate", "gate-1", "--venue", "v-1"],
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=_reader, args=(self.proc.stderr, self.lines), daemon=True).start()

    def wait_for(self, needle: str) -> str:
        while True:
            line = self.lines.get(timeout=WAIT_S)
            assert line is not None, "the bridge exited:\n" + "".join(self.seen)
            self.seen.append(line)
            if needle in line:
                return line

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=WAIT_S) == 0, "".join(self.seen)
        while (line := self.lines.get(timeout=WAIT_S)) is not None:
            self.seen.append(line)
        self.proc.stderr.close()
        return "".join(self.seen)


@pytest.mark.broker
def test_dashboard_presses_reach_the_gate_signed_and_a_retained_one_is_not_forwarded_again(
        tmp_path, shared_broker, topic_prefix):
    config, key = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix, mqtt={"discovery_bridge": True})
    factory = MockFactory()
    base = f"{topic_prefix}/gate-1"
    answers = Collector(shared_broker.host, shared_broker.port, f"{base}/response/#")
    discovery = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}_ha/device/gate-1/config")
    app = build_app(config, factory)
    bridge = Bridge(tmp_path, shared_broker, topic_prefix)
    try:
        assert app.link.wait_ready(10)
        assert discovery.wait_until(lambda ms: len(ms) >= 1, WAIT_S)
        cmps = discovery.messages[-1].json()["cmps"]
        assert (cmps["open"]["command_topic"], cmps["mode"]["command_topic"]) == (
            f"{base}/dashboard/open", f"{base}/dashboard/mode")
        bridge.wait_for("bridge ready")
        # issue 10: a gate the bridge was not configured for gets nothing signed
        other_cmds = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-2/cmd/#")
        publish_raw(shared_broker, f"{topic_prefix}/gate-2/dashboard/open", b"PRESS")
        assert "not bridged" in bridge.wait_for("ignored a message on")
        assert other_cmds.messages == []
        other_cmds.close()
        publish_raw(shared_broker, f"{base}/dashboard/open", b"PRESS")
        assert answers.wait_until(lambda ms: len(ms) >= 1, WAIT_S)
        opened = answers.messages[0].json()
        assert (opened["status"], opened["transaction"][:7]) == ("ok", "bridge-")
        [stored] = [e for e in read_events(app.cfg.state_dir / "outbox.sqlite") if e["reason"] == "remote_open"]
        assert stored["subject"] == f"key:{kid_for(key.public_key()).hex()}"  # signed by the bridge's key
        assert app.outputs.wait_idle(5.0)
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
        # a press left retained is forwarded once, live, and never again when the bridge reconnects
        publish_raw(shared_broker, f"{base}/dashboard/mode", b"lockdown", retain=True)
        assert answers.wait_until(lambda ms: len(ms) >= 2, WAIT_S)
        assert answers.messages[1].json()["data"] == {"mode": "lockdown", "state": "lockdown"}
        assert app.monitor.wait_for_state(DeviceState.LOCKDOWN, 5.0)
        bridge.stop()
        bridge = Bridge(tmp_path, shared_broker, topic_prefix)
        assert "retained" in bridge.wait_for("ignored a message on")
        publish_raw(shared_broker, f"{base}/dashboard/open", b"PRESS")  # refused by the gate: lockdown
        assert answers.wait_until(lambda ms: len(ms) >= 3, WAIT_S)
        assert [(m.topic.rsplit("/", 1)[-1], m.json()["error"]) for m in answers.messages] == [
            ("open", None), ("mode", None), ("open", "lockdown")]
        assert pin_levels(factory.pin(RELAY)) == [False, True, False]
        assert "bridge stopped: 1 forwarded, 1 ignored" in bridge.stop()
    finally:
        publish_raw(shared_broker, f"{base}/dashboard/mode", b"", retain=True)
        if bridge.proc.poll() is None:
            bridge.proc.kill()
            bridge.proc.wait()
        app.close()
        answers.close()
        discovery.close()
