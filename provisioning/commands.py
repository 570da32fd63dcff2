"""Operator side of remote commands: sign one command, send it, wait for the gate's answer.

Used by ``qrgate cmd send``. Opens its own short-lived MQTT connection (paho 2.x,
MQTT 5), subscribes to ``<prefix>/<device_id>/response/<name>`` first, then publishes
the signed envelope on ``<prefix>/<device_id>/cmd/<name>`` (QoS 1, never retained, with
a v5 message expiry equal to the envelope's validity) and waits for the response whose
``transaction`` matches.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from firmware.cose import kid_for
from firmware.errors import PublishError
from firmware.remote import MAX_VALIDITY_S, sign_command

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a command goes.

    Attributes:
        host, port: the broker.
        device_id: the gate.
        prefix: the topic prefix (``mqtt.prefix`` on the gate).
        tls_ca, tls_cert, tls_key: TLS files (CA enables TLS).
        username, password: broker credentials, if any.
    """

    host: str
    port: int
    device_id: str
    prefix: str = "qrgate"
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    username: str = ""
    password: str = ""


def build_envelope(private_key: Any, *, device_id: str, command: str, args: dict[str, Any], ttl_s: float,
                   now_wall_s: float | None = None, transaction: str | None = None) -> tuple[bytes, str]:
    """Sign a command valid for ttl_s (at most 30 s) from now. Returns (envelope, transaction).

    Raises:
        ValueError: ttl_s out of range.
    """
    if not 0 < ttl_s <= MAX_VALIDITY_S:
        raise ValueError(f"--ttl-s {ttl_s} must be above 0 and at most {MAX_VALIDITY_S:.0f} s")
    now = time.time() if now_wall_s is None else now_wall_s
    tx = transaction or f"qrgate-cli-{secrets.token_hex(6)}"
    envelope = sign_command(private_key, kid_for(private_key.public_key()).hex(), device_id=device_id,
                            command=command, args=args, nonce=secrets.token_urlsafe(18), issued_at=round(now, 3),
                            expires_at=round(now + ttl_s, 3), transaction=tx)
    return envelope, tx


def send_command(target: Target, command: str, envelope: bytes, transaction: str, *, ttl_s: float,
                 timeout_s: float) -> dict[str, Any] | None:
    """Publish one envelope and wait for its response.

    Returns:
        The response JSON object, or None if none arrived within timeout_s.

    Raises:
        PublishError: the broker cannot be reached or refused the connection/publish.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    base = f"{target.prefix}/{target.device_id}"
    connected, subscribed, answered = threading.Event(), threading.Event(), threading.Event()
    result: dict[str, Any] = {}
    refused: list[str] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"qrgate-cmd-{secrets.token_hex(4)}",
                         protocol=paho.MQTTv5)
    if target.tls_ca:
        client.tls_set(ca_certs=target.tls_ca, certfile=target.tls_cert or None, keyfile=target.tls_key or None,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if target.username:
        client.username_pw_set(target.username, target.password or None)

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
        else:
            c.subscribe(f"{base}/response/{command}", qos=1)
        connected.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("transaction") == transaction:
            result.update(body)
            answered.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(target.host, target.port, keepalive=30, clean_start=True)
    except OSError as err:
        raise PublishError(f"cannot reach the broker at {target.host}:{target.port} ({err}); check --broker") from err
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            raise PublishError(f"broker {target.host}:{target.port} refused the connection "
                               f"({refused[0] if refused else 'no answer'}); check credentials and TLS options")
        if not subscribed.wait(timeout_s):
            raise PublishError(f"could not subscribe to {base}/response/{command}; check the broker ACL")
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = max(1, int(ttl_s))
        info = client.publish(f"{base}/cmd/{command}", envelope, qos=1, retain=False, properties=props)
        info.wait_for_publish(timeout=timeout_s)
        if not info.is_published():
            raise PublishError(f"the broker did not acknowledge the command within {timeout_s} s")
        answered.wait(timeout_s)
        return dict(result) if answered.is_set() else None
    finally:
        client.disconnect()
        client.loop_stop()
