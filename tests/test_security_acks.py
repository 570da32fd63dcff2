"""Issue 10, attacks 1 and 5 against the gate: a forged ``ack`` never makes the gate drop a row
it has not published, and a flood of hostile acks never stalls publishing. Real Mosquitto."""

from __future__ import annotations

import json
import sqlite3
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import release_paho_sockets
from firmware.adapters.outbox import SqliteOutbox
from tests.mqtt_support import Collector
from tests.test_app_ack import WAIT_S, Gate
from tests.test_outbox import scan_event

pytestmark = pytest.mark.broker


def publish(broker, topic: str, payloads: list[bytes], retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            info = client.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(timeout=WAIT_S)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
        release_paho_sockets(client)


def sent_states(path) -> dict[int, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT seq, sent FROM events ORDER BY seq").fetchall())
    finally:
        conn.close()


def test_attack1_forged_retained_ack_never_marks_rows_the_gate_never_published(tmp_path, broker, topic_prefix):
    """Seq 11-13 are granted while the broker is away; a retained ack through 13 is forged.
    On reconnect the gate ignores it (it has published only up to 10) and publishes 11-13."""
    scans = Collector(broker.host, broker.port, f"{topic_prefix}/gate-1/scan")
    gate = Gate(tmp_path, broker, topic_prefix, timeout_s=300.0)
    try:
        for _ in range(10):
            gate.outbox.append(scan_event())
        gate.start()
        gate.wait(lambda: gate.outbox.unpublished == 0, "had seq 1-10 PUBACKed")
        gate.publisher.stop()
        gate.link.stop(timeout_s=1.0)
        for _ in range(3):
            gate.outbox.append(scan_event())  # the broker is "away": 11-13 never published
        forged = json.dumps({"device_id": "gate-1", "acked_through": 13}).encode()
        publish(broker, f"{topic_prefix}/gate-1/ack", [forged], retain=True)
        outbox = gate.outbox
        gate = Gate.__new__(Gate)  # the same outbox, a new connection (the gate came back)
        from firmware.adapters.mqtt_link import MqttLink, MqttSettings
        from firmware.adapters.publisher import OutboxPublisher

        gate.outbox = outbox
        gate.link = MqttLink(MqttSettings(device_id="gate-1", host=broker.host, port=broker.port,
                                          prefix=topic_prefix, keepalive_s=10, inflight_max=20),
                             reconnect_min_s=0.1, reconnect_max_s=0.5)
        gate.publisher = OutboxPublisher(outbox, gate.link, inflight_max=20, app_ack_timeout_s=300.0)
        gate.start()
        gate.wait(lambda: gate.publisher.acks_ignored >= 1, "refused the forged ack")
        assert scans.wait_until(lambda ms: {m.json()["seq"] for m in ms} >= set(range(1, 14)), WAIT_S), \
            "seq 11-13 were never published: the forged ack erased them"
        gate.wait(lambda: outbox.unpublished == 0, "had seq 11-13 PUBACKed")
        assert all(state == 2 for state in sent_states(tmp_path / "outbox.sqlite").values())
        assert gate.publisher.acked_through == 0
    finally:
        scans.client.loop_stop()
        gate.close()


def test_attack1_mark_acked_never_touches_a_row_that_was_not_published(tmp_path):
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", app_ack=True)
    try:
        for _ in range(5):
            outbox.append(scan_event())
        outbox.mark_sent([1, 2])
        assert outbox.published_high == 2
        assert outbox.mark_acked(5) == 2
        assert sent_states(tmp_path / "outbox.sqlite") == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0}
        assert outbox.stats().unsent == 3
    finally:
        outbox.close()
    reopened = SqliteOutbox(tmp_path / "outbox.sqlite", app_ack=True)
    try:
        assert reopened.published_high == 2  # kept in meta across restarts
    finally:
        reopened.close()


def test_attack5_ack_flood_with_deep_nesting_never_stalls_publishing(tmp_path, broker, topic_prefix):
    """2,000 hostile acks (``"[" * 5000`` and others) while 40 scans are published: every scan
    gets its PUBACK within seconds (before: a RecursionError threw away the PUBACKs of the
    turn, and the events waited 60 s for the stale timer)."""
    gate = Gate(tmp_path, broker, topic_prefix, timeout_s=300.0)
    hostile = [b"[" * 5000, b"{" * 100_000, b'{"acked_through": NaN, "device_id": "gate-1"}',
               b'{"acked_through": 1' + b"0" * 5000 + b', "device_id": "gate-1"}', b"\xff\xfe", b""]
    flood_done = threading.Event()

    def flood() -> None:
        try:
            publish(broker, f"{topic_prefix}/gate-1/ack", [hostile[i % len(hostile)] for i in range(2000)])
        finally:
            flood_done.set()

    try:
        gate.start()
        assert gate.link.wait_ready(WAIT_S)
        sender = threading.Thread(target=flood, name="ack-flood")
        sender.start()
        for _ in range(40):
            gate.outbox.append(scan_event())
            gate.publisher.wake()
        assert flood_done.wait(WAIT_S)
        sender.join(WAIT_S)
        gate.wait(lambda: gate.outbox.unpublished == 0, "had all 40 scans PUBACKed during the flood")
        gate.wait(lambda: gate.publisher.acks_ignored >= 2000, "refused all 2,000 hostile acks")
        assert gate.publisher.acks_ignored == 2000
    finally:
        gate.close()
