"""The paho-mqtt 2.x adapter: one MQTT connection per gate, shared by every feature.

Only this module imports paho. Everything else talks to ``MqttLink``::

    link = MqttLink(MqttSettings.from_config(cfg))
    link.add_on_connect(lambda: link.publish("info", info_json, retain=True))   # on every (re)connect
    link.subscribe("cmd/#", handle_command, qos=1)    # re-subscribed on every reconnect
    link.start()                                      # returns at once; connects in the background
    link.publish("response/health_check", body)       # returns at once; False if not handed over
    link.is_connected()
    link.stop(timeout_s=3)                            # retained "offline", disconnect, loop_stop

Contract for other features:

- ``subscribe(subtopic_filter, handler, qos=1)``: the filter is relative to
  ``<prefix>/<device_id>/`` (MQTT wildcards allowed). ``handler(topic, payload, retained,
  properties)`` gets the full topic, the payload as bytes, the retain flag and a dict of
  MQTT 5 properties (``MessageExpiryInterval``, ``ResponseTopic``, ``CorrelationData``,
  ``UserProperty``...; empty on 3.1.1). Handlers run one at a time on the ``qrgate-mqtt``
  worker thread, never inside a paho callback; an exception in one is logged and
  dropped. Subscriptions are renewed after every reconnect.
- Sessions are always clean (MQTT 5: ``clean_start`` with session expiry 0; 3.1.1:
  ``clean_session``): the broker never queues a command for a gate that was offline.
- ``publish(subtopic, payload, qos=1, retain=False, expiry_s=None)`` hands the message to
  paho and returns True, or returns False at once while disconnected (nothing is queued
  in memory for later: retained state is re-published by the on-connect callbacks and
  scan events come from the durable outbox). ``expiry_s`` sets the MQTT 5 message expiry.
- ``add_on_connect(callback)``: ``callback()`` runs on the worker thread after each
  successful connect, after subscriptions are renewed (SUBACK seen) and ``online`` is
  published; ``wait_ready`` returns once they have run. ``online`` therefore means the gate
  can hear commands.
- ``publish_tracked`` and ``on_ack`` are for the outbox publisher only.

Connection: client id ``qrgate-<device_id>``, MQTT 5 by default (3.1.1 by setting), last
will = retained ``offline`` (QoS 1) on ``<prefix>/<device_id>/availability``, retained
``online`` on connect and ``offline`` on a clean stop. paho reconnects by itself with an
exponential backoff whose start (0.5-1.5 s) and cap (48-60 s) are jittered per process,
so gates do not reconnect in lockstep after a broker restart. TLS with a CA file and an
optional client certificate; username with a password read from a file.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes, bool, dict[str, Any]], None]
AckCallback = Callable[[int, bool, int, str], None]

_PROPERTY_NAMES = ("MessageExpiryInterval", "ResponseTopic", "CorrelationData", "UserProperty",
                   "ContentType", "PayloadFormatIndicator")


@dataclass(frozen=True)
class MqttSettings:
    """Everything the link needs, resolved from ``[mqtt]`` and ``[device]``.

    Attributes:
        device_id: the gate's id (client id ``qrgate-<device_id>`` and topic level).
        host: broker host; empty means no broker (the link is never started).
        port, protocol (``"5"`` or ``"3.1.1"``), prefix, keepalive_s: as in [mqtt].
        tls, ca_file, cert_file, key_file: TLS settings (absolute paths or empty).
        username, password: credentials (password read from mqtt.password_file).
        inflight_max: unacknowledged QoS 1 messages at most (paho's in-flight window).
    """

    device_id: str
    host: str = ""
    port: int = 1883
    protocol: str = "5"
    prefix: str = "qrgate"
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str | None = None
    inflight_max: int = 100

    @classmethod
    def from_config(cls, cfg: Any) -> MqttSettings:
        """Build from a validated Config; reads the password file.

        Raises:
            ConfigError: the password file cannot be read.
        """
        m = cfg.mqtt
        password = None
        if m.password_file:
            path = cfg.resolve(m.password_file, m.password_file)
            try:
                password = path.read_text().strip()
            except OSError as err:
                raise ConfigError(f"mqtt.password_file = {m.password_file!r} cannot be read "
                                  f"({err.strerror}); check the path and that qrgate may read it") from err

        def file(value: str) -> str:
            return str(cfg.resolve(value, value)) if value else ""

        return cls(device_id=cfg.device.id, host=m.host, port=m.port, protocol=m.protocol, prefix=m.prefix,
                   keepalive_s=m.keepalive_s, tls=m.tls, ca_file=file(m.ca_file), cert_file=file(m.cert_file),
                   key_file=file(m.key_file), username=m.username, password=password,
                   inflight_max=m.inflight_max)

    @property
    def base_topic(self) -> str:
        """``<prefix>/<device_id>``."""
        return f"{self.prefix}/{self.device_id}"


def properties_dict(props: Any) -> dict[str, Any]:
    """The MQTT 5 properties of a received message as a plain dict (empty for 3.1.1)."""
    if props is None:
        return {}
    out = {}
    for name in _PROPERTY_NAMES:
        if hasattr(props, name):
            out[name] = getattr(props, name)
    return out


def gate_client(settings: MqttSettings) -> paho.Client:
    """A paho client set up as a gate connects: client id ``qrgate-<device_id>``, the protocol,
    the bounded in-flight window and queue, the retained ``offline`` last will, TLS and login.

    Callbacks, the reconnect policy and the network loop are the caller's (``MqttLink``; the
    fleet bench drives many of these clients from one selector).

    Raises:
        ConfigError: the TLS files cannot be loaded.
    """
    s = settings
    if s.protocol == "5":
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"qrgate-{s.device_id}", protocol=paho.MQTTv5)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"qrgate-{s.device_id}",
                             protocol=paho.MQTTv311, clean_session=True)
    if log.isEnabledFor(logging.DEBUG):
        # paho's own log repeats every failed reconnect at ERROR; ours is rate-limited.
        client.enable_logger(logging.getLogger("firmware.adapters.mqtt_link.paho"))
    # Bounded in memory: the outbox feeds about inflight_max at a time, the rest stays on disk.
    client.max_inflight_messages_set(s.inflight_max)
    client.max_queued_messages_set(s.inflight_max + 200)
    client.will_set(f"{s.base_topic}/availability", "offline", qos=1, retain=True)
    if s.tls:
        try:
            client.tls_set(ca_certs=s.ca_file or None, certfile=s.cert_file or None, keyfile=s.key_file or None)
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            raise ConfigError(f"MQTT TLS files cannot be used (mqtt.ca_file = {s.ca_file!r}, "
                              f"mqtt.cert_file = {s.cert_file!r}, mqtt.key_file = {s.key_file!r}): "
                              f"{err}; "
                              "give PEM files: the CA that signed the broker's certificate, and this "
                              "gate's certificate with its key") from err
    if s.username:
        client.username_pw_set(s.username, s.password)
    return client


def connect_options(settings: MqttSettings) -> dict[str, Any]:
    """The keyword arguments of ``connect``/``connect_async`` for a gate: always a clean session
    (MQTT 5: ``clean_start`` with session expiry 0), so no command waits for an offline gate."""
    if settings.protocol != "5":
        return {}
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    return {"clean_start": True, "properties": props}


def release_paho_sockets(client: Any) -> None:
    """Close the wake-up socket pair paho opens in loop_start.

    paho closes it only in ``Client.__del__``, which the garbage collector may run after the
    sockets themselves were finalised (a ResourceWarning); call after ``loop_stop()``.
    """
    reset = getattr(client, "_reset_sockets", None)
    if reset is not None:
        reset(sockpair_only=True)


class MqttLink:
    """One paho client for the gate, with a worker thread for received messages and hooks.

    Args:
        settings: see MqttSettings.
        rng: randomness for the reconnect jitter (tests pass a seeded one).

    Raises:
        ConfigError: the TLS files cannot be loaded.
        reconnect_min_s, reconnect_max_s: override the jittered backoff bounds (tests).
    """

    def __init__(self, settings: MqttSettings, *, rng: random.Random | None = None,
                 reconnect_min_s: float | None = None, reconnect_max_s: float | None = None) -> None:
        self.settings = settings
        rng = rng or random.Random()
        self._v5 = settings.protocol == "5"
        self._subs: list[tuple[str, Handler, int]] = []
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
        self._connected = threading.Event()
        # Set once subscriptions are confirmed and the on-connect hooks have run; cleared on loss.
        self._ready = threading.Event()
        self._jobs: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._started = False
        self.on_ack: AckCallback | None = None
        self._subacks: set[int] = set()
        self._subacks_cond = threading.Condition()
        self.connects = 0
        self.last_error: str | None = None
        self._client = self._make_client(
            reconnect_min_s if reconnect_min_s is not None else rng.uniform(0.5, 1.5),
            reconnect_max_s if reconnect_max_s is not None else rng.uniform(48.0, 60.0))

    # ------------------------------------------------------------------ set-up

    def _make_client(self, min_s: float, max_s: float) -> paho.Client:
        client = gate_client(self.settings)
        client.reconnect_delay_set(min_delay=min_s, max_delay=max_s)  # type: ignore[arg-type]
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        client.on_connect_fail = self._paho_connect_fail
        client.on_subscribe = self._paho_subscribe
        return client

    def topic(self, subtopic: str) -> str:
        """The full topic ``<prefix>/<device_id>/<subtopic>``."""
        return f"{self.settings.base_topic}/{subtopic}"

    def subscribe(self, subtopic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Subscribe now (if connected) and after every reconnect. Thread-safe; call before or after start."""
        self._subs.append((self.topic(subtopic_filter), handler, qos))
        if self._connected.is_set():
            self._client.subscribe(self.topic(subtopic_filter), qos=qos)

    def subscribe_absolute(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Like ``subscribe`` for a topic outside ``<prefix>/<device_id>/`` (``homeassistant/status``)."""
        self._subs.append((topic_filter, handler, qos))
        if self._connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

    def publish_absolute(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> bool:
        """Like ``publish`` for a topic outside ``<prefix>/<device_id>/`` (Home Assistant discovery)."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)

    def add_on_connect(self, callback: Callable[[], None]) -> None:
        """Run callback() on the worker thread after every successful connect, once
        ``online`` is published and the subscriptions are confirmed."""
        self._on_connect.append(callback)

    def add_on_disconnect(self, callback: Callable[[], None]) -> None:
        """Run callback() on the worker thread after every lost connection."""
        self._on_disconnect.append(callback)

    def start(self) -> None:
        """Start connecting in the background; returns at once. A failing first connect is
        retried like any lost connection (paho's loop thread survives it)."""
        if self._started:
            return
        self._started = True
        self._worker = threading.Thread(target=self._work, name="qrgate-mqtt", daemon=True)
        self._worker.start()
        s = self.settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s, **connect_options(s))
        self._client.loop_start()
        log.info("MQTT: connecting to %s:%d as qrgate-%s (MQTT %s%s)", s.host, s.port, s.device_id,
                 s.protocol, ", TLS" if s.tls else "")
        if not self._v5:
            log.warning("MQTT 3.1.1: a broker that refuses a publish (ACL) still acknowledges it, so such "
                        "events are marked sent; use mqtt.protocol = \"5\" unless the ACL is known to allow "
                        "%s/#", s.base_topic)

    # ------------------------------------------------------------------ paho callbacks: enqueue only

    def _paho_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if reason_code.is_failure:
            self._jobs.put(("refused", str(reason_code)))
            return
        self._connected.set()
        self._jobs.put(("connected",))

    def _paho_connect_fail(self, client: Any, userdata: Any) -> None:
        self._jobs.put(("connect_failed",))

    def _paho_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                         properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._ready.clear()
        if was:
            self._jobs.put(("disconnected", str(reason_code)))

    def _paho_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        on_ack = self.on_ack
        if on_ack is not None:
            on_ack(mid, not reason_code.is_failure, int(reason_code.value), str(reason_code))

    def _paho_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any,
                        properties: Any) -> None:
        with self._subacks_cond:
            self._subacks.add(mid)
            self._subacks_cond.notify_all()

    def _paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._jobs.put(("message", message.topic, bytes(message.payload), bool(message.retain),
                        getattr(message, "properties", None)))

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        failures = 0
        while True:
            job = self._jobs.get()
            kind = job[0]
            try:
                if kind == "stop":
                    return
                if kind == "connected":
                    failures = 0
                    self._after_connect()
                elif kind == "disconnected":
                    if self._started:
                        log.warning("MQTT: connection lost (%s); events wait in the outbox", job[1])
                    else:  # our own clean disconnect at stop
                        log.info("MQTT: disconnected from the broker")
                    self._run_hooks(self._on_disconnect)
                elif kind in ("refused", "connect_failed"):
                    failures += 1
                    self.last_error = job[1] if kind == "refused" else "cannot reach the broker"
                    if failures in (1, 10) or failures % 100 == 0:
                        log.warning("MQTT: connect to %s:%d failed (%s, %d times); retrying with backoff",
                                    self.settings.host, self.settings.port, self.last_error, failures)
                elif kind == "message":
                    self._dispatch(job[1], job[2], job[3], properties_dict(job[4]))
            except Exception:  # a bug in one handler must not stop message handling
                log.exception("MQTT: handling %s failed", kind)

    def _after_connect(self) -> None:
        self.connects += 1
        self.last_error = None
        log.info("MQTT: connected to %s:%d", self.settings.host, self.settings.port)
        wanted = sorted({(topic, qos) for topic, _handler, qos in self._subs})
        if wanted:
            rc, mid = self._client.subscribe(wanted)
            # Hooks run once the broker has confirmed the subscriptions (or after 5 s anyway).
            # The SUBACK may arrive before subscribe() returns, so acks are kept in a set.
            with self._subacks_cond:
                ok = rc == paho.MQTT_ERR_SUCCESS and self._subacks_cond.wait_for(
                    lambda: mid in self._subacks, 5.0)
                self._subacks.clear()
            if not ok:
                log.warning("MQTT: subscriptions not confirmed within 5 s (%d topics)", len(wanted))
        # "online" only once subscribed, so a tool that waits for it can send a command at once.
        self._client.publish(self.topic("availability"), "online", qos=1, retain=True)
        self._run_hooks(self._on_connect)
        if self._connected.is_set():  # the connection may have dropped while the hooks ran
            self._ready.set()

    def _run_hooks(self, hooks: list[Callable[[], None]]) -> None:
        for hook in list(hooks):
            try:
                hook()
            except Exception:  # one broken hook must not skip the others
                log.exception("MQTT: connection hook %r failed", hook)

    def _dispatch(self, topic: str, payload: bytes, retained: bool, props: dict[str, Any]) -> None:
        for sub, handler, _qos in list(self._subs):
            if paho.topic_matches_sub(sub, topic):
                try:
                    handler(topic, payload, retained, props)
                except Exception:  # one broken handler must not stop the others
                    log.exception("MQTT: handler for %s failed", sub)

    # ------------------------------------------------------------------ publishing

    def is_connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or timeout_s passes. Returns is_connected()."""
        return self._connected.wait(timeout_s)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until connected, subscribed (SUBACK seen) and the on-connect hooks have run.

        Unlike wait_connected, a message published by another client after this returns
        reaches this link's handlers. Returns False if timeout_s passes first.
        """
        return self._ready.wait(timeout_s)

    def publish(self, subtopic: str, payload: str | bytes, qos: int = 1, retain: bool = False,
                expiry_s: int | None = None) -> bool:
        """Hand one message to paho; returns at once. False (nothing queued) while disconnected
        or when paho's bounded queue is full."""
        if not self._connected.is_set():
            return False
        props = None
        if expiry_s is not None and self._v5:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = int(expiry_s)
        info = self._client.publish(self.topic(subtopic), payload, qos=qos, retain=retain, properties=props)
        return info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)

    def publish_tracked(self, subtopic: str, payload: str | bytes) -> int | None:
        """Publisher only: QoS 1 publish whose PUBACK comes back through ``on_ack``.

        Returns paho's message id (valid for this client only), or None when paho refused
        to queue it (its queue is full). paho keeps and re-sends it after a reconnect.
        """
        info = self._client.publish(self.topic(subtopic), payload, qos=1, retain=False)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            return None
        return int(info.mid)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Publish retained ``offline`` (waiting at most timeout_s), disconnect, stop the threads.

        Safe to call twice, and when never started."""
        if not self._started:
            return
        self._started = False
        try:
            if self._connected.is_set():
                info = self._client.publish(self.topic("availability"), "offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout=timeout_s)
                except (RuntimeError, ValueError) as err:
                    log.warning("MQTT: offline status not confirmed: %s", err)
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            release_paho_sockets(self._client)
            self._connected.clear()
            self._ready.clear()
            self._jobs.put(("stop",))
            if self._worker is not None:
                self._worker.join(timeout=timeout_s)
