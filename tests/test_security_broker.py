"""Issue 10: the shipped Mosquitto ACL template (deploy/mosquitto-acl.conf) against a real
Mosquitto with one password per login. A gate publishes only as itself and cannot write an
ack; only the collector's login can; a gate and the collector still do their work through it."""

from __future__ import annotations

import queue
import subprocess
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import MqttLink, MqttSettings, release_paho_sockets
from firmware.adapters.outbox import SqliteOutbox
from firmware.adapters.publisher import OutboxPublisher
from provisioning.history.store import open_store
from tests.conftest import Broker
from tests.signing_support import device_key
from tests.test_app_ack import WAIT_S, stored_seqs
from tests.test_history_collector import RunningCollector, settings
from tests.test_outbox import scan_event

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[1]
NOT_AUTHORIZED = 0x87
LOGINS = {"gate-1": "pw-gate-1", "gate-2": "pw-gate-2", "qrgate-history": "pw-history",
          "qrgate-backoffice": "pw-backoffice"}


@pytest.fixture
def acl_broker(tmp_path, topic_prefix):
    """A Mosquitto running the template (for this test's prefix) with a password per login."""
    workdir = tmp_path / "broker"
    workdir.mkdir()
    passwords = workdir / "passwd"
    for n, (user, password) in enumerate(LOGINS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if n == 0 else []), "-b", str(passwords), user, password],
                       check=True, capture_output=True)
    broker = Broker(workdir)
    broker.password_file = passwords
    broker.acl = (REPO / "deploy" / "mosquitto-acl.conf").read_text().replace("qrgate/", f"{topic_prefix}/")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """An MQTT 5 client that reports the broker's answer to each publish and subscribe."""

    def __init__(self, broker, user: str | None, password: str | None = None) -> None:
        self.answers: queue.Queue = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=paho.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else LOGINS[user])
        self.client.on_connect = lambda c, u, f, rc, p: self.answers.put(("connack", rc.value))
        self.client.on_publish = lambda c, u, mid, rc, p: self.answers.put(("puback", rc.value))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.answers.put(("suback", rcs[0].value))
        self.messages: queue.Queue = queue.Queue()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg.topic)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.connack = self._next("connack")

    def _next(self, kind: str) -> int:
        got, code = self.answers.get(timeout=WAIT_S)
        assert got == kind, (got, code)
        return code

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """The PUBACK reason code: 0 taken, 0x87 refused by the ACL (0x10: taken, no subscriber)."""
        self.client.publish(topic, payload, qos=1)
        return self._next("puback")

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        return self._next("suback")

    def received(self, last_topic: str) -> list[str]:
        """The topics of the messages received, up to and including ``last_topic``."""
        topics = [self.messages.get(timeout=WAIT_S)]
        while topics[-1] != last_topic:
            topics.append(self.messages.get(timeout=WAIT_S))
        return topics

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        release_paho_sockets(self.client)


