"""MqttLink and OutboxPublisher against a real Mosquitto on a loopback port."""

from __future__ import annotations

import json
import queue
import threading

import pytest

from firmware.adapters.mqtt_link import MqttLink, MqttSettings, release_paho_sockets
from firmware.adapters.outbox import SqliteOutbox
from firmware.adapters.publisher import OutboxPublisher, StateReporter
from firmware.alarms import Alarms
from tests.mqtt_support import Collector, scans_with_seqs
from tests.test_outbox import scan_event

pytestmark = pytest.mark.broker


def make_link(broker, prefix: str, protocol: str = "5", inflight_max: int = 20) -> MqttLink:
    settings = MqttSettings(device_id="gate-1", host=broker.host, port=broker.port, protocol=protocol,
                            prefix=prefix, keepalive_s=10, inflight_max=inflight_max)
    return MqttLink(settings, reconnect_min_s=0.1, reconnect_max_s=0.5)


@pytest.fixture
def running(tmp_path, shared_broker, topic_prefix):
    """An outbox, a link and a publisher on the shared broker, plus a collector; stopped after."""
    started: list = []

    def start(protocol: str = "5", inflight_max: int = 20, broker=shared_broker):
        outbox = SqliteOutbox(tmp_path / "outbox.sqlite")
        link = make_link(broker, topic_prefix, protocol, inflight_max)
        alarms = Alarms()
        publisher = OutboxPublisher(outbox, link, inflight_max=inflight_max, alarms=alarms)
        collector = Collector(broker.host, broker.port, f"{topic_prefix}/#")
        started.append((outbox, link, publisher, collector))
        return outbox, link, publisher, collector

    yield start
    for outbox, link, publisher, collector in started:
        publisher.stop()
        link.stop(timeout_s=1.0)
        collector.close()
        outbox.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_backlog_drains_in_seq_order_with_bounded_inflight_and_rows_marked_sent(running, protocol):
    outbox, link, publisher, collector = running(protocol=protocol, inflight_max=20)
    stored = [outbox.append(scan_event()) for _ in range(300)]
    publisher.start()
    link.start()
    assert publisher.wait_drained(30.0), f"{outbox.unsent} unsent"
    assert collector.wait_until(scans_with_seqs(set(range(1, 301))), 10.0)
    scans = collector.scans()
    assert [s["seq"] for s in scans] == list(range(1, 301))
    assert scans == [e.to_json_dict() for e in stored]
    assert outbox.pending(0, 10) == []
    assert publisher.max_inflight_seen <= 20
    assert all(not m.retain for m in collector.on("scan"))


def test_availability_online_on_connect_and_offline_on_clean_stop(running, shared_broker, topic_prefix):
    outbox, link, publisher, collector = running()
    link.start()
    assert collector.wait_until(lambda ms: any(m.payload == b"online" for m in ms), 10.0)
    link.stop(timeout_s=2.0)
    assert collector.wait_until(lambda ms: [m.payload for m in ms if m.topic.endswith("/availability")][-1:]
                                == [b"offline"], 10.0)
    late = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/availability")
    try:
        assert late.wait_until(lambda ms: len(ms) >= 1, 5.0)
        assert [(m.payload, m.retain) for m in late.messages] == [(b"offline", True)]
    finally:
        late.close()


def test_subscribers_get_payload_and_v5_properties_on_a_worker_thread_and_again_after_reconnect(
        broker, topic_prefix):
    link = make_link(broker, topic_prefix)
    got: queue.Queue = queue.Queue()
    link.subscribe("cmd/#", lambda topic, payload, retained, props: got.put(
        (topic, payload, retained, props.get("MessageExpiryInterval"), threading.current_thread().name)))
    connects: queue.Queue = queue.Queue()
    link.add_on_connect(lambda: connects.put(threading.current_thread().name))
    sender = make_link(broker, topic_prefix + "x")
    try:
        link.start()
        assert connects.get(timeout=10) == "qrgate-mqtt"
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        raw = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        raw.connect(broker.host, broker.port)
        raw.loop_start()
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 10
        raw.publish(f"{topic_prefix}/gate-1/cmd/open", b"PRESS", qos=1, properties=props).wait_for_publish(5)
        assert got.get(timeout=10) == (f"{topic_prefix}/gate-1/cmd/open", b"PRESS", False, 10, "qrgate-mqtt")
        raw.disconnect()
        raw.loop_stop()
        release_paho_sockets(raw)
        broker.stop()
        broker.start()
        assert connects.get(timeout=15) == "qrgate-mqtt"
        assert link.connects == 2
        raw = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        raw.connect(broker.host, broker.port)
        raw.loop_start()
        raw.publish(f"{topic_prefix}/gate-1/cmd/mode", b"lockdown", qos=1).wait_for_publish(5)
        assert got.get(timeout=10)[:2] == (f"{topic_prefix}/gate-1/cmd/mode", b"lockdown")
        raw.disconnect()
        raw.loop_stop()
        release_paho_sockets(raw)
    finally:
        link.stop(timeout_s=1.0)
        sender.stop()


