"""DCC trust-list updates over a real Mosquitto: a signed venue-wide list reaches every gate of the venue
(also one that connects later), is written before it is put in force, and verifies certificates at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.adapters.dcc_keystore import DccTrustListFile, load_trust_list
from firmware.adapters.mqtt_link import MqttLink, MqttSettings
from firmware.core.credentials import check_payload, dcc_issue
from firmware.core.credentials.dcc_trust import LiveDscStore
from firmware.core.credentials.trust import TrustStore
from firmware.core.dcc_trust_message import encode_trust_message, list_entries
from firmware.core.list_message import venue_list_topic
from firmware.core.model import Credential, Reason, Rejection
from firmware.features.dcc_trust_updates import DccTrustUpdates
from provisioning.list_remote import send_list
from provisioning.mqtt_request import Broker, Target
from tests.daemon_support import write_config
from tests.mqtt_support import Collector, publish_raw

pytestmark = pytest.mark.broker
KEY = ed25519.Ed25519PrivateKey.generate()
DAY = 86400.0


class Gate:
    """One gate's DCC side: a link, its trust-list file and the store in force."""

    def __init__(self, broker, prefix: str, tmp_path, device_id: str, venue_id: str) -> None:
        self.path = tmp_path / device_id / "dcc-trust.json"
        self.live = LiveDscStore(load_trust_list(self.path, missing_ok=True))
        self.link = MqttLink(MqttSettings(device_id=device_id, host=broker.host, port=broker.port, prefix=prefix),
                             reconnect_min_s=0.1, reconnect_max_s=0.5)
        DccTrustUpdates(self.link, self.live, DccTrustListFile(self.path), TrustStore.from_keys([KEY.public_key()]),
                        device_id, wall=time.time, venue_id=venue_id, prefix=prefix).start()
        self.link.start()
        assert self.link.wait_ready(10)

    def check(self, code: str):
        return check_payload(code.encode(), TrustStore(), dcc_trust=self.live.store)

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
    for venue in ("v-1", "v-2"):
        publish_raw(shared_broker, venue_list_topic(topic_prefix, venue, "dcc"), b"", retain=True)


@pytest.fixture(scope="module")
def signer():
    now = time.time()
    ca = dcc_issue.new_ca(not_before_s=now - 400 * DAY, not_after_s=now + 3000 * DAY)
    return dcc_issue.new_dsc(ca, not_before_s=now - 100 * DAY, not_after_s=now + 365 * DAY)


def _code(signer) -> str:
    now = time.time()
    return signer.sign(dcc_issue.vaccination("A", "B", "1990", date=dcc_issue.day(now - 30 * DAY)),
                       iat_s=now - 60, exp_s=now + 3600)


def _list_json(*signers) -> bytes:
    import json

    from firmware.core.credentials.dcc_trust import parse_dsc

    return json.dumps(list_entries([parse_dsc(s.der) for s in signers])).encode()


def answers(responses, transaction: str) -> dict[str, dict]:
    return {m.topic.split("/")[-3]: m.json() for m in responses.messages if m.json()["transaction"] == transaction}


def test_a_retained_venue_trust_list_reaches_every_gate_and_verifies_at_once(site, shared_broker, topic_prefix,
                                                                             signer):
    start, responses = site
    gate1, other = start("gate-1"), start("gate-9", venue_id="v-2")
    code = _code(signer)
    refused = gate1.check(code)
    assert isinstance(refused, Rejection) and refused.reason is Reason.UNKNOWN_ISSUER
    issued = time.time()
    message = encode_trust_message(KEY, list_json=_list_json(signer), version=5, now_s=issued, venue_id="v-1",
                                   transaction="t-dcc", valid_s=86400)
    publish_raw(shared_broker, venue_list_topic(topic_prefix, "v-1", "dcc"), message, retain=True)
    assert responses.wait_until(lambda ms: "gate-1" in answers(responses, "t-dcc"), 10)
    assert answers(responses, "t-dcc")["gate-1"]["data"] == {"kind": "dcc", "version": 5, "count": 1,
                                                              "countries": ["VN"], "scope": "venue"}
    assert isinstance(gate1.check(code), Credential)
    stored = load_trust_list(gate1.path)
    assert stored.version == 5 and len(stored) == 1 and stored.installed_at_s == float(int(issued))
    late = start("gate-3")  # installed later: catches up from the retained copy
    assert responses.wait_until(lambda ms: "gate-3" in answers(responses, "t-dcc"), 10)
    assert isinstance(late.check(code), Credential)
    assert "gate-9" not in answers(responses, "t-dcc") and isinstance(other.check(code), Rejection)