def test_attack1_broker_acl_a_gate_cannot_publish_as_another_gate_or_write_an_ack(acl_broker, topic_prefix):
    p = topic_prefix
    gate = Client(acl_broker, "gate-1")
    collector = Client(acl_broker, "qrgate-history")
    backoffice = Client(acl_broker, "qrgate-backoffice")
    try:
        assert gate.connack == collector.connack == backoffice.connack == 0
        # a leaked gate password: only its own topics
        assert gate.publish(f"{p}/gate-1/scan") < 0x80
        assert gate.publish(f"{p}/gate-1/key") < 0x80
        assert gate.publish(f"{p}/gate-1/skips") < 0x80
        assert gate.publish(f"{p}/gate-1/response/open") < 0x80
        for foreign in (f"{p}/gate-2/scan", f"{p}/gate-2/state", f"{p}/gate-2/key", f"{p}/gate-2/skips",
                        f"{p}/gate-1/ack",
                        f"{p}/gate-2/ack", f"{p}/gate-1/cmd/open", f"{p}/gate-2/cmd/open", f"{p}/gate-1/lists/deny",
                        f"{p}/venues/v-0123456789ab/lists/deny"):
            assert gate.publish(foreign) == NOT_AUTHORIZED, foreign
        assert gate.subscribe(f"{p}/gate-1/cmd/#") < 0x80
        assert gate.subscribe(f"{p}/gate-1/ack") < 0x80
        # Mosquitto grants any subscription and checks read access per message: a command for
        # gate-2 never reaches gate-1; the marker sent after it does
        assert gate.subscribe(f"{p}/gate-2/cmd/#") < 0x80
        assert gate.subscribe(f"{p}/+/scan") < 0x80
        assert backoffice.publish(f"{p}/gate-2/cmd/open") < 0x80
        assert gate.publish(f"{p}/gate-1/scan", b"mine") < 0x80
        assert backoffice.publish(f"{p}/gate-1/cmd/marker") < 0x80
        assert gate.received(f"{p}/gate-1/cmd/marker") == [f"{p}/gate-1/cmd/marker"]
        # the collector reads every scan and writes acks, nothing else
        assert collector.subscribe(f"{p}/+/scan") < 0x80
        assert collector.subscribe(f"{p}/+/skips") < 0x80
        assert gate.publish(f"{p}/gate-1/skips", b"declared") < 0x80
        assert gate.publish(f"{p}/gate-1/scan", b"after") < 0x80
        assert collector.received(f"{p}/gate-1/scan")[-2:] == [f"{p}/gate-1/skips", f"{p}/gate-1/scan"]
        assert collector.publish(f"{p}/gate-1/ack") < 0x80
        assert collector.publish(f"{p}/gate-1/scan") == NOT_AUTHORIZED
        assert collector.publish(f"{p}/gate-1/skips") == NOT_AUTHORIZED
        assert collector.publish(f"{p}/gate-1/cmd/open") == NOT_AUTHORIZED
        # a compromised dashboard sends (signed) commands and lists, never events or acks
        assert backoffice.publish(f"{p}/gate-1/cmd/open") < 0x80
        assert backoffice.publish(f"{p}/venues/v-0123456789ab/lists/deny") < 0x80
        assert backoffice.publish(f"{p}/gate-1/scan") == NOT_AUTHORIZED
        assert backoffice.publish(f"{p}/gate-1/skips") == NOT_AUTHORIZED
        assert backoffice.publish(f"{p}/gate-1/ack") == NOT_AUTHORIZED
    finally:
        for client in (gate, collector, backoffice):
            client.close()
    for user, password in ((None, None), ("gate-1", "wrong")):
        refused = Client(acl_broker, user, password)
        try:
            assert refused.connack >= 0x80, (user, refused.connack)
        finally:
            refused.close()


def test_gate_and_collector_deliver_and_acknowledge_through_the_acl_template(tmp_path, acl_broker, topic_prefix):
    store = open_store(str(tmp_path / "h.sqlite"))
    collector = RunningCollector(store, settings(acl_broker, topic_prefix, username="qrgate-history",
                                                 password=LOGINS["qrgate-history"]))
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", app_ack=True)
    link = MqttLink(MqttSettings(device_id="gate-1", host=acl_broker.host, port=acl_broker.port, prefix=topic_prefix,
                                 keepalive_s=10, username="gate-1", password=LOGINS["gate-1"]),
                    reconnect_min_s=0.1, reconnect_max_s=0.5)
    from functools import partial

    from firmware.core.event_signature import seal

    publisher = OutboxPublisher(outbox, link, app_ack_timeout_s=300.0, seal=partial(seal, key=device_key("gate-1")),
                                key_document='{"device_id":"gate-1"}')
    try:
        for _ in range(5):
            outbox.append(scan_event())
        publisher.start()
        link.start()
        assert publisher.wait_until(lambda: publisher.acked_through == 5, WAIT_S), outbox.stats()
        assert stored_seqs(store) == [1, 2, 3, 4, 5]
        assert publisher.refused == 0
    finally:
        publisher.stop()
        link.stop(timeout_s=1.0)
        outbox.close()
        collector.close()
        store.close()
