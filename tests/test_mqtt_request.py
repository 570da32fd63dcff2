"""provisioning.mqtt_request: one request, the matching answer, bounded waits (real Mosquitto)."""

from __future__ import annotations

import json
import queue
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import release_paho_sockets
from firmware.core.errors import PublishError
from provisioning.mqtt_request import Broker, request
from tests.conftest import free_port

pytestmark = pytest.mark.broker


class Responder:
    """A stand-in gate: on each request it answers with the given payloads, in order."""

    def __init__(self, host: str, port: int, request_topic: str, response_topic: str,
                 answers: list[bytes]) -> None:
        self.requests: queue.Queue = queue.Queue()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(request_topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()

        def on_message(c, userdata, message) -> None:
            expiry = getattr(message.properties, "MessageExpiryInterval", None)
            self.requests.put((bytes(message.payload), bool(message.retain), message.qos, expiry))
            for answer in answers:
                c.publish(response_topic, answer, qos=1)

        self.client.on_message = on_message
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError(f"responder could not subscribe to {request_topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        release_paho_sockets(self.client)


def test_returns_only_the_answer_with_this_transaction(shared_broker, topic_prefix):
    req, resp = f"{topic_prefix}/gate/cmd/x", f"{topic_prefix}/gate/response/x"
    other = json.dumps({"transaction": "someone-else", "status": "ok"}).encode()
    mine = json.dumps({"transaction": "t-1", "status": "ok", "data": {"n": 1}}).encode()
    responder = Responder(shared_broker.host, shared_broker.port, req, resp, [b"not json", other, mine])
    try:
        answer = request(Broker(shared_broker.host, shared_broker.port), request_topic=req,
                         response_topic=resp, payload=b"\x01signed", transaction="t-1", timeout_s=10,
                         what="the command", client_id_prefix="test-", expiry_s=7)
        assert answer == {"transaction": "t-1", "status": "ok", "data": {"n": 1}}
        assert responder.requests.get(timeout=10) == (b"\x01signed", False, 1, 7)
    finally:
        responder.close()


def test_without_expiry_the_request_carries_none(shared_broker, topic_prefix):
    req, resp = f"{topic_prefix}/gate/lists/deny", f"{topic_prefix}/gate/response/lists"
    mine = json.dumps({"transaction": "t-2", "status": "ok"}).encode()
    responder = Responder(shared_broker.host, shared_broker.port, req, resp, [mine])
    try:
        answer = request(Broker(shared_broker.host, shared_broker.port), request_topic=req,
                         response_topic=resp, payload=b"list", transaction="t-2", timeout_s=10,
                         what="the list", client_id_prefix="test-")
        assert answer == {"transaction": "t-2", "status": "ok"}
        assert responder.requests.get(timeout=10) == (b"list", False, 1, None)
    finally:
        responder.close()


def test_no_answer_within_the_timeout_gives_none(shared_broker, topic_prefix):
    answer = request(Broker(shared_broker.host, shared_broker.port), request_topic=f"{topic_prefix}/q",
                     response_topic=f"{topic_prefix}/a", payload=b"x", transaction="t-3", timeout_s=0.3,
                     what="the list", client_id_prefix="test-")
    assert answer is None


def test_unreachable_broker_raises_publish_error_naming_it():
    port = free_port()
    with pytest.raises(PublishError, match=rf"cannot reach the broker at 127\.0\.0\.1:{port} .*check --broker"):
        request(Broker("127.0.0.1", port), request_topic="q", response_topic="a", payload=b"x",
                transaction="t", timeout_s=2, what="the list", client_id_prefix="test-")


def test_a_gate_config_gives_its_broker_login_and_tls_and_the_login_is_used(broker, tmp_path, topic_prefix):
    """`qrgate list ... --remote` reaches the broker the way the gate does (Broker.of_gate)."""
    import subprocess

    from firmware.core.config import parse_config
    from provisioning.mqtt_request import exchange

    passwd = tmp_path / "mosquitto.passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "ops", "s3cret"], check=True, capture_output=True)
    broker.extra_conf = f"allow_anonymous false\npassword_file {passwd}\n"
    broker.stop()
    broker.start()

    def gate_broker(password: str, **mqtt) -> Broker:
        secret = tmp_path / "password"
        secret.write_text(password + "\n")
        cfg = parse_config({"device": {"id": "gate-1"},
                            "mqtt": {"host": broker.host, "port": broker.port, "username": "ops",
                                     "password_file": str(secret), **mqtt}})
        return Broker.of_gate(cfg)

    tls = tmp_path / "ca.pem"
    tls.write_text("not read here\n")
    assert Broker.of_gate(parse_config({"mqtt": {"host": "mqtt.lan", "port": 8883, "tls": True,
                                                 "ca_file": str(tls)}}), "other.lan:1883") == Broker(
        "other.lan", 1883, tls_ca=str(tls), tls=True)
    published = exchange(gate_broker("s3cret"), request_topic=f"{topic_prefix}/q", response_filter=f"{topic_prefix}/a",
                         payload=b"x", transaction="t", timeout_s=5, what="the list", client_id_prefix="t-",
                         enough=lambda got: True)
    assert published == []  # connected with the login, PUBACK received, no answer expected
    with pytest.raises(PublishError, match="refused the connection"):
        exchange(gate_broker("wrong"), request_topic=f"{topic_prefix}/q", response_filter=f"{topic_prefix}/a",
                 payload=b"x", transaction="t", timeout_s=5, what="the list", client_id_prefix="t-",
                 enough=lambda got: True)
