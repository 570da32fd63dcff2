"""provisioning.mqtt_request: one request, the matching answer, bounded waits (real Mosquitto)."""

from __future__ import annotations

import json
import queue
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware.errors import PublishError
from firmware.mqtt import release_paho_sockets
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