def test_publish_returns_false_at_once_while_disconnected_and_first_failed_connect_is_retried(
        broker, topic_prefix):
    broker.stop()
    link = make_link(broker, topic_prefix)
    connected: queue.Queue = queue.Queue()
    link.add_on_connect(lambda: connected.put(True))
    try:
        link.start()
        assert link.publish("state", "{}", retain=True) is False
        broker.start()
        assert connected.get(timeout=15) is True
        assert link.is_connected()
    finally:
        link.stop(timeout_s=1.0)


class Fields:
    """A status source computed by a function."""

    def __init__(self, compute) -> None:
        self.compute = compute

    def status_fields(self) -> dict:
        return self.compute()


def test_retained_state_is_the_union_of_providers_and_follows_changes(running, shared_broker, topic_prefix):
    outbox, link, publisher, collector = running()
    counter = {"scans": 0}
    providers = [Fields(lambda: {"mode": "normal", "version": "t"}), Fields(lambda: dict(counter))]
    publisher.state = StateReporter(link, providers, interval_s=3600.0)
    publisher.start()
    link.start()
    assert collector.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/state")]) >= 1, 10.0)
    counter["scans"] = 7
    publisher.wake()
    assert collector.wait_until(lambda ms: any(m.topic.endswith("/state")
                                               and json.loads(m.payload)["scans"] == 7 for m in ms), 10.0)
    docs = [m.json() for m in collector.on("state")]
    assert [{k: v for k, v in d.items() if k != "ts"} for d in docs] == [
        {"mode": "normal", "version": "t", "scans": 0}, {"mode": "normal", "version": "t", "scans": 7}]
    late = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/state")
    try:
        assert late.wait_until(lambda ms: len(ms) >= 1, 5.0)
        assert [(m.json()["scans"], m.retain) for m in late.messages] == [(7, True)]
    finally:
        late.close()


def test_acl_refusal_keeps_events_unsent_with_alarm_until_the_acl_allows_them(tmp_path, broker, topic_prefix):
    """Fault c: a v5 PUBACK 0x87 is a failure; nothing is marked sent by assumption."""
    base = f"{topic_prefix}/gate-1"
    # persistence: the collector's session (its subscription, and what is queued for it) outlives
    # the restart that changes the ACL, so nothing the gate publishes after it can be missed
    broker.extra_conf = f"persistence true\npersistence_location {broker.workdir}/\n"
    broker.reload_acl(f"topic readwrite {base}/availability\ntopic readwrite {base}/state\n"
                      f"topic read {topic_prefix}/#\n")
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite")
    link = make_link(broker, topic_prefix)
    alarms = Alarms()
    publisher = OutboxPublisher(outbox, link, inflight_max=20, alarms=alarms)
    raised = threading.Event()
    original_set = alarms.set

    def watch(name, text):
        original_set(name, text)
        if name == "publish_refused" and text:
            raised.set()
    alarms.set = watch
    collector = Collector(broker.host, broker.port, f"{topic_prefix}/#", client_id=f"acl-{topic_prefix}"[:60],
                          persistent=True)
    try:
        for _ in range(50):
            outbox.append(scan_event())
        publisher.start()
        link.start()
        assert raised.wait(10.0), "no publish_refused alarm"
        assert "0x87" in alarms.active()["publish_refused"]
        assert outbox.unsent == 50
        assert collector.scans() == []
        # a new collector made after the restart could subscribe after the gate, reconnected by
        # then, had published the events again: keep this one (it reconnects to its session)
        broker.reload_acl(None)
        assert publisher.wait_drained(30.0), f"{outbox.unsent} unsent after the ACL allowed them"
        assert collector.wait_until(scans_with_seqs(set(range(1, 51))), 10.0)
        assert "publish_refused" not in alarms.active()
        assert publisher.refused >= 1
    finally:
        publisher.stop()
        link.stop(timeout_s=1.0)
        collector.close()
        outbox.close()


