"""Many gates' MQTT connections on one thread: the fleet bench's network loop.

A gate daemon runs one ``MqttLink`` (paho's loop thread plus a worker thread). A thousand
simulated gates in one process would be two thousand threads taking turns on one GIL, so the
fleet bench drives each gate's own paho client from one selector instead (paho's external
loop: ``loop_read``/``loop_write``/``loop_misc`` and the socket callbacks), on the thread
that also appends the gates' scans and steps their ``OutboxPublisher``\\ s.

Usage flow::

    loop = NetworkLoop()
    link = SelectorLink(settings, loop, on_activity=lambda: dirty.add(gate))
    publisher = OutboxPublisher(outbox, link, ...)   # the real publisher, stepped by the caller
    link.start()
    while running:
        loop.run_once(timeout_s=0.05)               # network, keepalives, reconnects
        ...                                          # step the publishers marked active

``SelectorLink`` offers what ``OutboxPublisher`` uses of the ``Link`` contract (``topic``,
``settings``, ``on_ack``, ``subscribe``, ``add_on_connect``, ``add_on_disconnect``,
``is_connected``, ``publish``, ``publish_tracked``) with ``MqttLink``'s rules: the client comes
from ``gate_client`` (same id, will, in-flight window and queue), a clean session, the
subscriptions renewed and confirmed (SUBACK) before ``online`` is published and the
on-connect hooks run, and a reconnect backoff whose start (0.5-1.5 s) and cap (48-60 s) are
drawn per gate. Handlers and hooks run on the loop's thread and must only enqueue (the
publisher's do). Not thread-safe: everything happens on the thread calling ``run_once``.
"""

from __future__ import annotations

import logging
import random
import selectors
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from firmware.adapters.mqtt_link import MqttSettings, connect_options, gate_client, properties_dict

log = logging.getLogger(__name__)

# Keepalive and reconnect checks run at most this often (paho's loop_misc per client).
MISC_EVERY_S = 1.0


class NetworkLoop:
    """One selector over many ``SelectorLink`` sockets. Call ``run_once`` from one thread only.

    Args:
        monotonic: the clock for keepalives and reconnect times.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._selector = selectors.DefaultSelector()
        self._monotonic = monotonic
        self._links: list[SelectorLink] = []
        self._flush: set[SelectorLink] = set()   # clients with packets to write
        self._next_misc_s = 0.0

    def add(self, link: SelectorLink) -> None:
        self._links.append(link)

    def watch(self, fileobj: Any, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on this thread when ``fileobj`` is readable."""
        self._selector.register(fileobj, selectors.EVENT_READ, callback)

    def open_socket(self, link: SelectorLink, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, link)

    def close_socket(self, sock: Any) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def want_write(self, link: SelectorLink) -> None:
        self._flush.add(link)

    def no_write(self, link: SelectorLink, sock: Any) -> None:
        self._flush.discard(link)
        try:
            if self._selector.get_key(sock).events & selectors.EVENT_WRITE:
                self._selector.modify(sock, selectors.EVENT_READ, link)
        except (KeyError, ValueError):
            pass

    def run_once(self, timeout_s: float) -> None:
        """Wait up to timeout_s for socket events, then read, write, keep alive and reconnect."""
        for key, mask in self._selector.select(timeout_s if not self._flush else 0.0):
            target = key.data
            if not isinstance(target, SelectorLink):
                target()
                continue
            if mask & selectors.EVENT_READ:
                target.client.loop_read()
            if mask & selectors.EVENT_WRITE:
                target.client.loop_write()
        self.flush()
        now_s = self._monotonic()
        if now_s >= self._next_misc_s:
            self._next_misc_s = now_s + MISC_EVERY_S
            for link in self._links:
                link.misc(now_s)
            self.flush()

    def flush(self) -> None:
        """Write what the clients have queued; a socket that cannot take it all waits for EVENT_WRITE."""
        while self._flush:
            link = self._flush.pop()
            sock = link.client.socket()
            if sock is None:
                continue
            link.client.loop_write()
            if link.client.want_write():
                try:
                    self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, link)
                except (KeyError, ValueError):
                    pass
                if link in self._flush:  # re-added by paho's callback: the selector now watches it
                    self._flush.discard(link)

    def close(self) -> None:
        self._selector.close()