def test_forged_old_and_empty_trust_lists_change_nothing(site, shared_broker, topic_prefix, signer):
    start, _responses = site
    gate = start("gate-1")
    target = Target(Broker(shared_broker.host, shared_broker.port), "gate-1", topic_prefix)
    now = time.time()
    good = encode_trust_message(KEY, list_json=_list_json(signer), version=10, now_s=now, device_id="gate-1",
                                transaction="t-1")
    assert send_list(target, "dcc", good, "t-1", timeout_s=10)["status"] == "ok"
    forger = ed25519.Ed25519PrivateKey.generate()
    other = dcc_issue.new_dsc(dcc_issue.new_ca(not_before_s=now - DAY, not_after_s=now + DAY),
                              not_before_s=now - DAY, not_after_s=now + DAY)
    cases = [
        (encode_trust_message(forger, list_json=_list_json(other), version=11, now_s=now, transaction="t-2"),
         "t-2", "unknown_issuer"),
        (encode_trust_message(KEY, list_json=_list_json(other), version=9, now_s=now, transaction="t-3"),
         "t-3", "old_version"),
        (encode_trust_message(KEY, list_json=b"[]", version=12, now_s=now, transaction="t-4"), "t-4", "malformed"),
        (encode_trust_message(KEY, list_json=_list_json(other), version=13, now_s=now, venue_id="v-2",
                              transaction="t-5"), "t-5", "wrong_venue"),
        (encode_trust_message(KEY, list_json=_list_json(other), version=14, now_s=now - 7200, valid_s=3600,
                              transaction="t-6"), "t-6", "expired"),
    ]
    for message, transaction, reason in cases:
        answer = send_list(target, "dcc", message, transaction, timeout_s=10)
        assert answer["status"] == "error" and answer["error"].startswith(reason), answer
    assert gate.live.store.version == 10 and isinstance(gate.check(_code(signer)), Credential)
    assert isinstance(gate.check(_code(other)), Rejection)


def test_keys_dcc_import_remote_venue_prints_each_gates_answer(site, shared_broker, topic_prefix, tmp_path,
                                                               signer):
    start, _responses = site
    start("gate-1")
    start("gate-2")
    key_file = tmp_path / "ops.pem"
    key_file.write_bytes(KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    bundle = tmp_path / "dsc.pem"
    bundle.write_bytes(signer.pem())
    (tmp_path / "ops" / "images").mkdir(parents=True)
    config = write_config(tmp_path / "ops", device={"id": "ops-laptop"},
                          mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
    done = subprocess.run([sys.executable, "-m", "firmware.cli", "keys", "dcc", "import", str(bundle), "--remote",
                           "--venue", "v-1", "--gates", "2", "--key", str(key_file), "--config", str(config),
                           "--timeout-s", "20"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines()[:2])
    assert [line.split(":")[0] for line in lines] == ["gate-1", "gate-2"]
    assert all(line.endswith(", 1 DSC(s)") for line in lines)
    assert done.stdout.splitlines()[2].startswith("2 gate(s) answered, 0 refused")
    assert not (tmp_path / "ops" / "dcc-trust.json").exists()  # sent, not installed on the operator's machine
