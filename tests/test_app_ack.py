"""Application-level acks (mqtt.app_ack): the history collector acknowledges what it stored on
the retained ``<prefix>/<device_id>/ack``; the gate keeps rows until then and publishes again
what is not acknowledged in time. Real Mosquitto; the D5 case kills it with SIGKILL."""

from __future__ import annotations

import json
import sqlite3
import threading
from functools import partial

import paho.mqtt.client as paho
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import MqttLink, MqttSettings, release_paho_sockets
from firmware.adapters.outbox import SqliteOutbox
from firmware.adapters.publisher import OutboxPublisher
from firmware.app.builder import GateApp
from firmware.core.config import parse_config
from firmware.core.event_signature import public_key_text, seal
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.mqtt_support import Collector
from tests.signing_support import device_key
from tests.test_history_collector import RunningCollector, settings
from tests.test_outbox import scan_event
from tests.test_outbox_app import site

WAIT_S = 20.0
YEAR_S = 365 * 86400.0


class Gate:
    """An outbox, a link and a publisher for device gate-1 (app_ack on unless timeout_s is None)."""

    def __init__(self, tmp_path, broker, prefix: str, timeout_s: float | None) -> None:
        self.outbox = SqliteOutbox(tmp_path / "outbox.sqlite", app_ack=timeout_s is not None)
        self.link = MqttLink(MqttSettings(device_id="gate-1", host=broker.host, port=broker.port, prefix=prefix,
                                          keepalive_s=10, inflight_max=20),
                             reconnect_min_s=0.1, reconnect_max_s=0.5)
        self.publisher = OutboxPublisher(self.outbox, self.link, inflight_max=20, app_ack_timeout_s=timeout_s,
                                         seal=partial(seal, key=device_key("gate-1")))

    def start(self) -> None:
        self.publisher.start()
        self.link.start()

    def wait(self, predicate, what: str) -> None:
        assert self.publisher.wait_until(predicate, WAIT_S), f"gate never {what}: {self.outbox.stats()}"

    def close(self) -> None:
        self.publisher.stop()
        self.link.stop(timeout_s=1.0)
        self.outbox.close()


def send_raw(broker, topic: str, payloads: list[bytes]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for payload in payloads:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=WAIT_S)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
        release_paho_sockets(client)


def stored_seqs(store) -> list[int]:
    return sorted(e.seq for e in store.rows(Filter()))


pytestmark = pytest.mark.broker


def test_collector_acks_make_events_delivered_and_prunable(tmp_path, shared_broker, topic_prefix):
    store = open_store(str(tmp_path / "h.sqlite"))
    collector = RunningCollector(store, settings(shared_broker, topic_prefix))
    gate = Gate(tmp_path, shared_broker, topic_prefix, timeout_s=300.0)
    try:
        for _ in range(30):
            gate.outbox.append(scan_event())
        gate.start()
        assert gate.publisher.wait_drained(WAIT_S), gate.outbox.stats()
        stats = gate.outbox.stats()
        assert (stats.stored, stats.unsent, stats.awaiting_ack, stats.oldest_unsent_s) == (30, 0, 0, None)
        # the rows are marked acknowledged just before the publisher thread records acked_through
        gate.wait(lambda: gate.publisher.acked_through == 30, "recorded the ack through 30")
        assert stored_seqs(store) == list(range(1, 31))
        assert gate.outbox.prune(gate.outbox._wall() + YEAR_S) == 30
        assert gate.outbox.stats().stored == 0
        late = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/ack")
        try:
            assert late.wait_until(lambda ms: len(ms) >= 1, WAIT_S)
            ack = late.messages[0]
            assert ack.retain and ack.json()["device_id"] == "gate-1" and ack.json()["acked_through"] == 30
            assert sorted(ack.json()) == ["acked_through", "device_id", "ts"]
        finally:
            late.close()
    finally:
        gate.close()
        collector.close()
        store.close()


