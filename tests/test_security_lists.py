"""Issue 10, attacks 7 and 8: list deltas carry their base; a damaged deny list fails closed.

Real parts: a Mosquitto per session, the gate's MQTT link, list updates and retained state
(``GateLists`` + ``StateReporter``), the `qrgate list` CLI as a subprocess.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.adapters.list_files import ListStore
from firmware.adapters.mqtt_link import MqttLink, MqttSettings
from firmware.adapters.publisher import StateReporter
from firmware.alarms import Alarms
from firmware.core.credentials.trust import TrustStore
from firmware.core.list_message import encode_message
from firmware.core.lists import MemoryLists
from firmware.features.list_updates import GateLists, ListSettings
from provisioning.list_remote import send_list
from provisioning.mqtt_request import Broker, Target
from tests.daemon_support import qrgate, write_config
from tests.mqtt_support import Collector

pytestmark = pytest.mark.broker


@pytest.fixture
def gate(shared_broker, topic_prefix, tmp_path):
    """A gate's link with its lists feature and retained state, trusting the command key ops.pem."""
    private_path = tmp_path / "ops.pem"
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(key, private_path)
    store = ListStore(tmp_path / "state" / "lists")
    lists = MemoryLists()
    link = MqttLink(MqttSettings(device_id="gate-1", host=shared_broker.host, port=shared_broker.port,
                                 prefix=topic_prefix), reconnect_min_s=0.1, reconnect_max_s=0.5)
    gate_lists = GateLists(store=store, lists=lists, alarms=Alarms(), wall=time.time, link=link,
                           command_keys=TrustStore.from_keys([key.public_key()]),
                           settings=ListSettings(max_age_h=0, stale_policy="fail_closed",
                                                 allow_list_required=False, device_id="gate-1"))
    state = StateReporter(link, [gate_lists], 60.0, wall=time.time)
    state.min_gap_s = 0.0
    gate_lists.start()
    link.start()
    assert link.wait_ready(10)
    (tmp_path / "images").mkdir()
    config = write_config(tmp_path, device={"id": "gate-1"},
                          mqtt={"host": shared_broker.host, "port": shared_broker.port, "prefix": topic_prefix})
    target = Target(Broker(shared_broker.host, shared_broker.port), "gate-1", topic_prefix)
    try:
        yield key, lists, target, state, config
    finally:
        link.stop(2.0)


def _write_private(key, path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def publish_state(state: StateReporter, target: Target, version: int) -> None:
    """Have the gate publish its retained state and wait until the broker holds that version."""
    state.force()
    state.tick(time.monotonic())
    seen = Collector(target.broker.host, target.broker.port, f"{target.base}/state")
    try:
        assert seen.wait_until(lambda m: any(r.json()["lists"]["deny"]["version"] == version for r in m), 10)
    finally:
        seen.close()


def send(key, target, transaction, **kw):
    message = encode_message(key, kind="deny", now_s=time.time(), transaction=transaction, device_id="gate-1", **kw)
    return send_list(target, "deny", message, transaction, timeout_s=10)


def test_attack7_delta_without_base_version_is_refused_by_the_gate(gate):
    key, lists, target, _state, _config = gate
    assert send(key, target, "t1", version=5, ids=["A"])["status"] == "ok"
    # the operator's full list version 6 (adding B) never arrived; a delta made after it comes now
    answer = send(key, target, "t2", version=7, add=["C"])
    assert answer["status"] == "error" and answer["error"].startswith("base_version"), answer
    answer = send(key, target, "t3", version=7, base_version=6, add=["C"])
    assert answer["status"] == "error" and answer["error"].startswith("base_version"), answer
    assert lists.snapshot("deny").info.version == 5 and not lists.is_denied("C")


def test_cli_delta_names_the_gates_version_from_its_retained_state(gate):
    key, lists, target, state, config = gate
    assert send(key, target, "t1", version=5, ids=["A"])["status"] == "ok"
    publish_state(state, target, 5)
    ops = str(config.parent / "ops.pem")
    added = qrgate("list", "deny", "add", "C", "--remote", "--key", ops, "--config", str(config),
                   "--timeout-s", "10")
    assert added.returncode == 0, added.stderr
    assert lists.is_denied("A") and lists.is_denied("C")


def test_attack7_cli_reports_the_gates_refusal_of_a_delta_on_another_base_with_exit_1(gate):
    key, lists, target, _state, config = gate
    assert send(key, target, "t1", version=5, ids=["A"])["status"] == "ok"
    ops = str(config.parent / "ops.pem")
    refused = qrgate("list", "deny", "add", "C", "--remote", "--key", ops, "--config", str(config),
                     "--base-version", "6", "--timeout-s", "10")
    assert refused.returncode == 1, refused.stderr
    assert "refused" in refused.stderr and "base_version" in refused.stderr
    assert lists.snapshot("deny").info.version == 5 and not lists.is_denied("C")


def test_cli_delta_without_a_known_gate_version_sends_nothing_and_exits_4(gate, tmp_path):
    key, lists, target, _state, config = gate
    ops = str(config.parent / "ops.pem")
    result = qrgate("list", "deny", "add", "C", "--remote", "--key", ops, "--config", str(config),
                    "--device", "gate-absent", "--timeout-s", "2")
    assert result.returncode == 4 and "--base-version" in result.stderr