def test_username_and_password_file_from_config_authenticate_and_a_wrong_password_is_refused(
        broker, tmp_path, topic_prefix):
    import subprocess

    from firmware.core.config import parse_config

    passwd = tmp_path / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gate-1", "s3cret"], check=True,
                   capture_output=True)
    broker.extra_conf = f"allow_anonymous false\npassword_file {passwd}\n"
    broker.stop()
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    wrong = tmp_path / "wrong-password"
    wrong.write_text("guess\n")

    def settings(password_file):
        cfg = parse_config({"device": {"id": "gate-1"},
                            "mqtt": {"host": broker.host, "port": broker.port, "prefix": topic_prefix,
                                     "username": "gate-1", "password_file": str(password_file)}})
        return MqttSettings.from_config(cfg)

    assert (settings(secret).username, settings(secret).password) == ("gate-1", "s3cret")
    good = MqttLink(settings(secret), reconnect_min_s=0.2, reconnect_max_s=0.5)
    bad = MqttLink(settings(wrong), reconnect_min_s=0.2, reconnect_max_s=0.5)
    try:
        good.start()
        bad.start()
        assert good.wait_connected(10.0)
        assert not bad.wait_connected(2.0)
    finally:
        good.stop(timeout_s=1.0)
        bad.stop(timeout_s=1.0)
    assert bad.last_error in ("Not authorized", "Bad user name or password")


def test_a_large_offline_backlog_drains_with_about_inflight_max_in_flight_and_no_queue_errors(
        tmp_path, shared_broker, topic_prefix):
    """D8 (70,000 with QRGATE_FULL_FAULTS=1): the backlog stays on disk, paho never sees more
    than the window."""
    from firmware.bench.outbox import fill_backlog
    from tests.fault_support import FULL

    count = 70_000 if FULL else 20_000
    fill_backlog(tmp_path / "outbox.sqlite", count)
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", max_events=count + 10)
    link = make_link(shared_broker, topic_prefix, inflight_max=100)
    publisher = OutboxPublisher(outbox, link, inflight_max=100)
    try:
        publisher.start()
        link.start()
        assert publisher.wait_drained(120.0), f"{outbox.unsent} of {count} unsent"
    finally:
        publisher.stop()
        link.stop(timeout_s=1.0)
        outbox.close()
    assert publisher.sent == count
    assert publisher.max_inflight_seen == 100
    assert publisher.queue_refusals == 0


def test_on_mqtt_3_1_1_an_acl_refusal_looks_like_success_which_is_why_5_is_the_default(
        tmp_path, broker, topic_prefix):
    """Documents Mosquitto's behaviour: a 3.1.1 client cannot see the refusal (README)."""
    base = f"{topic_prefix}/gate-1"
    broker.reload_acl(f"topic readwrite {base}/availability\ntopic read {topic_prefix}/#\n")
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite")
    link = make_link(broker, topic_prefix, protocol="3.1.1")
    publisher = OutboxPublisher(outbox, link, inflight_max=20)
    collector = Collector(broker.host, broker.port, f"{topic_prefix}/#")
    try:
        for _ in range(5):
            outbox.append(scan_event())
        publisher.start()
        link.start()
        assert publisher.wait_drained(10.0)
        assert collector.wait_until(lambda ms: any(m.payload == b"online" for m in ms), 5.0)
    finally:
        publisher.stop()
        link.stop(timeout_s=1.0)
        collector.close()
        outbox.close()
    assert collector.scans() == []
    assert publisher.refused == 0


def test_wait_ready_returns_only_after_the_subscriptions_and_hooks_so_a_message_sent_then_arrives(
        shared_broker, topic_prefix):
    """wait_connected returns at CONNACK, before the SUBSCRIBE is confirmed; a command sent at that
    moment can be dropped by the broker. wait_ready is what a sender must wait for."""
    link = make_link(shared_broker, topic_prefix)
    got: queue.Queue = queue.Queue()
    link.subscribe("cmd/#", lambda topic, payload, retained, props: got.put(payload))
    hook_may_finish = threading.Event()
    link.add_on_connect(lambda: hook_may_finish.wait(10))
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    raw = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    try:
        link.start()
        assert link.wait_connected(10)
        assert not link.wait_ready(0.3)  # the hook still holds the worker
        hook_may_finish.set()
        assert link.wait_ready(10)
        raw.connect(shared_broker.host, shared_broker.port)
        raw.loop_start()
        raw.publish(f"{topic_prefix}/gate-1/cmd/open", b"PRESS", qos=1).wait_for_publish(5)
        assert got.get(timeout=10) == b"PRESS"
    finally:
        hook_may_finish.set()
        raw.disconnect()
        raw.loop_stop()
        release_paho_sockets(raw)
        link.stop(timeout_s=1.0)
    assert not link.wait_ready(0)