@pytest.mark.parametrize("app_ack", [True, False], ids=["app_ack_on", "app_ack_off_loses_events"])
def test_d5_broker_sigkill_before_the_consumer_got_the_events(tmp_path, broker, topic_prefix, app_ack):
    """Events PUBACKed and queued for the collector's session die with a SIGKILLed broker
    (persistence off). With app_ack the gate publishes them again; without, they are lost."""
    store = open_store(str(tmp_path / "h.sqlite"))
    RunningCollector(store, settings(broker, topic_prefix)).close()  # its session now queues events
    gate = Gate(tmp_path, broker, topic_prefix, timeout_s=2.0 if app_ack else None)
    collector = None
    try:
        for _ in range(10):
            gate.outbox.append(scan_event())
        gate.start()
        gate.wait(lambda: gate.outbox.unpublished == 0, "had every event PUBACKed")
        assert gate.outbox.stats().awaiting_ack == (10 if app_ack else 0)
        broker.kill()
        broker.start()
        collector = RunningCollector(store, settings(broker, topic_prefix))
        if app_ack:
            collector.wait(lambda st: st.stored >= 10, "stored the events published again")
            assert gate.publisher.wait_drained(WAIT_S), gate.outbox.stats()
            assert stored_seqs(store) == list(range(1, 11))
            assert gate.publisher.republished_unacked >= 1
        else:
            assert gate.outbox.unsent == 0  # the gate believes all 10 were delivered
            gate.outbox.append(scan_event())
            gate.publisher.wake()
            collector.wait(lambda st: st.stored >= 1, "stored the event after the restart")
            assert stored_seqs(store) == [11]  # seq 1..10 were lost at the broker
    finally:
        if collector is not None:
            collector.close()
        gate.close()
        store.close()


def test_malformed_foreign_backward_and_future_acks_are_ignored(tmp_path, shared_broker, topic_prefix):
    gate = Gate(tmp_path, shared_broker, topic_prefix, timeout_s=300.0)
    try:
        for _ in range(5):
            gate.outbox.append(scan_event())
        gate.start()
        gate.wait(lambda: gate.outbox.stats().awaiting_ack == 5, "had 5 events awaiting the ack")
        # PUBACKs can come before the SUBACK of the ack subscription (the publisher feeds from
        # CONNACK on): an ack sent before wait_ready could be dropped by the broker
        assert gate.link.wait_ready(WAIT_S)
        ack = lambda **doc: json.dumps(doc).encode()  # noqa: E731
        send_raw(shared_broker, f"{topic_prefix}/gate-1/ack", [
            b"not json", b"[5]", ack(acked_through=5),
            ack(device_id="gate-2", acked_through=5),
            ack(device_id="gate-1", acked_through="5"),
            ack(device_id="gate-1", acked_through=True),
            ack(device_id="gate-1", acked_through=-1),
            ack(device_id="gate-1", acked_through=99),   # above any seq this outbox assigned
            ack(device_id="gate-1", acked_through=2),
            ack(device_id="gate-1", acked_through=1),    # backwards
            ack(device_id="gate-1", acked_through=3),
        ])
        gate.wait(lambda: gate.publisher.acked_through == 3, "applied the ack through 3")
        assert gate.publisher.acks_ignored == 8
        stats = gate.outbox.stats()
        assert (stats.stored, stats.unsent, stats.awaiting_ack) == (5, 2, 2)
        assert gate.outbox.prune(gate.outbox._wall() + YEAR_S) == 3  # only acknowledged rows
        conn = sqlite3.connect(tmp_path / "outbox.sqlite")
        try:
            assert conn.execute("SELECT seq, sent FROM events ORDER BY seq").fetchall() == [(4, 2), (5, 2)]
        finally:
            conn.close()
    finally:
        gate.close()


def test_an_outbox_file_from_before_app_ack_opens_with_its_rows_as_they_were(tmp_path):
    path = tmp_path / "outbox.sqlite"
    old = SqliteOutbox(path)
    for _ in range(4):
        old.append(scan_event())
    old.mark_sent([1, 2])
    old.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX events_awaiting")  # back to the schema before app_ack
    conn.execute("DROP INDEX events_awaiting_age")
    conn.execute("ALTER TABLE events DROP COLUMN published_s")
    conn.commit()
    conn.close()
    outbox = SqliteOutbox(path, app_ack=True)
    try:
        stats = outbox.stats()
        assert (stats.stored, stats.unsent, stats.awaiting_ack) == (4, 2, 0)
        assert outbox.mark_sent([3]) == 1
        assert (outbox.stats().unsent, outbox.stats().awaiting_ack) == (2, 1)
        assert outbox.requeue_unacked(outbox._wall() + 1.0) == 3
        assert [seq for seq, _ in outbox.pending()] == [3, 4]
        assert outbox.mark_acked(4) == 1  # seq 4 was never published: the ack cannot cover it
        assert (outbox.stats().unsent, outbox.stats().awaiting_ack) == (1, 0)
    finally:
        outbox.close()


