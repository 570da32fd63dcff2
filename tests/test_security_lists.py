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
                                                 allow_list_required=False, device_id="gate-1",
                                                 prefix=topic_prefix))
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
    message = encode_message(key, kind="deny", now_s=time.time(), transaction=transaction, device_id="gate-1",
                             prefix=target.prefix, **kw)
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


# --- attack 8: a damaged deny list fails closed by default -------------------------------------

def _site(tmp_path, **sections):
    from device.synthetic import write_code_png
    from provisioning import keys as key_tools
    from tests.daemon_support import trust_new_key, valid_pass

    issuer = trust_new_key(tmp_path, "issuer", "issuers", as_name="i.pem")
    private = key_tools.load_private_key(issuer.private_path)
    images = tmp_path / "images"
    images.mkdir()
    write_code_png(images / "00-listed.png", valid_pass(private, "079111111111"))
    write_code_png(images / "01-other.png", valid_pass(private, "EMP-1"))
    config = write_config(tmp_path, device={"id": "list-gate", "venue_id": "v-0123456789ab"},
                          camera={"fps": 20, "frames_per_image": 20}, gpio={"relay_pulse_ms": 100},
                          privacy={"subject": "raw"}, **sections)
    (tmp_path / "deny.csv").write_text("079111111111\n", encoding="utf-8")
    imported = qrgate("list", "deny", "import", str(tmp_path / "deny.csv"), "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    return config


def _decisions(config) -> list[tuple[str, str, str]]:
    from tests.daemon_support import run_gate

    result, events = run_gate(config)
    assert result.returncode == 0, result.stderr
    return [(e["decision"], e["reason"], e["subject"]) for e in events]


def _garble(tmp_path) -> None:
    deny = tmp_path / "state" / "lists" / "deny.qgl"
    data = bytearray(deny.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the keys: the checksum no longer matches
    deny.write_bytes(bytes(data))


def test_attack8_garbled_deny_list_blocks_every_grant_by_default_until_a_valid_list_is_installed(tmp_path):
    config = _site(tmp_path)  # no [lists] section: the defaults
    assert _decisions(config) == [("denied", "denied", "079111111111"), ("granted", "ok", "EMP-1")]
    _garble(tmp_path)
    assert _decisions(config) == [("denied", "lists_unavailable", "079111111111"),
                                  ("denied", "lists_unavailable", "EMP-1")]
    # the damaged file was moved aside at that start; a restart must not trust an empty list
    assert (tmp_path / "state" / "lists" / "deny.qgl.corrupt").exists()
    assert _decisions(config) == [("denied", "lists_unavailable", "079111111111"),
                                  ("denied", "lists_unavailable", "EMP-1")]
    imported = qrgate("list", "deny", "import", str(tmp_path / "deny.csv"), "--config", str(config))
    assert imported.returncode == 0, imported.stderr
    assert _decisions(config) == [("denied", "denied", "079111111111"), ("granted", "ok", "EMP-1")]


def test_keep_policy_is_an_explicit_choice_that_decides_without_the_damaged_list(tmp_path):
    config = _site(tmp_path, lists={"stale_policy": "keep"})
    _garble(tmp_path)
    # the documented risk of `keep`: the people on the unreadable list get in
    assert _decisions(config) == [("granted", "ok", "079111111111"), ("granted", "ok", "EMP-1")]


def test_an_unavailable_list_blocks_with_its_own_reason_before_staleness():
    from firmware.core.device_state import DeviceInputs, DeviceState, blocked_reason, evaluate
    from firmware.core.model import Reason

    both = DeviceInputs(lists_stale=True, lists_unavailable=True, lists_fail_closed=True)
    assert (evaluate(both), blocked_reason(both)) == (DeviceState.LISTS_STALE, Reason.LISTS_UNAVAILABLE)
    keep = DeviceInputs(lists_stale=True, lists_unavailable=True, lists_fail_closed=False)
    assert (evaluate(keep), blocked_reason(keep)) == (DeviceState.LISTS_STALE, None)


# --- per-device list and command messages are bound to their venue and topic prefix ----------

@pytest.mark.parametrize("claims, reason", [
    ({}, "wrong_device"),                                                      # no device_id: any gate
    ({"device_id": "gate-1"}, "wrong_prefix"),                                 # no prefix
    ({"device_id": "gate-1", "prefix": "other-broker"}, "wrong_prefix"),
    ({"device_id": "gate-1", "prefix": "qrgate", "venue_id": "v-other"}, "wrong_venue"),
])
def test_issue10_a_captured_device_list_does_not_verify_at_another_venue_or_broker(claims, reason):
    from firmware.core.list_message import ListMessageError, decode_message

    key = ed25519.Ed25519PrivateKey.generate()
    message = encode_message(key, kind="deny", version=5, now_s=time.time(), ids=["A"], **claims)
    with pytest.raises(ListMessageError) as err:
        decode_message(message, TrustStore.from_keys([key.public_key()]), topic_kind="deny", device_id="gate-1",
                       now_s=time.time(), venue_id="v-1", prefix="qrgate")
    assert err.value.reason == reason
    ok = encode_message(key, kind="deny", version=5, now_s=time.time(), ids=["A"], device_id="gate-1",
                        prefix="qrgate", venue_id="v-1")
    assert decode_message(ok, TrustStore.from_keys([key.public_key()]), topic_kind="deny", device_id="gate-1",
                          now_s=time.time(), venue_id="v-1", prefix="qrgate").ids == ["a"]


@pytest.mark.parametrize("venue_id, prefix, reason", [("v-other", "qrgate", "wrong_venue"),
                                                      ("v-1", "other-broker", "wrong_prefix")])
def test_issue10_a_captured_command_does_not_act_at_another_venue_or_broker(venue_id, prefix, reason):
    from firmware.core.cose import kid_for
    from firmware.core.remote_command import CommandVerifier, sign_command

    key = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    envelope = sign_command(key, kid_for(key.public_key()).hex(), device_id="gate-1", command="open", args={},
                            nonce="n" * 16, issued_at=now, expires_at=now + 10, transaction="t", venue_id=venue_id,
                            prefix=prefix)
    verifier = CommandVerifier(device_id="gate-1", keys_for_kid=TrustStore.from_keys([key.public_key()]).keys_for,
                               venue_id="v-1", prefix="qrgate")
    verdict = verifier.verify("open", envelope, False, now + 1, 100.0, True)
    assert not verdict.ok and verdict.reject.value == reason
