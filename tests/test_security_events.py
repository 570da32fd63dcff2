"""Issue 10, attack 1 at the collector: forged scan events (a leaked device password, a
compromised dashboard) are quarantined, never stored among the events and never acknowledged
as the gate's; a gate's key is registered by enrolment only by the gate that read the
provisioning code. Real Mosquitto, real SQLite, real Ed25519 signatures."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.synthetic import write_blank_png, write_code_png
from firmware.core.event_signature import fingerprint, public_key_from_text, public_key_text, seal
from provisioning import keys
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.daemon_support import qrgate, run_gate, trust_new_key, valid_pass
from tests.history_support import BASE_MS, scan_dict
from tests.mqtt_support import Collector
from tests.test_app_ack import WAIT_S, Gate, stored_seqs
from tests.test_history_collector import Publisher, RunningCollector, settings
from tests.test_outbox import scan_event
from tests.test_provision_qr import VENUE, gate_config

pytestmark = pytest.mark.broker


def forged(device: str, seq: int, key: Ed25519PrivateKey | None) -> bytes:
    body = json.dumps(scan_dict(device=device, seq=seq, ts_ms=BASE_MS + seq, event_id=f"forged-{seq}"),
                      separators=(",", ":")).encode()
    return body if key is None else seal(body, key)


def test_attack1_forged_events_for_a_gates_seq_are_quarantined_never_stored_or_acked(tmp_path, broker,
                                                                                     topic_prefix):
    store = open_store(str(tmp_path / "h.sqlite"))
    collector = RunningCollector(store, settings(broker, topic_prefix))
    gate = Gate(tmp_path, broker, topic_prefix, timeout_s=300.0)
    acks = Collector(broker.host, broker.port, f"{topic_prefix}/gate-1/ack")
    forger = Publisher(broker, topic_prefix)
    try:
        for _ in range(10):
            gate.outbox.append(scan_event())
        gate.start()
        gate.wait(lambda: gate.publisher.acked_through == 10, "was acknowledged through seq 10")
        # seq 11-13 are the gate's next scans; a forger publishes its own, unsigned and signed
        # with a key of its own
        stranger = Ed25519PrivateKey.generate()
        forger.send("gate-1", forged("gate-1", 11, None))
        forger.send("gate-1", forged("gate-1", 12, stranger))
        forger.send("gate-1", forged("gate-1", 13, stranger))
        collector.wait(lambda st: st.quarantined >= 3, "quarantined the forged events")
        assert stored_seqs(store) == list(range(1, 11))
        reasons = [row[3] for row in store.quarantined()]
        assert sorted(reasons) == sorted(["unsigned: the event carries no signature (no \"sig\" member at its end)",
                                          *["signature does not verify with the key registered for gate-1"] * 2])
        assert max(m.json()["acked_through"] for m in acks.messages) == 10
        # the gate's own 11-13 are stored; `--gaps` has nothing to hide
        for _ in range(3):
            gate.outbox.append(scan_event())
        gate.publisher.wake()
        gate.wait(lambda: gate.publisher.acked_through == 13, "was acknowledged through its own seq 13")
        assert stored_seqs(store) == list(range(1, 14))
        assert not any(e.event_id.startswith("forged-") for e in store.rows(Filter()))
        assert store.gaps() == []
    finally:
        forger.close()
        acks.client.loop_stop()
        gate.close()
        collector.close()
        store.close()


def test_attack1_only_the_gate_holding_the_provisioning_code_enrols_its_key(tmp_path, broker, topic_prefix):
    """`provision qr --register DB` records the code's nonce; the gate that applies the code
    publishes a provisioned event with the nonce and its key, signed with it, and the collector
    registers that key. A guessed nonce, or the nonce replayed with another key, enrols nothing."""
    db = tmp_path / "h.sqlite"
    trust_new_key(tmp_path, "authority", "authority", as_name="a.pem")
    issuer = keys.new_keypair(tmp_path / "issuer.pem")
    venue = tmp_path / "venue.json"
    venue.write_text(json.dumps(VENUE, ensure_ascii=False), encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    config = gate_config(tmp_path, mqtt={"host": broker.host, "port": broker.port, "prefix": topic_prefix,
                                         "discovery": False})
    made = qrgate("provision", "qr", "--authority-key", str(tmp_path / "authority.pem"), "--venue", str(venue),
                  "--direction", "in", "--trust-issuer", str(issuer.public_path), "--device-id", "e2e-gate",
                  "--register", str(db), "--png", str(images / "00-provisioning.png"))
    assert made.returncode == 0, made.stderr
    write_blank_png(images / "01-blank.png")
    write_blank_png(images / "02-blank.png")
    write_code_png(images / "03-pass.png", valid_pass(keys.load_private_key(issuer.private_path), "EMP-1"))
    store = open_store(str(db))
    collector = RunningCollector(store, settings(broker, topic_prefix))
    forger = Publisher(broker, topic_prefix)
    key_topic = Collector(broker.host, broker.port, f"{topic_prefix}/e2e-gate/key")
    stranger = Ed25519PrivateKey.generate()

    def enrolment_by_stranger(nonce_hex: str, event_id: str) -> bytes:
        doc = {**scan_dict(device="e2e-gate", seq=1, event_id=event_id, decision="provisioned", reason="ok"),
               "prov_nonce": nonce_hex, "device_key": public_key_text(stranger.public_key())}
        return seal(json.dumps(doc, separators=(",", ":")).encode(), stranger)

    try:
        forger.send("e2e-gate", enrolment_by_stranger("00" * 16, "guess-1"))
        collector.wait(lambda st: st.quarantined >= 1, "quarantined the guessed enrolment")
        result, events = run_gate(config)
        assert result.returncode == 0, result.stderr
        assert [e["decision"] for e in events] == ["provisioned", "granted"]
        collector.wait(lambda st: st.stored >= 2, "stored the gate's events")
        gate_key = public_key_text(keys.load_public_key(tmp_path / "state" / "device-key.pub.pem"))
        assert store.device_keys()["e2e-gate"] == gate_key
        assert collector.collector.stats.enrolled == 1
        assert [e.decision for e in sorted(store.rows(Filter()), key=lambda e: e.seq)] == ["provisioned", "granted"]
        assert key_topic.wait_until(lambda ms: len(ms) >= 1, WAIT_S)
        announced = key_topic.messages[-1].json()
        assert announced["public_key"] == gate_key
        assert announced["fingerprint"] == fingerprint(public_key_from_text(gate_key))
        # the nonce is public now (it was in the published event): replaying it enrols nothing
        nonce = events[0]["prov_nonce"]
        forger.send("e2e-gate", enrolment_by_stranger(nonce, "replay-1"))
        collector.wait(lambda st: st.quarantined >= 2, "quarantined the replayed enrolment")
        assert store.device_keys()["e2e-gate"] == gate_key
        assert [r[3] for r in store.quarantined()] == [
            "enrolment of e2e-gate refused: provisioning nonce unknown, used, or for another gate"] * 2
    finally:
        key_topic.client.loop_stop()
        forger.close()
        collector.close()
        store.close()
