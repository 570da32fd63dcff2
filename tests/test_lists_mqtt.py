"""Remote list updates over a real Mosquitto: signed full and delta lists, and refusals."""

from __future__ import annotations

import json
import time

import cbor2
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.list_files import ListStore
from firmware.adapters.mqtt_link import MqttLink, MqttSettings
from firmware.core.credentials.trust import TrustStore
from firmware.core.list_message import encode_message
from firmware.core.lists import MemoryLists
from firmware.features.list_updates import ListUpdates
from provisioning.list_remote import send_list
from provisioning.mqtt_request import Broker, Target
from tests.mqtt_support import Collector

pytestmark = pytest.mark.broker


@pytest.fixture
def gate(shared_broker, topic_prefix, tmp_path):
    """A gate's MQTT link with list updates attached, trusting one command key."""
    key = ed25519.Ed25519PrivateKey.generate()
    store = ListStore(tmp_path / "lists")
    lists = MemoryLists()
    link = MqttLink(MqttSettings(device_id="gate-1", host=shared_broker.host, port=shared_broker.port,
                                 prefix=topic_prefix), reconnect_min_s=0.1, reconnect_max_s=0.5)
    ListUpdates(link, store, lists, TrustStore.from_keys([key.public_key()]), "gate-1", wall=time.time,
                prefix=topic_prefix).attach()
    link.start()
    assert link.wait_ready(10)
    responses = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/response/lists")
    target = Target(Broker(shared_broker.host, shared_broker.port), "gate-1", topic_prefix)
    try:
        yield key, store, lists, target, responses
    finally:
        responses.close()
        link.stop(2.0)


def send(key, target, kind="deny", transaction="t1", **kw):
    now = kw.pop("now_s", time.time())
    message = encode_message(key, kind=kind, now_s=now, transaction=transaction, device_id="gate-1",
                             prefix=target.prefix, **kw)
    return send_list(target, kind, message, transaction, timeout_s=10)


def publish_raw(target: Target, subtopic: str, payload: bytes, retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(target.broker.host, target.broker.port)
    client.loop_start()
    try:
        info = client.publish(f"{target.base}/{subtopic}", payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_signed_full_list_is_applied_and_answered(gate):
    key, store, lists, target, _ = gate
    answer = send(key, target, version=5, ids=["079111111111", "079222222222", "Nguyễn-3"])
    assert answer == {"status": "ok", "data": {"kind": "deny", "version": 5, "count": 3, "mode": "full",
                                               "scope": "device"},
                      "error": None, "transaction": "t1"}
    assert lists.is_denied("079222222222") and lists.is_denied("Nguyễn-3")
    assert store.load("deny").info.version == 5, "persisted before it was put in force"


def test_delta_adds_and_removes_on_top_of_its_base_version(gate):
    key, store, lists, target, _ = gate
    assert send(key, target, version=5, ids=["A", "B"])["status"] == "ok"
    answer = send(key, target, transaction="t2", version=6, base_version=5, add=["C"], remove=["A"])
    assert answer["status"] == "ok" and answer["data"]["count"] == 2
    assert (lists.is_denied("A"), lists.is_denied("B"), lists.is_denied("C")) == (False, True, True)
    answer = send(key, target, transaction="t3", version=8, base_version=5, add=["D"])
    assert answer["status"] == "error" and "send the full list" in answer["error"]
    assert not lists.is_denied("D")


def test_older_or_same_version_is_refused_and_changes_nothing(gate):
    key, store, lists, target, _ = gate
    assert send(key, target, version=5, ids=["A"])["status"] == "ok"
    answer = send(key, target, transaction="t2", version=5, ids=["B"])
    assert answer["status"] == "error" and answer["error"].startswith("old_version: version 5 is not above")
    assert answer["transaction"] == "t2"
    assert lists.is_denied("A") and not lists.is_denied("B")


def test_forged_expired_and_unknown_key_lists_are_refused(gate):
    key, store, lists, target, _ = gate
    other = ed25519.Ed25519PrivateKey.generate()
    answer = send(other, target, transaction="u1", version=9, ids=["X"])
    assert answer["status"] == "error" and answer["error"].startswith("unknown_issuer")
    answer = send(key, target, transaction="e1", version=9, ids=["X"], now_s=time.time() - 7200, valid_s=3600)
    assert answer["status"] == "error" and answer["error"].startswith("expired")
    # a body swapped under a valid signature
    good = cbor2.loads(encode_message(key, kind="deny", version=9, now_s=time.time(), ids=["X"],
                                      transaction="f1", device_id="gate-1", prefix=target.prefix))
    forged_body = cbor2.loads(encode_message(key, kind="deny", version=9, now_s=time.time(), ids=["Y"]))[1]
    answer = send_list(target, "deny", cbor2.dumps([good[0], forged_body]), "f1", timeout_s=10)
    assert answer["status"] == "error" and answer["error"].startswith("bad_signature")
    assert not lists.is_denied("X") and not lists.is_denied("Y")
    assert store.load("deny").info.version == 0


def test_unsigned_retained_and_misrouted_messages_are_answered_with_an_error(gate):
    key, store, lists, target, responses = gate
    publish_raw(target, "lists/deny", json.dumps({"ids": ["X"]}).encode())
    publish_raw(target, "lists/allow", encode_message(key, kind="deny", version=3, now_s=time.time(), ids=["X"]))
    assert responses.wait_until(lambda m: len(m) >= 2, 10)
    errors = [r.json()["error"].split(":")[0] for r in responses.messages[:2]]
    assert errors == ["unsigned", "wrong_kind"]
    assert all(r.json()["status"] == "error" and not r.retain for r in responses.messages)
    assert not lists.is_denied("X")
