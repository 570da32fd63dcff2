"""``qrgate cmd bridge``: sign Home Assistant's dashboard presses and forward them (adapter: paho-mqtt).

Home Assistant cannot sign, and a gate acts only on signed commands. With
``mqtt.discovery_bridge`` a gate's discovery points the open button and the mode select at
``<prefix>/<device_id>/dashboard/<name>``. This bridge runs where the command key is kept
(the back office, beside Home Assistant), subscribes to ``<prefix>/+/dashboard/+``, checks
each press (``provisioning.commands.read_dashboard_press``), signs a short-lived envelope
with its key and publishes it on ``<prefix>/<device_id>/cmd/<name>`` like ``qrgate cmd send``.
The gates' answers on ``response/<name>`` are logged.

Who may press is decided by the broker ACL on ``<prefix>/+/dashboard/#``: give write access
there to Home Assistant's login only. The session is clean, so a press made while the
bridge was down is never forwarded later.

Usage::

    bridge = CommandBridge(Broker("mqtt.lan", 1883), private_key, prefix="qrgate", gates=("gate-1",))
    bridge.run(stop)               # blocks until stop (a threading.Event) is set
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from typing import Any

from provisioning.commands import DASHBOARD_COMMANDS, DashboardPress, build_envelope, read_dashboard_press
from provisioning.mqtt_request import Broker

log = logging.getLogger(__name__)

TRANSACTION_PREFIX = "bridge-"


class CommandBridge:
    """Forwards dashboard presses as signed commands. ``run`` blocks; paho callbacks only queue.

    Args:
        broker: where the gates and Home Assistant meet.
        private_key: the command key (Ed25519) the gates trust.
        prefix: the gates' ``mqtt.prefix``.
        allowed: which commands to forward (a subset of open, mode, rebirth).
        ttl_s: validity of each signed command (at most 30 s).
        gates: the device ids the bridge signs for (``--gate``); presses for any other gate are ignored.
        venue_id: the venue of those gates (signed into each command).
    """

    def __init__(self, broker: Broker, private_key: Any, *, prefix: str = "qrgate",
                 allowed: tuple[str, ...] = ("open", "mode"), ttl_s: float = 10.0,
                 gates: tuple[str, ...] = (), venue_id: str = "") -> None:
        unknown = [c for c in allowed if c not in DASHBOARD_COMMANDS]
        if unknown or not allowed:
            raise ValueError(f"--allow {','.join(allowed)!r}: choose from {', '.join(DASHBOARD_COMMANDS)}")
        if not gates:
            raise ValueError("name the gates the bridge signs for with --gate ID (one per gate)")
        self.gates, self.venue_id = tuple(gates), venue_id
        self.broker, self.key, self.prefix, self.allowed, self.ttl_s = broker, private_key, prefix, allowed, ttl_s
        self.ready = threading.Event()  # set once subscribed; cleared while disconnected
        self.forwarded = 0
        self.ignored = 0
        self.answers: dict[str, dict[str, Any]] = {}  # transaction -> the gate's answer
        self._messages: queue.Queue[Any] = queue.Queue()

    def run(self, stop: threading.Event) -> None:
        """Connect (retrying), forward presses until stop is set, then disconnect."""
        client = self.broker.client("qrgate-bridge-")

        def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            if reason_code.is_failure:
                log.error("broker refused the bridge: %s", reason_code)
                return
            c.subscribe([(f"{self.prefix}/+/dashboard/+", 1), (f"{self.prefix}/+/response/+", 1)])

        client.on_connect = on_connect
        def on_subscribe(*args: Any) -> None:
            self.ready.set()
            log.info("bridge ready: forwarding %s from %s/+/dashboard/+ as signed commands",
                     ", ".join(self.allowed), self.prefix)

        client.on_subscribe = on_subscribe
        client.on_disconnect = lambda *args: self.ready.clear()
        client.on_message = lambda c, userdata, message: self._messages.put(message)
        client.reconnect_delay_set(1, 30)
        client.connect_async(self.broker.host, self.broker.port, keepalive=30, clean_start=True)
        client.loop_start()
        try:
            while not stop.is_set():
                try:
                    message = self._messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    self._handle(client, message)
                except Exception:  # one bad message must not stop the bridge
                    log.exception("bridge: handling %s failed", message.topic)
        finally:
            client.disconnect()
            client.loop_stop()

    def _handle(self, client: Any, message: Any) -> None:
        if "/response/" in message.topic:
            self._answer(message)
            return
        press = read_dashboard_press(self.prefix, message.topic, message.payload, bool(message.retain),
                                     self.allowed, self.gates)
        if not isinstance(press, DashboardPress):
            self.ignored += 1
            log.warning("bridge: ignored a message on %s: %s", message.topic, press)
            return
        self._forward(client, press)

    def _forward(self, client: Any, press: DashboardPress) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        transaction = f"{TRANSACTION_PREFIX}{secrets.token_hex(6)}"
        envelope, _ = build_envelope(self.key, device_id=press.device_id, command=press.command, args=press.args,
                                     ttl_s=self.ttl_s, transaction=transaction, venue_id=self.venue_id,
                                     prefix=self.prefix)
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = max(1, int(self.ttl_s))
        client.publish(f"{self.prefix}/{press.device_id}/cmd/{press.command}", envelope, qos=1, retain=False,
                       properties=props)
        self.forwarded += 1
        log.info("bridge: %s %s%s signed and sent (transaction %s)", press.device_id, press.command,
                 f" {press.args['mode']}" if "mode" in press.args else "", transaction)

    def _answer(self, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        transaction = body.get("transaction") if isinstance(body, dict) else None
        if not isinstance(transaction, str) or not transaction.startswith(TRANSACTION_PREFIX):
            return  # someone else's command
        self.answers[transaction] = body
        gate = message.topic.split("/")[-3]
        if body.get("status") == "ok":
            log.info("bridge: %s answered ok (transaction %s)", gate, transaction)
        else:
            log.warning("bridge: %s refused: %s (transaction %s)", gate, body.get("error"), transaction)
