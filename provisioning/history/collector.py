"""The collector: MQTT scan events in, stored once, acknowledged only after the commit.

Usage::

    collector = ScanCollector(store, CollectorSettings(host="127.0.0.1", port=1883))
    collector.run(stop)        # blocks until stop (a threading.Event) is set
    store.close()

paho-mqtt 2.x, MQTT 5, with a persistent session (``clean_start=False`` and a session
expiry) and manual acknowledgement: a PUBACK goes back to the broker only once the event
is committed, so a collector killed between receive and store gets the message again on
its next connection. paho's callbacks only put items on a queue; the thread calling
``run`` parses, stores in batches, acknowledges, logs sequence gaps and runs retention.

Only signed events are stored (issue 10): each message must carry the gate's Ed25519
signature over its exact bytes (``firmware.core.event_signature``) and verify with the key
registered for the topic's ``device_id`` (``qrgate history device add``, or enrolment: the
``provisioned`` event names a provisioning nonce recorded by ``qrgate provision qr --register``
and the key it is signed with). Every field is then validated (``parse_scan``). Whatever
fails (unsigned, unknown device, bad signature, invalid field, or an event the database still
refuses while it answers other queries) goes to the ``quarantine`` table with the reason and
is acknowledged to the broker, so one message never holds back the ones after it; it is
never among the events and never counted in the gate's app-level ack.

Skipped reservations (``firmware.core.seq_skips``): the collector also subscribes (never
shared, so every collector sees them) to the retained ``<prefix>/+/skips``, where a gate whose
fresh outbox jumped over a seq reservation declares the ranges it will never use. A document is
accepted only when it verifies with the key registered for the topic's device, for skips (its
own signature context), and names that device; each range is then kept (``record_skip``:
``seq_skips`` plus a write-off with reason "skipped reservation", idempotent) and the device's
ack is recomputed. Anything else is refused with the reason, logged and kept in the
``quarantine`` table; it writes nothing off, so the hole stays a gap. A gap the collector sees
inside a declared range is logged as a skip, not as missing scans; an event that arrives inside
a declared range (which a gate never does) is stored as usual and logged as a warning.

Application-level acks for gates with ``mqtt.app_ack``: after each committed batch, for each
device with events in it (new or duplicates), the collector publishes a retained QoS 1
``<prefix>/<device_id>/ack``, JSON ``{"device_id": ..., "acked_through": N, "ts": ...}``,
where N is the highest seq such that every seq of that device up to N is in the store
(``HistoryStore.contiguous_through``, so it is right across restarts and with several
collectors on one store). At most one ack a second per device; a device whose ack was held
back gets it on a later turn of the loop. Duplicates count, so a gate that publishes again
because an ack was lost (a broker restarted without persistence) is acknowledged again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.core import event_signature, seq_skips
from firmware.core.errors import StoreError
from firmware.core.seq_skips import SKIPS_SUBTOPIC
from provisioning.history.events import (
    MAX_SCAN_PAYLOAD_BYTES,
    HistoryEvent,
    Rejected,
    bad_signature_reason,
    enrolment_of,
    no_key_reason,
    parse_scan,
    registered_key,
    verifies,
)
from provisioning.history.sql_store import SKIP_REASON
from provisioning.history.store import HistoryStore

log = logging.getLogger(__name__)
lifecycle = logging.getLogger(__name__ + ".lifecycle")  # start, connect, reconnect: shown without -v

DAY_MS = 86_400_000


# A scan event is well under 2 KiB; anything much longer is quarantined unparsed.
MAX_PAYLOAD_BYTES = MAX_SCAN_PAYLOAD_BYTES


# Registered keys are read again at least this often (a `device remove` takes effect).
KEYS_REFRESH_S = 60.0


@dataclass(frozen=True)
class CollectorSettings:
    """How the collector connects and stores.

    Attributes:
        host, port: the broker.
        prefix: topic prefix; the collector subscribes to ``<prefix>/+/scan``.
        shared_group: if set, subscribe to ``$share/<group>/<prefix>/+/scan`` so several
            collectors split the load.
        client_id: MQTT client id; keep it stable, the broker keeps the session under it.
        session_expiry_s: how long the broker keeps the session (and queues events) while
            the collector is away.
        keepalive_s: MQTT keepalive.
        receive_max: at most this many unacknowledged messages in flight from the broker.
        batch_max: at most this many events per database transaction.
        retention_days: delete events older than this; 0 keeps everything.
        retention_interval_s: how often retention runs.
        username, password: broker login (password read from a file by the CLI).
        ca_file, cert_file, key_file: TLS settings; TLS is on when ``ca_file`` is set.
        store_retry_s: wait between attempts when the database refuses a batch.
        publish_acks: publish the retained ``<prefix>/<device_id>/ack`` for gates with
            ``mqtt.app_ack`` (needs publish rights on ``<prefix>/+/ack``).
        ack_min_interval_s: at most one ack per device this often.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "qrgate"
    shared_group: str = ""
    client_id: str = "qrgate-history"
    session_expiry_s: int = 86_400
    keepalive_s: int = 30
    receive_max: int = 1000
    batch_max: int = 500
    retention_days: float = 30.0
    retention_interval_s: float = 3600.0
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    store_retry_s: float = 2.0
    publish_acks: bool = True
    ack_min_interval_s: float = 1.0

    @property
    def topic(self) -> str:
        """The subscription filter."""
        base = f"{self.prefix}/+/scan"
        return f"$share/{self.shared_group}/{base}" if self.shared_group else base

    @property
    def skips_topic(self) -> str:
        """The gates' retained skips documents: never a shared subscription, so every collector
        gets them, retained ones included (MQTT 5 sends no retained message to a shared one)."""
        return f"{self.prefix}/+/{SKIPS_SUBTOPIC}"


