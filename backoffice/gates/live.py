"""The gates' live state from the broker: their retained ``availability`` and ``state``.

One short MQTT connection per call (paho 2.x): subscribe to the retained topics of the
wanted devices and to a private marker topic, publish the marker once the subscriptions
are acknowledged, and return when it comes back. The broker delivers a subscription's
retained messages before it handles a later publish from the same client, so when the
marker arrives every retained message has too; no fixed wait.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from backoffice.config import MqttSettings
from firmware.core.errors import PublishError

log = logging.getLogger(__name__)


@dataclass
class GateLive:
    """What the broker holds for one gate (empty when it never connected)."""

    availability: str = ""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def alarms(self) -> list[str]:
        value = self.state.get("alarms")
        return [str(a) for a in value] if isinstance(value, list) else []


def broker_of(settings: MqttSettings) -> Any:
    """``provisioning.mqtt_request.Broker`` for the ``[mqtt]`` section."""
    from pathlib import Path

    from provisioning.mqtt_request import Broker

    password = Path(settings.password_file).read_text(encoding="utf-8").strip() if settings.password_file else ""
    return Broker(settings.host, settings.port, tls_ca=settings.ca_file, tls_cert=settings.cert_file,
                  tls_key=settings.key_file, username=settings.username, password=password, tls=settings.tls)


def read_live(settings: MqttSettings, device_ids: list[str], timeout_s: float = 3.0) -> dict[str, GateLive]:
    """The retained availability and state of each device.

    Blocks at most about 3 × timeout_s (connect, subscribe, marker).

    Raises:
        PublishError: the broker cannot be reached or did not answer in time.
    """
    found = {d: GateLive() for d in device_ids}
    if not device_ids:
        return found
    prefix = settings.prefix
    marker = f"{prefix}/_backoffice/marker/{secrets.token_hex(8)}"
    connected, subscribed, done = threading.Event(), threading.Event(), threading.Event()
    lock = threading.Lock()
    client = broker_of(settings).client("qrgate-backoffice-")
    topics = [(f"{prefix}/{d}/{t}", 1) for d in device_ids for t in ("availability", "state")]

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            c.subscribe([*topics, (marker, 1)])
        connected.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        if message.topic == marker:
            done.set()
            return
        parts = message.topic.split("/")
        device, kind = parts[-2], parts[-1]
        with lock:
            gate = found.get(device)
            if gate is None:
                return
            if kind == "availability":
                gate.availability = message.payload.decode("utf-8", "replace")[:20]
            else:
                try:
                    doc = json.loads(message.payload)
                except ValueError:
                    return
                if isinstance(doc, dict):
                    gate.state = doc

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except OSError as err:
        raise PublishError(f"cannot reach the broker at {settings.host}:{settings.port} ({err})") from err
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or not subscribed.wait(timeout_s):
            raise PublishError(f"the broker at {settings.host}:{settings.port} did not answer")
        client.publish(marker, b"1", qos=1)
        if not done.wait(timeout_s):
            raise PublishError("the broker did not return the marker in time")
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return {d: GateLive(g.availability, dict(g.state)) for d, g in found.items()}
