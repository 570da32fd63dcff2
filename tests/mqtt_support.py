"""Test helpers for MQTT: a subscriber that collects what a real Mosquitto delivers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from firmware.adapters.mqtt_link import release_paho_sockets


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """A paho subscriber on ``<filter>`` that records every message, for assertions.

    ``wait_until(predicate, timeout_s)`` blocks on a condition variable (no sleeping).
    """

    def __init__(self, host: str, port: int, topic_filter: str, client_id: str = "",
                 persistent: bool = False) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._filter = topic_filter
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        if persistent:
            # A server-side consumer: its session (and the messages queued for it) outlives
            # its own reconnects and, with broker persistence, a broker restart.
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect_async(host, port, keepalive=10, clean_start=False, properties=props)
        else:
            self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"collector could not subscribe to {topic_filter} on {host}:{port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(self._filter, qos=1)

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def on(self, suffix: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith("/" + suffix)]

    def scans(self) -> list[dict]:
        return [m.json() for m in self.on("scan")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        release_paho_sockets(self.client)


def scans_with_seqs(seqs: set[int]) -> Callable[[list[Received]], bool]:
    """Predicate: every seq in seqs has arrived on a .../scan topic."""
    def done(messages: list[Received]) -> bool:
        got = {json.loads(m.payload)["seq"] for m in messages if m.topic.endswith("/scan")}
        return seqs <= got
    return done


def publish_raw(broker: Any, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one message (QoS 1) from a separate client and wait for the broker's PUBACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
        release_paho_sockets(client)
