"""Home Assistant device discovery and health in the retained state, on a real Mosquitto."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.features.home_assistant import discovery_payload
from tests.field_support import build_app, write_site
from tests.mqtt_support import Collector, publish_raw

pytestmark = pytest.mark.broker


def test_discovery_document_has_device_origin_and_the_components():
    doc = discovery_payload(device_id="bus-3-gate-2", base_topic="qrgate/bus-3-gate-2", venue_id="v-9")
    assert doc["dev"]["ids"] == ["qrgate_bus_3_gate_2"] and doc["o"]["name"] == "qrgate"
    assert doc["availability_topic"] == "qrgate/bus-3-gate-2/availability"
    platforms = {key: c["p"] for key, c in doc["cmps"].items()}
    assert platforms == {"scan": "event", "open": "button", "mode": "select", "relay": "binary_sensor",
                         "camera": "binary_sensor", "scans": "sensor", "backlog": "sensor", "fps": "sensor",
                         "decode_p99": "sensor", "cpu_temp": "sensor", "state": "sensor"}
    assert doc["cmps"]["scan"]["state_topic"] == "qrgate/bus-3-gate-2/scan"
    assert doc["cmps"]["open"]["command_topic"] == "qrgate/bus-3-gate-2/cmd/open"
    assert doc["cmps"]["mode"]["options"] == ["normal", "lockdown", "free_passage"]
    assert all(c["retain"] is False for c in doc["cmps"].values() if "command_topic" in c)
    assert len({c["unique_id"] for c in doc["cmps"].values()}) == len(doc["cmps"])
    # with the signing bridge, the button and the select publish where `qrgate cmd bridge` listens
    doc = discovery_payload(device_id="bus-3-gate-2", base_topic="qrgate/bus-3-gate-2", bridge=True)
    assert [doc["cmps"][c]["command_topic"] for c in ("open", "mode")] == [
        "qrgate/bus-3-gate-2/dashboard/open", "qrgate/bus-3-gate-2/dashboard/mode"]


def test_discovery_is_retained_and_republished_when_home_assistant_comes_online(tmp_path, shared_broker,
                                                                                  topic_prefix):
    config, _ = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix)
    topic = f"{topic_prefix}_ha/device/gate-1/config"
    early = Collector(shared_broker.host, shared_broker.port, topic)
    app = build_app(config, MockFactory())
    try:
        assert app.link.wait_ready(10)
        # the discovery is published from the on-connect hooks: wait until it has gone out, so
        # the late subscriber can only get it as the broker's retained copy
        try:
            assert early.wait_until(lambda ms: len(ms) == 1, 10)
        finally:
            early.close()
        late = Collector(shared_broker.host, shared_broker.port, topic)
        try:
            assert late.wait_until(lambda ms: len(ms) == 1, 10)
            first = late.messages[0]
            assert first.retain is True
            doc = first.json()
            assert doc["cmps"]["mode"]["command_topic"] == f"{topic_prefix}/gate-1/cmd/mode"
            publish_raw(shared_broker, f"{topic_prefix}_ha/status", b"online")
            assert late.wait_until(lambda ms: len(ms) == 2, 10)
            assert late.messages[1].json() == doc
        finally:
            late.close()
    finally:
        app.close()
        publish_raw(shared_broker, topic, b"", retain=True)


def test_discovery_can_be_switched_off(tmp_path, shared_broker, topic_prefix):
    config, _ = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix, mqtt={"discovery": False})
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}_ha/#")
    state = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/state")
    app = build_app(config, MockFactory())
    try:
        assert app.link.wait_ready(10)
        # the retained state comes after connect's hooks, where discovery would have been published
        assert state.wait_until(lambda ms: len(ms) >= 1, 10)
        publish_raw(shared_broker, f"{topic_prefix}_ha/status", b"online")
        publish_raw(shared_broker, f"{topic_prefix}_ha/marker", b"x")
        assert collector.wait_until(lambda ms: any(m.topic.endswith("/marker") for m in ms), 10)
        assert [m.topic for m in collector.messages] == [f"{topic_prefix}_ha/status", f"{topic_prefix}_ha/marker"]
    finally:
        app.close()
        collector.close()
        state.close()


def test_retained_state_carries_device_state_mode_and_health(tmp_path, shared_broker, topic_prefix):
    thermal = tmp_path / "temp"
    thermal.write_text("48250\n")
    config, _ = write_site(tmp_path, broker=shared_broker, prefix=topic_prefix)
    collector = Collector(shared_broker.host, shared_broker.port, f"{topic_prefix}/gate-1/state")
    app = build_app(config, MockFactory(), thermal_path=thermal)
    try:
        assert collector.wait_until(lambda ms: any(m.json().get("device_state") == "ready" for m in ms), 10)
        doc = [m for m in collector.messages if m.json().get("device_state") == "ready"][-1].json()
        assert doc["mode"] == "normal" and doc["fire_alarm"] is False
        health = doc["health"]
        assert set(health) == {"backlog", "fps", "decode_p50_ms", "decode_p99_ms", "uptime_s", "cpu_temp_c"}
        assert health["cpu_temp_c"] == 48.25 and health["backlog"] == 0 and health["uptime_s"] >= 0
    finally:
        app.close()
        collector.close()
