"""Remote commands end to end: `qrgate cmd send` style signing, a real Mosquitto, a built gate on mock pins."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.adapters.outbox import read_events
from firmware.core.device_state import DeviceState
from firmware.core.model import Reason
from provisioning.commands import build_envelope, send_command
from provisioning.mqtt_request import Broker, Target
from tests.conftest import pin_levels
from tests.field_support import build_app, write_site
from tests.mqtt_support import Collector, publish_raw

pytestmark = pytest.mark.broker
RELAY = 17


@pytest.fixture
def gate(tmp_path, shared_broker, topic_prefix):
    config, key = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix)
    factory = MockFactory()
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/#")
    apps = []

    def start():
        app = build_app(config, factory)
        apps.append(app)
        assert app.link.wait_ready(10)
        return app

    target = Target(Broker(shared_broker.host, shared_broker.port), device_id="gate-1", prefix=topic_prefix)

    def send(command: str, args: dict | None = None, **kw):
        envelope, tx = build_envelope(key, device_id="gate-1", command=command, args=args or {}, ttl_s=10,
                                      venue_id="v-1", prefix=topic_prefix, **kw)
        return send_command(target, command, envelope, tx, ttl_s=10, timeout_s=10), envelope, tx

    yield start, send, factory, collector, config, key, target
    for app in apps:
        app.close()
    collector.close()


def test_signed_open_pulses_the_relay_once_and_its_replay_is_refused(gate, shared_broker, topic_prefix):
    start, send, factory, collector, *_ = gate
    app = start()
    answer, envelope, tx = send("open", transaction="t-open-1")
    # the opening is recorded (before the relay moved) and its event goes out like a scan
    [stored] = read_events(app.cfg.state_dir / "outbox.sqlite")
    assert answer == {"status": "ok", "error": None, "detail": None,
                      "data": {"pulse_ms": 100, "event_id": stored["event_id"], "seq": stored["seq"]},
                      "transaction": "t-open-1"}
    assert (stored["decision"], stored["reason"], stored["credential"]) == ("granted", "remote_open", "remote")
    assert stored["subject"].startswith("key:")
    assert collector.wait_until(lambda ms: any(m.topic.endswith("/scan") for m in ms), 10)
    assert collector.on("scan")[0].json()["event_id"] == stored["event_id"]
    assert app.outputs.wait_idle(5.0)
    assert pin_levels(factory.pin(RELAY)) == [False, True, False]
    # the same envelope again, straight onto the topic: refused as a replay, relay untouched
    publish_raw(shared_broker, f"{topic_prefix}/gate-1/cmd/open", envelope)
    assert collector.wait_until(lambda ms: sum(m.topic.endswith("/response/open") for m in ms) == 2, 10)
    replay = collector.on("response/open")[-1]
    assert (replay.retain, replay.json()["error"], replay.json()["transaction"]) == (False, "replayed", "t-open-1")
    assert pin_levels(factory.pin(RELAY)) == [False, True, False]
    # the relay's retained topic followed the pulse
    assert [m.payload for m in collector.on("relay")][-2:] == [b"ON", b"OFF"]


def test_unsigned_and_foreign_commands_are_answered_with_their_reason(gate, shared_broker, topic_prefix):
    start, send, factory, collector, *_ = gate
    start()
    publish_raw(shared_broker, f"{topic_prefix}/gate-1/cmd/open", b"PRESS")
    assert collector.wait_until(lambda ms: any(m.topic.endswith("/response/open") for m in ms), 10)
    assert collector.on("response/open")[0].json()["error"] == "unsigned"
    answer, _, _ = send("mode", {"mode": "lockdown"}, transaction="t-x")
    assert answer["status"] == "ok"
    assert pin_levels(factory.pin(RELAY)) == [False]


def test_a_retained_command_found_at_subscribe_time_is_never_acted_on(gate, shared_broker, topic_prefix):
    start, send, factory, collector, config, key, target = gate
    envelope, tx = build_envelope(key, device_id="gate-1", command="open", args={}, ttl_s=30, transaction="t-ret",
                                 venue_id="v-1", prefix=topic_prefix)
    topic = f"{topic_prefix}/gate-1/cmd/open"
    publish_raw(shared_broker, topic, envelope, retain=True)
    try:
        start()
        assert collector.wait_until(lambda ms: any(m.topic.endswith("/response/open") for m in ms), 10)
        answer = collector.on("response/open")[0].json()
        assert (answer["error"], answer["transaction"]) == ("retained", "t-ret")
        assert pin_levels(factory.pin(RELAY)) == [False]
    finally:
        publish_raw(shared_broker, topic, b"", retain=True)  # clear it


def test_an_open_sent_while_the_gate_was_offline_is_never_delivered(gate, shared_broker, topic_prefix):
    start, send, factory, collector, config, key, target = gate
    app = start()
    app.close()  # the gate goes offline; its clean session leaves nothing queued at the broker
    envelope, _ = build_envelope(key, device_id="gate-1", command="open", args={}, ttl_s=30, transaction="t-queued",
                                 venue_id="v-1", prefix=topic_prefix)
    publish_raw(shared_broker, f"{topic_prefix}/gate-1/cmd/open", envelope)
    start()
    answer, _, _ = send("rebirth", transaction="t-marker")  # processed in order after anything delivered
    assert answer["status"] == "ok"
    assert [m.json()["transaction"] for m in collector.on("response/open")] == []
    assert pin_levels(factory.pin(RELAY)) == [False]


def test_lockdown_denies_scans_refuses_open_survives_a_restart_and_mode_normal_ends_it(gate):
    start, send, factory, collector, *_ = gate
    app = start()
    answer, _, _ = send("mode", {"mode": "lockdown"})
    assert answer["data"] == {"mode": "lockdown", "state": "lockdown"}
    assert app.service.gatekeeper.blocked is Reason.LOCKDOWN
    assert collector.wait_until(lambda ms: any(m.topic.endswith("/state") and m.json().get("device_state")
                                               == "lockdown" for m in ms), 10)
    refused, _, _ = send("open")
    assert (refused["status"], refused["error"]) == ("error", "lockdown")
    app.close()
    again = start()
    assert again.monitor.current_state() is DeviceState.LOCKDOWN
    normal, _, _ = send("mode", {"mode": "normal"})
    assert normal["data"]["mode"] == "normal"
    assert again.monitor.wait_for_state(DeviceState.READY, 5.0)
    assert again.service.gatekeeper.blocked is None
    assert pin_levels(factory.pin(RELAY)) == [False]


def test_a_burst_is_rate_limited_and_the_relay_pulses_only_for_accepted_opens(tmp_path, shared_broker, topic_prefix):
    config, key = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix, commands={"rate_per_min": 3})
    factory = MockFactory()
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/response/#")
    app = build_app(config, factory)
    try:
        assert app.link.wait_ready(10)
        for i in range(20):
            envelope, _ = build_envelope(key, device_id="gate-1", command="open", args={}, ttl_s=10,
                                         transaction=f"t-{i}", venue_id="v-1", prefix=topic_prefix)
            publish_raw(shared_broker, f"{topic_prefix}/gate-1/cmd/open", envelope)
        assert collector.wait_until(lambda ms: len(ms) == 20, 20)
        errors = [m.json()["error"] for m in collector.messages]
        assert errors.count(None) == 3 and errors.count("rate_limited") == 17
        assert app.outputs.wait_idle(5.0)
        levels = pin_levels(factory.pin(RELAY))
        # accepted opens may merge into one longer pulse; never more pulses than accepted commands
        assert levels[0] is False and levels[-1] is False and 1 <= levels.count(True) <= 3
    finally:
        app.close()
        collector.close()


def test_cmd_send_cli_prints_the_answer_and_exits_by_status(gate, shared_broker, topic_prefix, tmp_path):
    start, send, factory, collector, config, key, target = gate
    start()
    base = [sys.executable, "-m", "firmware.cli", "cmd", "send", "--key", str(tmp_path / "ops.pem"), "--broker",
            f"{shared_broker.host}:{shared_broker.port}", "--venue", "v-1", "--device", "gate-1", "--prefix", topic_prefix]
    ok = subprocess.run([*base, "mode", "free"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["data"]["mode"] == "free_passage"
    refused = subprocess.run([*base, "open"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "free_passage"
    other = subprocess.run([*base[:-4], "--device", "gate-9", "--prefix", topic_prefix, "--timeout-s", "1", "open"],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 4 and "no answer from gate-9" in other.stderr
    # without --venue the command is signed for the venue in the gate's retained state
    no_venue = [a for a in base if a not in ("--venue", "v-1")]
    normal = subprocess.run([*no_venue, "mode", "normal"], capture_output=True, text=True, timeout=60)
    assert normal.returncode == 0 and json.loads(normal.stdout)["data"]["mode"] == "normal", normal.stderr
    unknown = subprocess.run([*no_venue[:-4], "--device", "gate-9", "--prefix", topic_prefix, "--timeout-s", "1",
                              "open"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 78 and "give --venue" in unknown.stderr


def test_signed_identify_blinks_green_and_buzzer_twice_and_never_moves_the_relay(gate):
    start, send, factory, collector, *_ = gate
    app = start()
    g = app.cfg.gpio
    answer, _, _ = send("identify", transaction="t-identify")
    assert (answer["status"], answer["error"], answer["transaction"]) == ("ok", None, "t-identify")
    assert answer["data"]["state"] in ("ready", "offline")  # the monitor may not have sampled the link yet
    assert app.outputs.wait_idle(5.0)
    assert pin_levels(factory.pin(g.green_led_pin)) == [False, True, False, True, False]
    assert pin_levels(factory.pin(g.buzzer_pin)) == [False, True, False, True, False]
    assert pin_levels(factory.pin(RELAY)) == [False]  # claimed off (active-high), never energised