class SelectorLink:
    """One gate's MQTT connection driven by a ``NetworkLoop`` (see the module docstring).

    Args:
        settings: the gate's MQTT settings (``MqttSettings``).
        loop: the network loop that owns the socket.
        on_activity: called after anything that may give the publisher work (an ack, a
            message, a connect or a loss), so the caller steps it.
        rng: randomness for the reconnect jitter.
    """

    def __init__(self, settings: MqttSettings, loop: NetworkLoop, on_activity: Callable[[], None],
                 rng: random.Random | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        rng = rng or random.Random()
        self.settings = settings
        self._loop = loop
        self._activity = on_activity
        self._monotonic = monotonic
        self._backoff_min_s = rng.uniform(0.5, 1.5)
        self._backoff_max_s = rng.uniform(48.0, 60.0)
        self._backoff_s = 0.0
        self._reconnect_at: float | None = None
        self._subs: list[tuple[str, Callable[..., None], int]] = []
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
        self._connected = False
        self._sub_mid: int | None = None
        self.on_ack: Callable[[int, bool, int, str], None] | None = None
        self.connects = 0
        self.disconnects = 0
        self.client = gate_client(settings)
        c = self.client
        c.on_connect = self._paho_connect
        c.on_disconnect = self._paho_disconnect
        c.on_publish = self._paho_publish
        c.on_message = self._paho_message
        c.on_subscribe = self._paho_subscribe
        c.on_socket_open = lambda client, userdata, sock: loop.open_socket(self, sock)
        c.on_socket_close = lambda client, userdata, sock: loop.close_socket(sock)
        c.on_socket_register_write = lambda client, userdata, sock: loop.want_write(self)
        c.on_socket_unregister_write = lambda client, userdata, sock: loop.no_write(self, sock)
        loop.add(self)

    # -- the Link contract the publisher uses ---------------------------------------------------
    def topic(self, subtopic: str) -> str:
        return f"{self.settings.base_topic}/{subtopic}"

    def subscribe(self, subtopic_filter: str, handler: Callable[..., None], qos: int = 1) -> None:
        self._subs.append((self.topic(subtopic_filter), handler, qos))

    def add_on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def add_on_disconnect(self, callback: Callable[[], None]) -> None:
        self._on_disconnect.append(callback)

    def is_connected(self) -> bool:
        return self._connected

    def publish(self, subtopic: str, payload: str | bytes, qos: int = 1, retain: bool = False,
                expiry_s: int | None = None) -> bool:
        if not self._connected:
            return False
        info = self.client.publish(self.topic(subtopic), payload, qos=qos, retain=retain)
        return info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN)

    def publish_tracked(self, subtopic: str, payload: str | bytes) -> int | None:
        info = self.client.publish(self.topic(subtopic), payload, qos=1, retain=False)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            return None
        return int(info.mid)

    # -- connecting -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (the first attempt now; failures are retried with the backoff)."""
        s = self.settings
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive_s, **connect_options(s))
        self._reconnect_at = self._monotonic()
        self.misc(self._monotonic())

    def stop(self) -> None:
        """Disconnect cleanly (the will is not sent); unsent events stay in the outbox."""
        self._reconnect_at = None
        if self._connected:
            self.client.publish(self.topic("availability"), "offline", qos=1, retain=True)
            self.client.disconnect()
            self._loop.flush()
        self._connected = False
        self.client._sock_close()  # noqa: SLF001 - paho's external-loop clients close their own socket

    def misc(self, now_s: float) -> None:
        """Keepalive (paho's loop_misc) and a reconnect when one is due."""
        if self.client.socket() is not None:
            self.client.loop_misc()
            return
        if self._reconnect_at is None or now_s < self._reconnect_at:
            return
        try:
            self.client.reconnect()
        except OSError as err:
            self._schedule_reconnect(now_s, str(err))

    def _schedule_reconnect(self, now_s: float, why: str) -> None:
        self._backoff_s = (self._backoff_min_s if not self._backoff_s
                           else min(self._backoff_max_s, self._backoff_s * 2))
        self._reconnect_at = now_s + self._backoff_s
        log.debug("%s: reconnect in %.1f s (%s)", self.settings.device_id, self._backoff_s, why)

    # -- paho callbacks (on the loop's thread) ----------------------------------------------------
    def _paho_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._schedule_reconnect(self._monotonic(), str(reason_code))
            return
        self._connected = True
        self._backoff_s = 0.0
        self.connects += 1
        wanted = sorted({(topic, qos) for topic, _h, qos in self._subs})
        if wanted:
            rc, self._sub_mid = client.subscribe(wanted)
            if rc != paho.MQTT_ERR_SUCCESS:
                self._sub_mid = None
                self._ready()
        else:
            self._ready()

    def _paho_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid == self._sub_mid:
            self._sub_mid = None
            self._ready()

    def _ready(self) -> None:
        """Subscribed: ``online``, then the hooks (the publisher's ``connected``), as MqttLink does."""
        self.client.publish(self.topic("availability"), "online", qos=1, retain=True)
        for hook in list(self._on_connect):
            hook()
        self._activity()

    def _paho_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected
        self._connected = False
        self._sub_mid = None
        if self._reconnect_at is not None:  # not our own stop
            self._schedule_reconnect(self._monotonic(), str(reason_code))
        if was:
            self.disconnects += 1
            for hook in list(self._on_disconnect):
                hook()
            self._activity()

    def _paho_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        on_ack = self.on_ack
        if on_ack is not None:
            on_ack(mid, not reason_code.is_failure, int(reason_code.value), str(reason_code))
            self._activity()

    def _paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        props = properties_dict(getattr(message, "properties", None))
        for sub, handler, _qos in list(self._subs):
            if paho.topic_matches_sub(sub, message.topic):
                handler(message.topic, bytes(message.payload), bool(message.retain), props)
        self._activity()
