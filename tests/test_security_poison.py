"""Issue 10, attack 2 (and 5 at every topic): poison messages never stop a consumer. Signed
poison events from a registered gate (NaN, seq 2**63, NUL on PostgreSQL...) are quarantined
with their reason and acknowledged, and the next events flow; 10,000 hostile messages on each
topic a gate reads and on the collector's topic leave both working. Real Mosquitto, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import replace

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import release_paho_sockets
from firmware.app.builder import GateApp
from firmware.core.config import parse_config
from firmware.core.event_signature import public_key_text, seal
from provisioning.history.query import Filter
from provisioning.history.store import open_store
from tests.history_support import BASE_MS, pg_server_url, pg_url, scan_dict  # noqa: F401
from tests.mqtt_support import Collector
from tests.signing_support import signed
from tests.test_app_ack import WAIT_S, stored_seqs
from tests.test_history_collector import Publisher, RunningCollector, settings
from tests.test_outbox import scan_event
from tests.test_outbox_app import site

pytestmark = pytest.mark.broker
FLOOD = 10_000
FLOOD_WAIT_S = 120.0  # a deadline only: the run takes about 35 s on a shared 2-core machine


def body_text(at: int, **fields_json: str) -> bytes:
    """An event body with some members replaced by raw JSON text (NaN is not valid JSON, and
    json.dumps would not write a lone surrogate or an integer above 2**63 the way an attacker does)."""
    doc = scan_dict(seq=at, ts_ms=BASE_MS + at, event_id=f"poison-{at}")
    text = json.dumps(doc, separators=(",", ":"))
    for key, raw in fields_json.items():
        text = text.replace(f'"{key}":{json.dumps(doc[key], separators=(",", ":"))}', f'"{key}":{raw}', 1)
    return text.encode()


POISON = {
    "latency_nan": body_text(101, latency_ms="NaN"),
    "latency_infinity": body_text(102, latency_ms="Infinity"),
    "seq_2_63": body_text(103, seq=str(2**63)),
    "seq_huge": body_text(104, seq="1" + "0" * 5000),
    "nul_in_display": body_text(105, display='"NGUY\\u0000N"'),
    "control_in_display": body_text(106, display='"A\\u0001B"'),
    "lone_surrogate": body_text(107, display='"\\ud800"'),
    "year_9999": body_text(108, ts='"9999-12-31T23:00:00+00:00"'),
    "nul_in_subject": body_text(109, subject='"x\\u0000"'),
    "time_synced_string": body_text(110, time_synced='"yes"'),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path):
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path}/history.sqlite")
    else:
        store = open_store(request.getfixturevalue("pg_url"))
    try:
        yield store
    finally:
        store.close()


def test_attack2_signed_poison_events_are_quarantined_and_the_next_events_flow(history, broker, topic_prefix):
    collector = RunningCollector(history, settings(broker, topic_prefix, store_retry_s=0.05))
    pub = Publisher(broker, topic_prefix)
    acks = Collector(broker.host, broker.port, f"{topic_prefix}/gate-1/ack")
    try:
        pub.send("gate-1", scan_dict(seq=1, ts_ms=BASE_MS + 1))
        for body in POISON.values():
            pub.send("gate-1", signed("gate-1", body))
        pub.send("gate-1", scan_dict(seq=2, ts_ms=BASE_MS + 2))
        collector.wait(lambda st: st.stored >= 2, "stored the valid event after the poison")
        collector.wait(lambda st: st.quarantined >= len(POISON), "quarantined every poison event")
        assert collector.thread.is_alive()
        assert stored_seqs(history) == [1, 2]
        assert history.quarantine_count() == len(POISON)
        reasons = " | ".join(r[3] for r in history.quarantined())
        for expected in ("NaN", "Infinity", "largest a database column holds", "U+0000", "U+0001", "U+D800",
                         "between 1970 and 2100", "'time_synced'"):
            assert expected in reasons, expected
        assert acks.wait_until(lambda ms: any(m.json()["acked_through"] == 2 for m in ms), WAIT_S)
    finally:
        acks.client.loop_stop()
        pub.close()
        collector.close()


def test_attack2_an_event_the_database_still_refuses_is_quarantined_and_acknowledged(tmp_path, broker,
                                                                                    topic_prefix):
    """Whatever validation misses: the database refuses one event (here a trigger) while it
    answers otherwise; the event goes to the quarantine, the rest of its batch is stored."""
    store = open_store(str(tmp_path / "h.sqlite"))
    store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.display = 'refuse me' "
                      "BEGIN SELECT RAISE(ABORT, 'refused by a check the validation does not know'); END")
    collector = RunningCollector(store, settings(broker, topic_prefix, store_retry_s=0.05))
    pub = Publisher(broker, topic_prefix)
    try:
        for seq in (1, 2, 3):
            pub.send("gate-1", scan_dict(seq=seq, ts_ms=BASE_MS + seq, display="refuse me" if seq == 2 else "ok"))
        collector.wait(lambda st: st.stored >= 2 and st.quarantined >= 1, "stored 1 and 3, quarantined 2")
        assert stored_seqs(store) == [1, 3]
        assert "refused by the database" in store.quarantined()[0][3]
        pub.send("gate-1", scan_dict(seq=4, ts_ms=BASE_MS + 4))
        collector.wait(lambda st: st.stored >= 3, "stored the next event")
    finally:
        pub.close()
        collector.close()
        store.close()


def hostile_payloads(rng: random.Random, n: int) -> list[bytes]:
    """n hostile messages: broken and deep JSON, NaN, huge numbers, wrong types, control
    characters, random bytes, events signed by a stranger, oversized bodies."""
    stranger = Ed25519PrivateKey.generate()
    signed_by_stranger = seal(json.dumps(scan_dict(seq=9), separators=(",", ":")).encode(), stranger)
    shapes = [
        lambda: b"[" * rng.randint(1000, 3000),
        lambda: b'{"a":' * rng.randint(1000, 1500),
        lambda: b'{"acked_through": NaN, "device_id": "app-gate"}',
        lambda: b'{"acked_through": 1' + b"0" * rng.randint(20, 5000) + b"}",
        lambda: b'{"v":1,"kid":"00","payload":"' + b"A" * rng.randint(0, 2000) + b'","sig":"x"}',
        lambda: rng.randbytes(rng.randint(0, 400)),
        lambda: json.dumps({"acked_through": rng.choice([-1, 2**70, "7", None, [], {}]),
                            "device_id": rng.choice(["app-gate", None, 7, "\u0000"])}).encode(),
        lambda: b"\x84" + rng.randbytes(rng.randint(0, 200)),  # CBOR-ish (lists are COSE)
        lambda: b"\x9f" * rng.randint(100, 3000),                # indefinite CBOR arrays, nested
        lambda: signed_by_stranger,
        lambda: json.dumps({"schema": "qrgate.scan/1", "seq": 2**63, "latency_ms": 1e309}).encode(),
        lambda: b"x" * rng.randint(17_000, 20_000),
    ]
    return [rng.choice(shapes)() for _ in range(n)]


def test_fuzz_10000_hostile_messages_per_topic_never_stop_the_gate_or_the_collector(tmp_path, broker,
                                                                                   topic_prefix, caplog):
    # 50,000 refusals are logged one line each; keep them out of the captured log (the
    # outcome is asserted on counters, answers and the store)
    for name in ("firmware.features.list_updates", "firmware.features.remote_control",
                 "firmware.adapters.publisher", "provisioning.history.collector"):
        caplog.set_level(logging.ERROR, logger=name)
    base = site(tmp_path)
    cfg = parse_config({
        "device": {"id": "app-gate", "venue_id": "v-1", "state_dir": str(base.state_dir),
                   "runtime_dir": str(tmp_path / "run")},
        "camera": {"source": base.camera.source, "frames_per_image": 1, "as_fast_as_possible": True},
        "gpio": {"pin_factory": "mock", "relay_pulse_ms": 50},
        "keys": {"issuers_dir": str(tmp_path / "issuers")},
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": topic_prefix, "discovery": False,
                 "app_ack": True, "app_ack_timeout_s": 60},
        "commands": {"enabled": True, "rate_per_min": 6000},
    }, str(tmp_path / "qrgate.toml"))
    store = open_store(str(tmp_path / "h.sqlite"))
    collector = RunningCollector(store, settings(broker, topic_prefix))
    answers = Collector(broker.host, broker.port, f"{topic_prefix}/app-gate/response/#")
    app = GateApp(cfg, pin_factory=MockFactory())
    flooder = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{topic_prefix}"[:60], protocol=paho.MQTTv5)
    rng = random.Random(10)
    try:
        app.build()
        store.register_device("app-gate", public_key_text(app.device_key.public_key()), "test", 0)
        app.run(threading.Event())
        assert app.wait_drained(WAIT_S)
        assert app.publisher.wait_until(lambda: app.publisher.acked_through == 2, WAIT_S)
        topics = {
            "ack": f"{topic_prefix}/app-gate/ack",
            "cmd": f"{topic_prefix}/app-gate/cmd/open",
            "lists": f"{topic_prefix}/app-gate/lists/deny",
            "venue lists": f"{topic_prefix}/venues/v-1/lists/deny",
            "collector": f"{topic_prefix}/app-gate/scan",
        }
        flooder.max_inflight_messages_set(500)
        flooder.max_queued_messages_set(0)
        flooder.connect(broker.host, broker.port)
        flooder.loop_start()
        last = None
        for topic in topics.values():
            for payload in hostile_payloads(rng, FLOOD):
                last = flooder.publish(topic, payload, qos=1)
        last.wait_for_publish(timeout=FLOOD_WAIT_S)
        # The gate handles its topics in order on one thread; its answers may be dropped while
        # paho's queue is full, so a marker is sent (again, until answered) after the floods:
        # its answer means every hostile command and list before it was refused, none stalled.
        def answered(topic: str, payload: bytes, retain: bool, match) -> bool:
            for _ in range(20):
                flooder.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=WAIT_S)
                if answers.wait_until(lambda ms: any(match(m) for m in ms), 3.0):
                    return True
            return False

        assert answered(topics["cmd"], b'{"transaction": "marker-cmd"}', False,
                        lambda m: m.json().get("transaction") == "marker-cmd")
        assert answered(f"{topic_prefix}/app-gate/lists/marker", b"marker", False,
                        lambda m: "unknown list 'marker'" in (m.json().get("error") or ""))
        assert all(m.json()["status"] == "error" for m in answers.messages)
        assert sum(app.remote.rejected.values()) >= FLOOD
        with collector.collector.changed:
            assert collector.collector.changed.wait_for(lambda: collector.collector.stats.quarantined >= FLOOD,
                                                        timeout=FLOOD_WAIT_S), collector.collector.stats
        assert app.publisher.wait_until(lambda: app.publisher.acks_ignored >= FLOOD, FLOOD_WAIT_S), \
            app.publisher.acks_ignored
        # and a valid event still arrives, is stored and acknowledged
        app.sink.append(replace(scan_event(), device_id="app-gate"))
        app.publisher.wake()
        assert app.publisher.wait_until(lambda: app.publisher.acked_through == 3, WAIT_S), app.publisher.acked_through
        assert stored_seqs(store) == [1, 2, 3]
        assert store.page(Filter()).total == 3 and store.quarantine_count() == FLOOD
    finally:
        flooder.disconnect()
        flooder.loop_stop()
        release_paho_sockets(flooder)
        answers.client.loop_stop()
        app.close()
        collector.close()
        store.close()
