"""Venue-wide lists over a real Mosquitto: one retained full list reaches every gate of the
venue, including gates that connect later, and no gate of another venue."""

from __future__ import annotations

import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.adapters.list_files import open_lists
from firmware.adapters.mqtt_link import MqttLink, MqttSettings
from firmware.core.credentials.trust import TrustStore
from firmware.core.list_message import encode_message, venue_list_topic
from firmware.features.list_updates import ListUpdates
from provisioning.list_remote import send_list
from provisioning.mqtt_request import Broker, Target
from tests.daemon_support import write_config
from tests.mqtt_support import Collector, publish_raw

pytestmark = pytest.mark.broker
KEY = ed25519.Ed25519PrivateKey.generate()


class Gate:
    """One gate's list side: a link, its list files and the lists in force."""

    def __init__(self, broker, prefix: str, tmp_path, device_id: str, venue_id: str) -> None:
        self.store, self.lists = open_lists(tmp_path / device_id / "lists")  # as the gate does at start
        self.link = MqttLink(MqttSettings(device_id=device_id, host=broker.host, port=broker.port, prefix=prefix),
                             reconnect_min_s=0.1, reconnect_max_s=0.5)
        ListUpdates(self.link, self.store, self.lists, TrustStore.from_keys([KEY.public_key()]), device_id, wall=time.time,
                    venue_id=venue_id, prefix=prefix).attach()
        self.link.start()
        assert self.link.wait_ready(10)

    def version(self, kind: str = "deny") -> int:
        return self.lists.snapshot(kind).info.version

    def close(self) -> None:
        self.link.stop(2.0)


@pytest.fixture
def site(shared_broker, topic_prefix, tmp_path):
    gates: list[Gate] = []
    responses = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/+/response/lists")

    def start(device_id: str, venue_id: str = "v-1") -> Gate:
        gate = Gate(shared_broker, topic_prefix, tmp_path, device_id, venue_id)
        gates.append(gate)
        return gate

    yield start, responses
    for gate in gates:
        gate.close()
    responses.close()
    for venue in ("v-1", "v-2"):  # the retained lists must not leak into later tests
        publish_raw(shared_broker, venue_list_topic(topic_prefix, venue, "deny"), b"", retain=True)


def answers_by_gate(responses, transaction: str) -> dict[str, dict]:
    return {m.topic.split("/")[-3]: m.json() for m in responses.messages if m.json()["transaction"] == transaction}


def test_a_retained_venue_list_reaches_every_gate_of_the_venue_even_one_that_comes_later(
        site, shared_broker, topic_prefix):
    start, responses = site
    gate1, gate2, other = start("gate-1"), start("gate-2"), start("gate-9", venue_id="v-2")
    message = encode_message(KEY, kind="deny", version=7, now_s=time.time(), ids=["079111111111", "P-2"],
                             venue_id="v-1", transaction="t-venue", valid_s=86400)
    publish_raw(shared_broker, venue_list_topic(topic_prefix, "v-1", "deny"), message, retain=True)
    assert responses.wait_until(lambda ms: len(answers_by_gate(responses, "t-venue")) >= 2, 10)
    answered = answers_by_gate(responses, "t-venue")
    assert sorted(answered) == ["gate-1", "gate-2"]
    assert answered["gate-1"]["data"] == {"kind": "deny", "version": 7, "count": 2, "mode": "full",
                                          "scope": "venue"}
    assert gate1.lists.is_denied("P-2") and gate2.lists.is_denied("079111111111")
    assert gate2.store.load("deny").info.version == 7, "persisted"
    # a gate installed later catches up from the retained copy
    late = start("gate-3")
    assert responses.wait_until(lambda ms: "gate-3" in answers_by_gate(responses, "t-venue"), 10)
    assert late.lists.is_denied("P-2") and late.version() == 7
    # a gate that reconnects gets the same copy again and says nothing: the marker's answer is its only one
    gate1.close()
    again = start("gate-1")
    target = Target(Broker(shared_broker.host, shared_broker.port), "gate-1", topic_prefix)
    marker = encode_message(KEY, kind="allow", version=1, now_s=time.time(), ids=["E-1"], device_id="gate-1",
                            transaction="t-marker", venue_id="v-1", prefix=topic_prefix)
    assert send_list(target, "allow", marker, "t-marker", timeout_s=10)["status"] == "ok"
    assert responses.wait_until(lambda ms: "gate-1" in answers_by_gate(responses, "t-marker"), 10)
    from_gate1 = [m.json()["transaction"] for m in responses.messages if m.topic.split("/")[-3] == "gate-1"]
    assert from_gate1 == ["t-venue", "t-marker"]
    assert again.version() == 7  # loaded from its own list files; the retained copy changed nothing
    # the other venue's gate never saw it
    assert other.version() == 0 and not other.lists.is_denied("P-2")


