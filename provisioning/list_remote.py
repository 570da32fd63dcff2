"""Sending a signed list message to a running gate over MQTT and waiting for its answer.

The tool side of ``firmware.list_updates``: publish on ``<prefix>/<device>/lists/<kind>``
(QoS 1, never retained) and wait for the JSON answer with the same transaction on
``<prefix>/<device>/response/lists``.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from firmware.errors import PublishError


@dataclass(frozen=True)
class ListTarget:
    """Where the list goes: broker, gate and topic prefix."""

    host: str
    port: int
    device_id: str
    prefix: str = "qrgate"


def send_list(target: ListTarget, kind: str, message: bytes, transaction: str, *,
              timeout_s: float) -> dict[str, Any] | None:
    """Publish one signed list message and wait for the gate's answer.

    Returns:
        The answer (``status``, ``data``, ``error``, ``transaction``), or None if none
        arrived within timeout_s.

    Raises:
        PublishError: the broker cannot be reached, refused us, or did not take the message.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    base = f"{target.prefix}/{target.device_id}"
    connected, subscribed, answered = threading.Event(), threading.Event(), threading.Event()
    answer: dict[str, Any] = {}
    refused: list[str] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"qrgate-list-{secrets.token_hex(4)}",
                         protocol=paho.MQTTv5)

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
        else:
            c.subscribe(f"{base}/response/lists", qos=1)
        connected.set()

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("transaction") == transaction:
            answer.update(body)
            answered.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(target.host, target.port, keepalive=30, clean_start=True)
    except OSError as err:
        raise PublishError(f"cannot reach the broker at {target.host}:{target.port} ({err}); check --broker") from err
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            raise PublishError(f"broker {target.host}:{target.port} refused the connection "
                               f"({refused[0] if refused else 'no answer'})")
        if not subscribed.wait(timeout_s):
            raise PublishError(f"could not subscribe to {base}/response/lists; check the broker ACL")
        info = client.publish(f"{base}/lists/{kind}", message, qos=1, retain=False)
        info.wait_for_publish(timeout=timeout_s)
        if not info.is_published():
            raise PublishError(f"the broker did not acknowledge the list within {timeout_s} s")
        answered.wait(timeout_s)
        return dict(answer) if answered.is_set() else None
    finally:
        client.disconnect()
        client.loop_stop()
