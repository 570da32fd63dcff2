"""One request and its answer over MQTT, for the operator tools (adapter: paho-mqtt).

``qrgate cmd send`` and ``qrgate list ... --remote`` both open a short-lived MQTT 5 connection,
subscribe to the gate's response topic first, publish one signed message (QoS 1, never
retained) and wait for the JSON answer whose ``transaction`` matches. This module is
that exchange; the callers build the message and the topics.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.core.errors import PublishError


@dataclass(frozen=True)
class Broker:
    """How to reach the broker.

    Attributes:
        host, port: the broker.
        tls_ca, tls_cert, tls_key: TLS files (a CA enables TLS).
        username, password: broker credentials, if any.
        tls: use TLS even without a CA file (the system's CAs), as ``mqtt.tls`` on a gate.
    """

    host: str
    port: int
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    username: str = ""
    password: str = ""
    tls: bool = False

    @classmethod
    def of_gate(cls, cfg: Any, host_port: str = "") -> Broker:
        """The broker a gate's config names (``[mqtt]``: host, port, TLS files, login), for a
        tool on the gate's side; host_port (``HOST:PORT``) replaces host and port if given.

        Raises:
            ConfigError: no broker, a bad host_port, or an unreadable password file.
        """
        from firmware.adapters.mqtt_link import MqttSettings
        from firmware.core.errors import ConfigError

        s = MqttSettings.from_config(cfg)
        text = host_port or (f"{s.host}:{s.port}" if s.host else "")
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--broker {text!r} must be HOST:PORT (or set [mqtt] host in the config)")
        return cls(host, int(port), tls_ca=s.ca_file, tls_cert=s.cert_file, tls_key=s.key_file,
                   username=s.username, password=s.password or "", tls=s.tls)

    def client(self, client_id_prefix: str) -> Any:
        """A paho 2.x MQTT 5 client for this broker (TLS and login set), not yet connected."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id_prefix}{secrets.token_hex(4)}",
                             protocol=paho.MQTTv5)
        if self.tls or self.tls_ca:
            client.tls_set(ca_certs=self.tls_ca or None, certfile=self.tls_cert or None,
                           keyfile=self.tls_key or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if self.username:
            client.username_pw_set(self.username, self.password or None)
        return client


@dataclass(frozen=True)
class Target:
    """Where a message for one gate goes: the broker, the gate and the topic prefix."""

    broker: Broker
    device_id: str
    prefix: str = "qrgate"

    @property
    def base(self) -> str:
        """``<prefix>/<device_id>``."""
        return f"{self.prefix}/{self.device_id}"


def request(broker: Broker, *, request_topic: str, response_topic: str, payload: bytes, transaction: str,
            timeout_s: float, what: str, client_id_prefix: str, expiry_s: int | None = None,
            refused_hint: str = "") -> dict[str, Any] | None:
    """Publish payload on request_topic and wait for the answer with this transaction.

    Each wait (connect, subscribe, publish acknowledgement, answer) is bounded by timeout_s.

    Args:
        what: the message's name in errors ("the command", "the list").
        client_id_prefix: the MQTT client id is this plus a random suffix.
        expiry_s: MQTT 5 message expiry of the request, or None for none.
        refused_hint: appended to the "refused the connection" error (the fix to try).

    Returns:
        The answer's JSON object, or None if none arrived within timeout_s.

    Raises:
        PublishError: the broker cannot be reached, refused us, refused the subscription
            or did not acknowledge the message.
    """
    answers = exchange(broker, request_topic=request_topic, response_filter=response_topic, payload=payload,
                       transaction=transaction, timeout_s=timeout_s, what=what, client_id_prefix=client_id_prefix,
                       expiry_s=expiry_s, refused_hint=refused_hint, enough=lambda got: len(got) >= 1)
    return answers[0][1] if answers else None


def exchange(broker: Broker, *, request_topic: str, response_filter: str, payload: bytes, transaction: str,
             timeout_s: float, what: str, client_id_prefix: str, expiry_s: int | None = None,
             refused_hint: str = "", retain: bool = False,
             enough: Callable[[list[tuple[str, dict[str, Any]]]], bool] | None = None,
             ) -> list[tuple[str, dict[str, Any]]]:
    """Publish payload and collect every answer with this transaction on response_filter.

    Like ``request``, but for a message many gates answer (a venue-wide list): answers are
    collected until ``enough(answers)`` is true or timeout_s passes after the publish.

    Args:
        response_filter: a topic filter, e.g. ``qrgate/+/response/lists``.
        retain: publish the request retained (only for messages meant for gates that come later).
        enough: stop waiting once it returns True; None waits the whole timeout_s.

    Returns:
        (topic, answer JSON object) pairs in arrival order.

    Raises:
        PublishError: as ``request``.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    connected, subscribed = threading.Event(), threading.Event()
    got: list[tuple[str, dict[str, Any]]] = []
    changed = threading.Condition()
    refused: list[str] = []
    client = broker.client(client_id_prefix)

    # paho callbacks stay tiny: record and notify; the waiting happens below.
    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
        else:
            c.subscribe(response_filter, qos=1)
        connected.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("transaction") == transaction:
            with changed:
                got.append((message.topic, body))
                changed.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=True)
    except OSError as err:
        raise PublishError(f"cannot reach the broker at {broker.host}:{broker.port} ({err}); check --broker") from err
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            raise PublishError(f"broker {broker.host}:{broker.port} refused the connection "
                               f"({refused[0] if refused else 'no answer'}){refused_hint}")
        if not subscribed.wait(timeout_s):
            raise PublishError(f"could not subscribe to {response_filter}; check the broker ACL")
        props = None
        if expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry_s
        info = client.publish(request_topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(timeout=timeout_s)
        if not info.is_published():
            raise PublishError(f"the broker did not acknowledge {what} within {timeout_s} s")
        with changed:
            changed.wait_for(lambda: enough is not None and enough(got), timeout_s)
            return list(got)
    finally:
        client.disconnect()
        client.loop_stop()


def read_retained(broker: Broker, topic: str, *, timeout_s: float, client_id_prefix: str,
                  accept: Callable[[dict[str, Any]], bool] = lambda doc: True) -> dict[str, Any] | None:
    """Read the retained JSON object on topic (a gate's ``state``), waiting at most timeout_s.

    Args:
        accept: the first message (retained or live) for which it returns True is returned.

    Returns:
        The JSON object, or None if none arrived (or none was accepted) within timeout_s.

    Raises:
        PublishError: the broker cannot be reached or refused us.
    """
    from firmware.core.numbers import loads_json_strict

    connected = threading.Event()
    found: list[dict[str, Any]] = []
    arrived = threading.Event()
    refused: list[str] = []
    client = broker.client(client_id_prefix)

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            refused.append(str(reason_code))
        else:
            c.subscribe(topic, qos=1)
        connected.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        try:
            doc = loads_json_strict(message.payload)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(doc, dict) and not found and accept(doc):
            found.append(doc)
            arrived.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=30, clean_start=True)
    except OSError as err:
        raise PublishError(f"cannot reach the broker at {broker.host}:{broker.port} ({err}); check --broker") from err
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            raise PublishError(f"broker {broker.host}:{broker.port} refused the connection "
                               f"({refused[0] if refused else 'no answer'})")
        arrived.wait(timeout_s)
        return found[0] if found else None
    finally:
        client.disconnect()
        client.loop_stop()