@pytest.mark.parametrize("variant, reason", [
    ("no_venue_claim", "wrong_venue"),
    ("other_venue", "wrong_venue"),
    ("delta", "wrong_mode"),
])
def test_a_venue_list_that_is_not_a_full_list_signed_for_this_venue_is_refused(
        site, shared_broker, topic_prefix, variant, reason):
    start, responses = site
    gate = start("gate-1")
    kw = {"no_venue_claim": {"ids": ["X"]}, "other_venue": {"ids": ["X"], "venue_id": "v-2"},
          "delta": {"add": ["X"], "base_version": 0, "venue_id": "v-1"}}[variant]
    message = encode_message(KEY, kind="deny", version=3, now_s=time.time(), transaction="t-bad", **kw)
    publish_raw(shared_broker, venue_list_topic(topic_prefix, "v-1", "deny"), message)
    assert responses.wait_until(lambda ms: "gate-1" in answers_by_gate(responses, "t-bad"), 10)
    assert answers_by_gate(responses, "t-bad")["gate-1"]["error"].startswith(reason)
    assert gate.version() == 0 and not gate.lists.is_denied("X")


def test_a_device_list_signed_for_another_venue_is_refused(site, shared_broker, topic_prefix):
    start, _responses = site
    gate = start("gate-1")
    target = Target(Broker(shared_broker.host, shared_broker.port), "gate-1", topic_prefix)
    message = encode_message(KEY, kind="deny", version=3, now_s=time.time(), ids=["X"], device_id="gate-1",
                             venue_id="v-2", transaction="t-x", prefix=topic_prefix)
    answer = send_list(target, "deny", message, "t-x", timeout_s=10)
    assert answer["error"].startswith("wrong_venue") and gate.version() == 0


def test_list_import_remote_venue_prints_each_gates_answer(site, shared_broker, topic_prefix, tmp_path):
    start, _responses = site
    start("gate-1")
    start("gate-2")
    key_file = tmp_path / "ops.pem"
    key_file.write_bytes(KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    csv_file = tmp_path / "deny.csv"
    csv_file.write_text("id\n079111111111\n079222222222\n079333333333\n")
    (tmp_path / "ops" / "images").mkdir(parents=True)
    config = write_config(tmp_path / "ops", device={"id": "ops-laptop"},
                          mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
    import subprocess

    done = subprocess.run([sys.executable, "-m", "firmware.cli", "list", "deny", "import", str(csv_file),
                           "--remote", "--venue", "v-1", "--gates", "2", "--key", str(key_file), "--config",
                           str(config), "--timeout-s", "20"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines()[:2])
    assert [line.split(":")[0] for line in lines] == ["gate-1", "gate-2"]
    assert all(line.endswith(", 3 ids") for line in lines)
    assert done.stdout.splitlines()[2].startswith("2 gate(s) answered, 0 refused")
    refused = subprocess.run([sys.executable, "-m", "firmware.cli", "list", "deny", "add", "X", "--remote",
                              "--venue", "v-1", "--key", str(key_file), "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 78 and "--venue sends a whole list" in refused.stderr