@dataclass
class CollectorStats:
    """Counters since start. Read under ``ScanCollector.changed``."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0
    quarantined: int = 0
    enrolled: int = 0
    gaps: int = 0
    store_errors: int = 0
    acks_published: int = 0
    skips_recorded: int = 0
    skips_refused: int = 0
    connected: bool = False
    subscribed: bool = False


@dataclass(frozen=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class ScanCollector:
    """Subscribe to scan events and keep them in a ``HistoryStore``.

    Args:
        store: where events go; used only from the thread that calls ``run``.
        settings: connection and batching settings.
        now_ms: wall clock in Unix ms (receive times and retention cutoffs).
        monotonic_s: monotonic clock (retention schedule).
        changed: the Condition to notify after every batch (several collectors may share
            one); a new one if None.

    ``changed`` is notified after every batch; tests and benches wait on it with
    ``wait_for(lambda: collector.stats.stored >= n, timeout)``.
    """

    def __init__(self, store: HistoryStore, settings: CollectorSettings,
                 now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 monotonic_s: Callable[[], float] = time.monotonic,
                 changed: threading.Condition | None = None) -> None:
        self._store = store
        self.settings = settings
        self._now_ms = now_ms
        self._monotonic_s = monotonic_s
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._generation = 0
        self._high_seq: dict[str, int | None] = {}
        self._ack_due: set[str] = set()          # devices whose ack is held back by the rate limit
        self._ack_next_s: dict[str, float] = {}  # device -> monotonic time its next ack may go
        self._ack_through: dict[str, int] = {}   # device -> last acked_through (where the next scan starts)
        self._keys: dict[str, str] = {}
        self._keys_read_s: float | None = None
        self._skips: dict[str, list[tuple[int, int]]] = {}  # device -> ranges it declared skipped
        self.stats = CollectorStats()
        self.changed = changed or threading.Condition()
        self._client = self._make_client()

    # -- paho side: callbacks only enqueue ---------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             protocol=mqtt.MQTTv5)
        client.manual_ack_set(True)
        client.reconnect_delay_set(1, 30)
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if s.ca_file:
            client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file or None, keyfile=s.key_file or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self._generation += 1  # mids of earlier connections must not be acked on this one
        self._inbox.put(("connect", (str(reason_code), reason_code.is_failure, flags.session_present)))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._inbox.put(("disconnect", str(reason_code)))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._inbox.put(("subscribe", [str(rc) for rc in reason_codes if rc.is_failure]))

    def _on_message(self, client, userdata, msg) -> None:
        self._inbox.put(("msg", _Incoming(msg.topic, msg.payload, msg.mid, msg.qos, self._generation)))

    # -- the run loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Connect, then store events until ``stop`` is set. Returns after disconnecting.

        Events already received but not yet stored stay unacknowledged; the broker sends
        them again to the next collector with the same client id.
        """
        s = self.settings
        lifecycle.info("history collector starting: broker %s:%d, topics %s and %s", s.host, s.port, s.topic,
                       s.skips_topic)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = s.receive_max
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                                   properties=props)
        self._client.loop_start()
        next_prune_s = self._monotonic_s()
        try:
            while not stop.is_set():
                if s.retention_days > 0 and self._monotonic_s() >= next_prune_s:
                    self._prune()
                    next_prune_s = self._monotonic_s() + s.retention_interval_s
                self.step(timeout_s=0.5, stop=stop)
                self._publish_acks(stop)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            with self.changed:
                done = self.stats
                lifecycle.info("history collector stopping: %d events stored, %d duplicates, %d quarantined "
                               "since start", done.stored, done.duplicates, done.quarantined)

    def step(self, timeout_s: float, stop: threading.Event) -> int:
        """Handle what is queued (at most ``batch_max`` messages); wait up to timeout_s for the first.

        Returns:
            The number of scan messages handled.
        """
        try:
            first = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return 0
        messages: list[_Incoming] = []
        item: tuple[str, Any] | None = first
        while item is not None:
            kind, value = item
            if kind == "msg":
                messages.append(value)
            else:
                self._control(kind, value)
            if len(messages) >= self.settings.batch_max:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        if messages:
            self._handle(messages, stop)
        return len(messages)

    def _control(self, kind: str, value: Any) -> None:
        if kind == "connect":
            reason, failed, session_present = value
            if failed:
                log.warning("broker %s:%d refused the connection: %s", self.settings.host,
                            self.settings.port, reason)
                return
            lifecycle.info("connected to %s:%d (session %s); subscribing to %s and %s", self.settings.host,
                           self.settings.port, "resumed" if session_present else "new", self.settings.topic,
                           self.settings.skips_topic)
            self._client.subscribe([(self.settings.topic, 1), (self.settings.skips_topic, 1)])
            with self.changed:
                self.stats.connected = True
                self.changed.notify_all()
        elif kind == "subscribe":
            if value:
                log.error("broker refused the subscription to %s: %s; check its ACL", self.settings.topic,
                          ", ".join(value))
            else:
                lifecycle.info("subscribed to %s and %s", self.settings.topic, self.settings.skips_topic)
            with self.changed:
                self.stats.subscribed = not value
                self.changed.notify_all()
        elif kind == "disconnect":
            log.warning("disconnected from the broker (%s); reconnecting", value)
            with self.changed:
                self.stats.connected = self.stats.subscribed = False
                self.changed.notify_all()

    def _device_of(self, topic: str, tail: str = "/scan") -> str | None:
        head = self.settings.prefix + "/"
        if topic.startswith(head) and topic.endswith(tail):
            device = topic[len(head):-len(tail)]
            return device if device and "/" not in device else None
        return None

    def _handle(self, messages: list[_Incoming], stop: threading.Event) -> None:
        received_ms = self._now_ms()
        skips_tail = "/" + SKIPS_SUBTOPIC
        declarations = [m for m in messages if m.topic.endswith(skips_tail)]
        if declarations and not self._handle_skips(declarations, received_ms, stop):
            return  # stopping while the database was away: leave the batch unacked
        scans = [m for m in messages if not m.topic.endswith(skips_tail)]
        if not scans:
            for msg in declarations:
                if msg.generation == self._generation:
                    self._client.ack(msg.mid, msg.qos)
            self._publish_acks(stop)
            return
        self._handle_scans(messages, scans, received_ms, stop)

    def _handle_skips(self, messages: list[_Incoming], received_ms: int, stop: threading.Event) -> bool:
        """Verify and keep the skips documents; False if stop was set while the database was away."""
        refused: list[tuple[int, str, str, str, bytes]] = []
        recorded = 0
        for msg in messages:
            device = self._device_of(msg.topic, "/" + SKIPS_SUBTOPIC)
            if not msg.payload:
                continue  # a retained document being cleared
            keys = self._registered_keys(device, stop) if device else {}
            if keys is None:
                return False
            problem, skips = _open_skips(device, msg.payload, keys.get(device or ""))
            if problem is not None:
                log.warning("refused a skips message on %s: %s (%d bytes, sha256 %s); nothing is written off",
                            _safe(msg.topic), problem, len(msg.payload), hashlib.sha256(msg.payload).hexdigest()[:12])
                refused.append((received_ms, msg.topic, device or "", f"skips refused: {problem}", msg.payload))
                continue
            assert device is not None
            for skip in skips:
                done = self._retry(lambda d=device, sk=skip: self._store.record_skip(
                    d, sk.first_seq, sk.last_seq, sk.cause, sk.exact, sk.file, sk.declared_at, received_ms), stop)
                if done is None:
                    return False
                new, stored_inside = done
                ranges = self._skips.setdefault(device, [])
                if (skip.first_seq, skip.last_seq) not in ranges:
                    ranges.append((skip.first_seq, skip.last_seq))
                if new:
                    recorded += 1
                    log.warning("%s declared seq %d..%d skipped (%s): written off as %r, not missing scans",
                                device, skip.first_seq, skip.last_seq, seq_skips.describe(skip), SKIP_REASON)
                    if stored_inside and skip.exact:
                        log.warning("%d stored events of %s lie inside seq %d..%d, which the gate declared it never "
                                    "used: they stay stored; check the gate's outbox files", stored_inside, device,
                                    skip.first_seq, skip.last_seq)
            if self.settings.publish_acks:
                self._ack_due.add(device)  # the write-off may let the ack move past the hole
        if refused and self._retry(lambda: self._store.quarantine(refused) or True, stop) is None:
            return False
        with self.changed:
            self.stats.skips_recorded += recorded
            self.stats.skips_refused += len(refused)
            self.changed.notify_all()
        return True

    def _handle_scans(self, messages: list[_Incoming], scans: list[_Incoming], received_ms: int,
                      stop: threading.Event) -> None:
        """Store the scan events of a batch; ``messages`` (scans and skips) are acked after the commit."""
        good: list[HistoryEvent] = []
        source: dict[str, _Incoming] = {}
        quarantine: list[tuple[int, str, str, str, bytes]] = []
        enrolled = 0
        for msg in scans:
            result = self._check(msg, received_ms, stop)
            if result is None:  # stopping while the database was away: leave the batch unacked
                return
            if isinstance(result, tuple):
                result, enrolled = result[0], enrolled + 1
            if isinstance(result, Rejected):
                log.warning("quarantined a message on %s: %s (%d bytes, sha256 %s)", _safe(msg.topic),
                            result.problem, len(msg.payload), hashlib.sha256(msg.payload).hexdigest()[:12])
                quarantine.append((received_ms, msg.topic, self._device_of(msg.topic) or "", result.problem,
                                   msg.payload))
            else:
                good.append(result)
                source.setdefault(result.event_id, msg)
        for device in {ev.device_id for ev in good} - self._high_seq.keys():
            self._high_seq[device] = self._retry(lambda d=device: self._store.max_seq(d), stop)
            declared = self._retry(lambda d=device: self._store.skipped(d), stop)
            if declared is None:
                return
            ranges = self._skips.setdefault(device, [])
            ranges.extend((k.first_seq, k.last_seq) for k in declared if (k.first_seq, k.last_seq) not in ranges)
        stored = self._store_batch(good, stop) if good else ([], [])
        if stored is None:  # stopping before the database took the batch: leave it unacked
            return
        fresh, poison = stored
        for ev, problem in poison:
            msg = source[ev.event_id]
            quarantine.append((received_ms, msg.topic, ev.device_id, problem, msg.payload))
        if quarantine and self._retry(lambda: self._store.quarantine(quarantine) or True, stop) is None:
            return
        self._note_gaps(fresh)
        for msg in messages:
            if msg.generation == self._generation:
                self._client.ack(msg.mid, msg.qos)
        poisoned = {ev.event_id for ev, _ in poison}
        kept = [ev for ev in good if ev.event_id not in poisoned]
        if self.settings.publish_acks:
            self._ack_due.update(ev.device_id for ev in kept)
            self._publish_acks(stop)
        with self.changed:
            self.stats.received += len(scans)
            self.stats.malformed += len(quarantine) - len(poison)
            self.stats.quarantined += len(quarantine)
            self.stats.enrolled += enrolled
            self.stats.stored += len(fresh)
            self.stats.duplicates += len(kept) - len(fresh)
            self.changed.notify_all()
        if fresh or quarantine:
            log.info("stored %d new events (%d duplicates, %d quarantined)", len(fresh), len(kept) - len(fresh),
                     len(quarantine))

    def _check(self, msg: _Incoming, received_ms: int,
               stop: threading.Event) -> HistoryEvent | Rejected | tuple[HistoryEvent, bool] | None:
        """Verify and validate one message. A (event, True) tuple is an event that enrolled its
        device's key; None means stop was set while the database was unreachable."""
        device = self._device_of(msg.topic)
        if device is None:
            return Rejected("topic is not <prefix>/<device>/scan")
        if len(msg.payload) > MAX_PAYLOAD_BYTES:
            return Rejected(f"longer than {MAX_PAYLOAD_BYTES} bytes")
        try:
            sealed = event_signature.unseal(msg.payload)
        except event_signature.SignatureError as err:
            return Rejected(f"unsigned: {err}")
        event = parse_scan(device, sealed.body, received_ms)
        if isinstance(event, Rejected):
            return event
        keys = self._registered_keys(device, stop)
        if keys is None:
            return None
        registered = keys.get(device)
        if registered is not None and verifies(sealed, registered):
            return event
        enrolment = enrolment_of(sealed.body)
        if enrolment is not None and enrolment.public_key != registered and verifies(sealed, enrolment.public_key):
            claimed = self._retry(lambda: self._store.claim_enrolment(
                enrolment.nonce_hex, device, enrolment.public_key, received_ms), stop)
            if claimed is None:
                return None
            if claimed:
                self._keys[device] = enrolment.public_key  # the store logged the registration
                return event, True
            return Rejected(f"enrolment of {device} refused: provisioning nonce unknown, used, or for another gate")
        if registered is None:
            return Rejected(no_key_reason(device))
        return Rejected(bad_signature_reason(device))

    def _registered_keys(self, device: str, stop: threading.Event) -> dict[str, str] | None:
        """The registered keys, read whole at most every ``KEYS_REFRESH_S`` (so a removal takes
        effect) and one device at a time on a miss (a flood of unknown device ids costs one
        indexed read each, never a table scan)."""
        now_s = self._monotonic_s()
        if self._keys_read_s is None or now_s - self._keys_read_s > KEYS_REFRESH_S:
            keys = self._retry(self._store.device_keys, stop)
            if keys is None:
                return None
            self._keys, self._keys_read_s = keys, now_s
        elif device not in self._keys:
            found = self._retry(lambda: (self._store.device_key(device),), stop)
            if found is None:
                return None
            if found[0] is not None:
                self._keys[device] = found[0]
        return self._keys

    def _store_batch(self, good: list[HistoryEvent],
                     stop: threading.Event) -> tuple[list[HistoryEvent], list[tuple[HistoryEvent, str]]] | None:
        """Store a batch; if the database refuses it, store event by event and return the
        events it refuses while it still answers (poison) apart. None if stopping first."""
        try:
            return self._store.add(good), []
        except StoreError as err:
            log.error("%s; storing the batch event by event", err)
            with self.changed:
                self.stats.store_errors += 1
        fresh: list[HistoryEvent] = []
        poison: list[tuple[HistoryEvent, str]] = []
        for ev in good:
            while True:
                try:
                    fresh.extend(self._store.add([ev]))
                    break
                except StoreError as err:
                    if self._store_answers(ev.device_id):
                        log.error("the database refuses event seq %d of %s (%s); it goes to the quarantine",
                                  ev.seq, ev.device_id, str(err)[:200])
                        poison.append((ev, f"refused by the database: {str(err)[:200]}"))
                        break
                    log.error("%s; retrying in %.0f s (events stay unacknowledged)", err,
                              self.settings.store_retry_s)
                    if stop.wait(self.settings.store_retry_s):
                        return None
        return fresh, poison

    def _store_answers(self, device: str) -> bool:
        try:
            self._store.max_seq(device)
            return True
        except StoreError:
            return False

    def _publish_acks(self, stop: threading.Event) -> None:
        """Publish the retained ack of every due device whose rate limit allows it."""
        from firmware.core.events import rfc3339_ms

        now_s = self._monotonic_s()
        due = [d for d in sorted(self._ack_due) if now_s >= self._ack_next_s.get(d, float("-inf"))]
        if not due:
            return
        # One statement for every due device (a fleet's collector acknowledges hundreds a second).
        found = self._retry(lambda: self._store.contiguous_through_many({d: self._ack_through.get(d) for d in due}),
                            stop)
        if found is None:
            return  # stopping while the database was away
        for device in due:
            through = found.get(device)
            if through is None:
                self._ack_due.discard(device)
                continue
            body = json.dumps({"device_id": device, "acked_through": through,
                               "ts": rfc3339_ms(self._now_ms() / 1000.0)}, separators=(",", ":"))
            self._client.publish(f"{self.settings.prefix}/{device}/ack", body, qos=1, retain=True)
            self._ack_through[device] = through
            self._ack_next_s[device] = now_s + self.settings.ack_min_interval_s
            self._ack_due.discard(device)
            with self.changed:
                self.stats.acks_published += 1
                self.changed.notify_all()

    def _retry(self, action: Callable[[], Any], stop: threading.Event) -> Any:
        """Run a store call until it works; None if stop is set first."""
        while True:
            try:
                return action()
            except StoreError as err:
                with self.changed:
                    self.stats.store_errors += 1
                log.error("%s; retrying in %.0f s (events stay unacknowledged)", err, self.settings.store_retry_s)
                if stop.wait(self.settings.store_retry_s):
                    return None

    def _note_gaps(self, fresh: list[HistoryEvent]) -> None:
        for ev in fresh:  # arrival order: a late event is one below what arrived before it
            high = self._high_seq.get(ev.device_id)
            declared = self._skips.get(ev.device_id, [])
            inside = [r for r in declared if r[0] <= ev.seq <= r[1]]
            if inside:
                log.warning("seq %d of %s arrived inside seq %d..%d, which the gate declared skipped (a gate "
                            "never does that): stored; check the gate's outbox files", ev.seq, ev.device_id,
                            *inside[0])
            missing = _uncovered(high + 1, ev.seq - 1, declared) if high is not None and ev.seq > high + 1 else []
            if missing:
                with self.changed:
                    self.stats.gaps += 1
                log.warning("seq gap on %s: %s missing (%d scans); `qrgate history query --gaps` lists the holes "
                            "still open", ev.device_id, ", ".join(f"{a}..{b}" for a, b in missing),
                            sum(b - a + 1 for a, b in missing))
            elif high is not None and ev.seq > high + 1:
                log.info("seq %d..%d of %s: a reservation the gate declared skipped, not missing scans",
                         high + 1, ev.seq - 1, ev.device_id)
            elif high is not None and ev.seq < high:
                log.info("late event on %s: seq %d arrived after %d", ev.device_id, ev.seq, high)
            self._high_seq[ev.device_id] = ev.seq if high is None else max(high, ev.seq)

    def _prune(self) -> None:
        cutoff_ms = self._now_ms() - int(self.settings.retention_days * DAY_MS)
        try:
            self._store.prune(cutoff_ms)
            self._store.optimize()
        except StoreError as err:
            log.error("retention failed: %s; will try again later", err)




def _uncovered(first: int, last: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of first..last outside every range of ``ranges``."""
    parts, start = [], first
    for low, high in sorted(ranges):
        if high < start or low > last:
            continue
        if low > start:
            parts.append((start, low - 1))
        start = max(start, high + 1)
    if start <= last:
        parts.append((start, last))
    return parts


def _open_skips(device: str | None, payload: bytes,
                public_key: str | None) -> tuple[str | None, tuple[seq_skips.SeqSkip, ...]]:
    """(None, skips) for a document that verifies, else (the reason it is refused, ())."""
    if device is None:
        return f"topic is not <prefix>/<device>/{SKIPS_SUBTOPIC}", ()
    if public_key is None:
        return f"no key registered for device {device} (`qrgate history device add`)", ()
    try:
        return None, seq_skips.open_document(device, payload, registered_key(public_key))
    except (seq_skips.SkipsError, event_signature.SignatureError, ValueError) as err:
        return str(err)[:200], ()


def _safe(text: str) -> str:
    """A topic as it may go into a log line: no control characters, at most 200 characters."""
    return "".join(c if c.isprintable() else "?" for c in text[:200])