def test_turning_app_ack_off_counts_rows_awaiting_the_ack_as_delivered(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = SqliteOutbox(path, app_ack=True)
    for _ in range(3):
        outbox.append(scan_event())
    outbox.mark_sent([1, 2])
    assert (outbox.stats().unsent, outbox.stats().awaiting_ack) == (3, 2)
    outbox.close()
    outbox = SqliteOutbox(path)
    try:
        assert (outbox.stats().unsent, outbox.stats().awaiting_ack, outbox.stats().stored) == (1, 0, 3)
    finally:
        outbox.close()


def test_gate_app_with_mqtt_app_ack_waits_for_the_collector_ack(tmp_path, shared_broker, topic_prefix):
    base = site(tmp_path)
    cfg = parse_config({
        "device": {"id": "app-gate", "venue_id": "v-1", "state_dir": str(base.state_dir),
                   "runtime_dir": str(tmp_path / "run")},
        "camera": {"source": base.camera.source, "frames_per_image": 1, "as_fast_as_possible": True},
        "gpio": {"pin_factory": "mock", "relay_pulse_ms": 50},
        "keys": {"issuers_dir": str(tmp_path / "issuers")},
        "mqtt": {"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix,
                 "discovery": False, "app_ack": True, "app_ack_timeout_s": 60},
    }, str(tmp_path / "qrgate.toml"))
    store = open_store(str(tmp_path / "h.sqlite"))
    collector = RunningCollector(store, settings(shared_broker, topic_prefix))
    app = GateApp(cfg, pin_factory=MockFactory())
    try:
        app.build()
        # the key the gate made at its first start, as `qrgate history device add` registers it
        store.register_device("app-gate", public_key_text(app.device_key.public_key()), "test", 0)
        app.run(threading.Event())
        assert app.publisher.app_ack_timeout_s == 60.0 and app.publisher.outbox.app_ack
        assert app.wait_drained(WAIT_S), app.publisher.outbox.stats()
        # the rows are marked acknowledged just before the publisher thread records acked_through
        assert app.publisher.wait_until(lambda: app.publisher.acked_through == 2, WAIT_S), app.publisher.acked_through
        assert stored_seqs(store) == [1, 2]
    finally:
        app.close()
        collector.close()
        store.close()


def test_a_hole_left_by_a_lost_outbox_holds_acks_back_until_it_is_written_off(tmp_path, shared_broker,
                                                                              topic_prefix):
    """A fresh outbox (the old one quarantined or lost) starts above its seq reservation, so the
    history sees a hole that never fills and the acks stop there. `history write-off` ends it."""
    db = str(tmp_path / "h.sqlite")
    store = open_store(db)
    collector = RunningCollector(store, settings(shared_broker, topic_prefix))
    gate = Gate(tmp_path, shared_broker, topic_prefix, timeout_s=1.0)
    try:
        for _ in range(3):
            gate.outbox.append(scan_event())
        gate.start()
        assert gate.publisher.wait_drained(WAIT_S), gate.outbox.stats()
        gate.close()
        (tmp_path / "outbox.sqlite").unlink()  # seq 1..3 delivered; the reserved rest of the block is never used
        gate = Gate(tmp_path, shared_broker, topic_prefix, timeout_s=1.0)
        fresh = [gate.outbox.append(scan_event()).seq for _ in range(4)]
        assert fresh == [1001, 1002, 1003, 1004]
        gate.start()
        collector.wait(lambda st: st.stored >= 7, "stored the events of the fresh outbox")
        gate.wait(lambda: gate.outbox.unpublished == 0, "had every event PUBACKed")
        # the retained ack (through 3) reaches the fresh gate once its subscription is confirmed,
        # on the link's thread: after its PUBACKs it is applied (it covers none of its rows),
        # before them it is ignored (above what this outbox has published); wait for either
        gate.wait(lambda: gate.publisher.acked_through == 3 or gate.publisher.acks_ignored == 1,
                  "handled the retained ack through 3")
        assert gate.outbox.stats().awaiting_ack == 4
        assert [(g.first_missing, g.last_missing) for g in store.gaps()] == [(4, 1000)]
        operator = open_store(db)  # what `qrgate history write-off` does, beside the running collector
        try:
            operator.write_off("gate-1", 4, 1000, "outbox replaced on gate-1", now_ms=0)
        finally:
            operator.close()
        # the gate publishes its unacknowledged rows again; the collector acks past the hole
        gate.wait(lambda: gate.publisher.acked_through == 1004, "got the ack past the written-off hole")
        assert gate.outbox.stats().awaiting_ack == 0 and store.gaps() == []
    finally:
        gate.close()
        collector.close()
        store.close()
