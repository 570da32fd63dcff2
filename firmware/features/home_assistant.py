"""Home Assistant: the retained device-discovery document and the retained relay topic.

Discovery: one retained device-discovery message on
``<discovery_prefix>/device/<device_id>/config`` (published on every connect, on
``rebirth`` and when Home Assistant announces ``online`` on ``<discovery_prefix>/status``).
With ``mqtt.discovery_bridge`` the button and select point at ``dashboard/<name>``, which
``qrgate cmd bridge`` signs and forwards; the gate itself acts only on signed commands.

Relay: ``<prefix>/<device_id>/relay`` is ``ON`` or ``OFF`` (retained), at every change of the
relay and after every connect.
"""

from __future__ import annotations

import json
from typing import Any

from firmware import __version__
from firmware.core.device_state import Mode
from firmware.ports import Link, Outputs


def discovery_topic(discovery_prefix: str, device_id: str) -> str:
    """``<discovery_prefix>/device/<device_id>/config``."""
    return f"{discovery_prefix}/device/{device_id}/config"


def discovery_payload(*, device_id: str, base_topic: str, venue_id: str = "", bridge: bool = False) -> dict[str, Any]:
    """The Home Assistant device-discovery document (``dev``, ``o``, ``cmps``).

    Components: the ``scan`` event, an ``open`` button and a ``mode`` select, ``relay`` and
    ``camera`` binary sensors, and sensors for scans, backlog, fps, decode p99, CPU
    temperature and the device state. HA cannot sign: with ``bridge`` the button and select
    publish on ``dashboard/<name>``, where ``qrgate cmd bridge`` signs them and forwards them
    to ``cmd/<name>``; without it they publish on ``cmd/<name>`` and the gate refuses their
    raw payloads as ``unsigned``. The gate itself only ever acts on signed commands.
    """
    uid = device_id.replace("-", "_")
    state = f"{base_topic}/state"
    commands = f"{base_topic}/{'dashboard' if bridge else 'cmd'}"

    def sensor(key: str, name: str, template: str, **extra: Any) -> dict[str, Any]:
        return {"p": "sensor", "name": name, "unique_id": f"qrgate_{uid}_{key}", "state_topic": state,
                "value_template": template, **extra}

    cmps: dict[str, Any] = {
        "scan": {"p": "event", "name": "Scan", "unique_id": f"qrgate_{uid}_scan",
                 "state_topic": f"{base_topic}/scan",
                 "event_types": ["granted", "denied", "error", "not_passed"]},
        "open": {"p": "button", "name": "Open", "unique_id": f"qrgate_{uid}_open",
                 "command_topic": f"{commands}/open", "payload_press": "PRESS", "retain": False},
        "mode": {"p": "select", "name": "Mode", "unique_id": f"qrgate_{uid}_mode",
                 "command_topic": f"{commands}/mode", "state_topic": state,
                 "value_template": "{{ value_json.mode }}", "options": [m.value for m in Mode],
                 "retain": False},
        "relay": {"p": "binary_sensor", "name": "Relay", "unique_id": f"qrgate_{uid}_relay",
                  "state_topic": f"{base_topic}/relay", "payload_on": "ON", "payload_off": "OFF"},
        "camera": {"p": "binary_sensor", "name": "Camera problem", "unique_id": f"qrgate_{uid}_camera",
                   "device_class": "problem", "entity_category": "diagnostic", "state_topic": state,
                   "value_template": "{{ 'ON' if value_json.device_state == 'camera_fault' else 'OFF' }}"},
        "scans": sensor("scans", "Scans since start", "{{ value_json.scans }}", state_class="total_increasing"),
        "backlog": sensor("backlog", "Unsent events", "{{ value_json.broker_backlog }}",
                          state_class="measurement", entity_category="diagnostic"),
        "fps": sensor("fps", "Camera fps", "{{ value_json.health.fps }}", state_class="measurement",
                      entity_category="diagnostic"),
        "decode_p99": sensor("decode_p99", "Decode p99", "{{ value_json.health.decode_p99_ms }}",
                             unit_of_measurement="ms", state_class="measurement", entity_category="diagnostic"),
        "cpu_temp": sensor("cpu_temp", "CPU temperature", "{{ value_json.health.cpu_temp_c }}",
                           device_class="temperature", unit_of_measurement="°C", state_class="measurement",
                           entity_category="diagnostic"),
        "state": sensor("state", "Device state", "{{ value_json.device_state }}", entity_category="diagnostic"),
    }
    return {
        "dev": {"ids": [f"qrgate_{uid}"], "name": f"qrgate {device_id}", "mf": "qrgate",
                "mdl": "QR turnstile controller", "sw": __version__,
                **({"sa": venue_id} if venue_id else {})},
        "o": {"name": "qrgate", "sw": __version__},
        "availability_topic": f"{base_topic}/availability",
        "qos": 1,
        "cmps": cmps,
    }


class HomeAssistantDiscovery:
    """Publishes the retained discovery document; republishes when HA says ``online``.

    Args:
        link: the gate's MQTT link.
        topic: the discovery topic (outside the gate's own tree).
        payload: the discovery document.
        status_topic: Home Assistant's birth topic (``<discovery_prefix>/status``).
    """

    def __init__(self, *, link: Link, topic: str, payload: dict[str, Any], status_topic: str) -> None:
        self.link = link
        self.topic = topic
        self.status_topic = status_topic
        self.body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.published = 0

    def start(self) -> None:
        """Publish on every connect and when HA comes online (before the link starts)."""
        self.link.add_on_connect(self.republish)
        self.link.subscribe_absolute(self.status_topic, self.ha_status)

    def stop(self) -> None:
        """Nothing to stop: the link's shutdown ends the subscriptions."""

    def republish(self) -> None:
        """Publish the retained document now (not handed over when disconnected)."""
        self.published += int(bool(self.link.publish_absolute(self.topic, self.body, 1, True)))

    def ha_status(self, topic: str, payload: bytes, retained: bool, props: dict[str, Any]) -> None:
        """Handler for ``<discovery_prefix>/status``: ``online`` means HA restarted."""
        if payload.strip().lower() == b"online":
            self.republish()


class RelayTopic:
    """The retained ``relay`` topic: ``ON``/``OFF`` at every change and after every connect.

    Args:
        link: the gate's MQTT link.
        outputs: the relay.
    """

    def __init__(self, *, link: Link, outputs: Outputs) -> None:
        self.link, self.outputs = link, outputs

    def start(self) -> None:
        """Listen to the relay and publish after every connect (before the link starts)."""
        self.outputs.add_relay_listener(self._publish)
        self.link.add_on_connect(self.republish)

    def stop(self) -> None:
        """Nothing to stop: the relay is released by the shutdown's first step."""

    def republish(self) -> None:
        self._publish(self.outputs.relay_energised())

    def _publish(self, energised: bool) -> None:
        self.link.publish("relay", "ON" if energised else "OFF", qos=1, retain=True)
