"""Draining the outbox to MQTT, and the retained ``state`` document.

``OutboxPublisher`` runs on one named thread (``qrgate-outbox``). It feeds QoS 1 scan events
to the link in ``seq`` order, at most ``inflight_max`` unacknowledged at a time, and marks an
event sent only when its PUBACK arrives with a success reason code (MQTT 5: below 0x80).
A failure code (for example 0x87 "Not authorized" for an ACL refusal) leaves the event
unsent, raises the ``publish_refused`` alarm and retries after a backoff (5 s doubling to
60 s, and at once after a reconnect). Nothing is marked sent by assumption.

Message ids belong to one paho client and are never stored: a ``mid -> seq`` map lives only
in memory. paho keeps unacknowledged messages across a reconnect and re-sends them itself
(with the same id), so the map is kept across reconnects; an event still unacknowledged
``STALE_S`` after it was handed over on a connection that stayed up is published again, and
after a restart every unsent row is published again. Delivery is therefore at least once,
and consumers drop duplicates on ``event_id`` (or ``(device_id, seq)``).

When a stale event is published again, the id of its first copy moves from the in-flight
map to a short-lived "forgotten" map (kept ``LATE_ACK_KEEP_S``, then dropped, so ids that
never get a PUBACK do not pile up). A late PUBACK for a forgotten id never touches the copy
published again (that copy still occupies the window until its own PUBACK or until it goes
stale), but a success code still marks the event sent: the broker did take that copy. A
late refusal for a forgotten id is ignored; the copy in flight gets its own answer.

paho's ``on_publish`` runs on paho's thread and may fire before ``publish()`` has returned
the id (paho #361), so the callback only puts ``(mid, ok, code)`` on a queue; this thread
reads the queue only after it has recorded the id of everything it published.

Application-level acks (``app_ack_timeout_s`` set, config ``mqtt.app_ack``): the publisher
subscribes to the retained ``<prefix>/<device_id>/ack`` that the consumer (the history
collector) publishes, JSON ``{"device_id": ..., "acked_through": N, "ts": ...}``, and marks
every row with ``seq <= N`` that this gate had PUBACKed delivered (``SqliteOutbox.mark_acked``:
never a row it has not published). It ignores and logs malformed messages (any parsing failure,
deep nesting included, is a refusal with a reason; a payload over ``MAX_ACK_BYTES`` is not
parsed), other device ids, and acks above the highest seq this outbox ever had PUBACKed (a
forged ack, or a stale one from before a wiped state directory). Who may write the ack is the
broker's ACL (only the collector's login may publish ``+/ack``; see the README, "Threat model").
PUBACKed rows not acknowledged within ``app_ack_timeout_s`` are published again (at least once).

Signed events: with a ``seal`` function (the device key, ``firmware.core.event_signature``)
every scan event is published as its stored body sealed with the gate's signature, and the
gate's public key document is published retained on ``<prefix>/<device_id>/key`` after every
connect. Skipped reservations (``firmware.core.seq_skips``): the signed document listing the
seq ranges the outbox jumped over is published retained on ``<prefix>/<device_id>/skips``
after every connect, so the consumer gets it whenever it (re)subscribes, until the gate's
skips file no longer holds them.

The publisher also prunes the outbox periodically and ticks the ``StateReporter``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from firmware.adapters.outbox import SqliteOutbox
from firmware.alarms import Alarms
from firmware.core.errors import StoreError
from firmware.core.seq_skips import SKIPS_SUBTOPIC
from firmware.ports import StatusSource

log = logging.getLogger(__name__)


RETRY_FIRST_S = 5.0


RETRY_MAX_S = 60.0


PRUNE_EVERY_S = 30.0


TICK_S = 0.5


# An event unacknowledged this long on a connection that stayed up is published again
# (a safety net: paho normally re-sends by itself; a duplicate keeps its event_id).
STALE_S = 60.0


# How long the id of a copy given up as stale is remembered for a late PUBACK. Short, so
# the map stays small and a 16-bit paho id that wraps round cannot be mistaken for it.
LATE_ACK_KEEP_S = 5 * STALE_S


# A consumer ack is a short JSON object; anything longer is refused unparsed.
MAX_ACK_BYTES = 1024


class StateReporter:
    """Publishes the retained ``<prefix>/<device_id>/state`` JSON.

    The document is the union of the dicts returned by ``providers`` (called on the
    publisher thread; each must be quick and never block) plus ``ts``. It is published
    when its content changes (at most once a second), at least every ``interval_s``, and
    after every reconnect.

    Args:
        link: the MqttLink.
        providers: the features' status sources, merged in order (later ones win).
        interval_s: the periodic refresh (mqtt.state_interval_s).
        wall: wall clock for ``ts``.
    """

    def __init__(self, link: Any, providers: Sequence[StatusSource], interval_s: float,
                 wall: Callable[[], float] = time.time) -> None:
        self.link = link
        self.providers = tuple(providers)
        self.interval_s = interval_s
        self._wall = wall
        self._last: dict[str, Any] | None = None
        self._last_mono_s = -1e9
        self.published = 0
        self.min_gap_s = 1.0

    def document(self) -> dict[str, Any]:
        """The current state fields (without ``ts``)."""
        doc: dict[str, Any] = {}
        for provider in self.providers:
            try:
                doc.update(provider.status_fields())
            except Exception:  # a broken provider must not stop the state
                log.exception("state provider %s failed", type(provider).__name__)
        return doc

    def force(self) -> None:
        """Publish at the next tick even if nothing changed (after a reconnect)."""
        self._last = None

    def republish(self) -> None:
        """``rebirth``: publish the state again at the next tick."""
        self.force()

    def tick(self, now_mono_s: float) -> None:
        if not self.link.is_connected():
            return
        since_s = now_mono_s - self._last_mono_s
        if self._last is not None and since_s < self.min_gap_s:
            return  # at most one state a second, however busy the gate
        doc = self.document()
        if doc == self._last and since_s < self.interval_s:
            return
        from firmware.core.events import rfc3339_ms

        body = json.dumps({**doc, "ts": rfc3339_ms(self._wall())}, separators=(",", ":"), default=str)
        if self.link.publish("state", body, qos=1, retain=True):
            self._last, self._last_mono_s = doc, now_mono_s
            self.published += 1


class OutboxPublisher:
    """The drain loop. See the module docstring.

    Args:
        outbox: the SqliteOutbox.
        link: the MqttLink (its ``on_ack`` is taken over).
        inflight_max: at most this many scan events unacknowledged.
        alarms: where ``publish_refused`` is raised.
        state: an optional StateReporter ticked on this thread.
        monotonic, wall: clocks (durations and prune age; ``wall`` also for app-ack timeouts,
            which must survive a restart).
        app_ack_timeout_s: None (default): a PUBACK is delivery. A number: subscribe to the
            consumer's ``ack`` topic and publish again what it has not acknowledged within
            this many seconds; the outbox must have been opened with ``app_ack=True``.
        seal: turns a stored event body into the published payload (the device key's
            signature, ``firmware.core.event_signature.seal``); None publishes bodies as stored.
        key_document: the JSON published retained on ``<prefix>/<device_id>/key`` after each
            connect (the device's public key), or None.
        skips_document: the signed seq skips document (``seq_skips.sealed_document``) published
            retained on ``<prefix>/<device_id>/skips`` after each connect, or None (no skips).
    """

    def __init__(self, outbox: SqliteOutbox, link: Any, *, inflight_max: int = 100,
                 alarms: Alarms | None = None, state: StateReporter | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 app_ack_timeout_s: float | None = None,
                 seal: Callable[[bytes], bytes] | None = None,
                 key_document: str | None = None, skips_document: bytes | None = None) -> None:
        self.outbox = outbox
        self._seal = seal
        self.key_document = key_document
        self.skips_document = skips_document
        self.link = link
        self.inflight_max = inflight_max
        self.alarms = alarms or Alarms()
        self.state = state
        self._monotonic = monotonic
        self._wall = wall
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._drained = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: dict[int, int] = {}   # paho mid -> seq, this client only
        self._mid_of: dict[int, int] = {}     # seq -> mid of its copy in flight (inverse of _inflight)
        self._forgotten: dict[int, tuple[int, float]] = {}  # mid -> (seq, when given up), oldest first
        self._outstanding: set[int] = set()   # seqs handed to paho, not yet acknowledged
        self._cursor = 0                      # highest seq handed over (unless rewound)
        self._failed: dict[int, str] = {}     # seq -> refusal text
        self._handed_at: dict[int, float] = {}  # seq -> monotonic time handed to paho
        self._connected_since = 0.0
        # True from this connection's on-connect hook (subscriptions confirmed, state forced)
        # until its loss: the state is published only then, so one connect publishes it once
        self._hooks_ran = False
        self._retry_at = 0.0
        self._retry_s = RETRY_FIRST_S
        self._next_prune = 0.0
        self.sent = 0
        self.refused = 0
        self.max_inflight_seen = 0
        self.queue_refusals = 0
        self.app_ack_timeout_s = app_ack_timeout_s
        self.acked_through = 0       # the highest consumer ack applied by this process
        self.acks_ignored = 0
        self.republished_unacked = 0
        self.changed = threading.Condition()  # notified after every turn of the loop
        link.on_ack = self._on_ack
        if app_ack_timeout_s is not None:
            link.subscribe("ack", self._on_app_ack)
        link.add_on_connect(self._on_connect)
        link.add_on_disconnect(self._on_disconnect)

    # called on paho's / the link's threads: enqueue only
    def _on_ack(self, mid: int, ok: bool, code: int, reason: str) -> None:
        self._inbox.put(("ack", mid, ok, code, reason))

    def _on_app_ack(self, topic: str, payload: bytes, retained: bool, props: dict[str, Any]) -> None:
        self._inbox.put(("app_ack", payload))

    def _on_connect(self) -> None:
        self._inbox.put(("connected",))

    def _on_disconnect(self) -> None:
        self._inbox.put(("disconnected",))

    def wake(self) -> None:
        """Ask the loop to look at the outbox now (after an append). Thread-safe, never blocks."""
        self._inbox.put(("wake",))

    def event_stored(self, event: Any) -> None:
        """Event listener: a new event is in the outbox; publish it soon."""
        self.wake()

    def start(self) -> None:
        """Start the ``qrgate-outbox`` thread."""
        self._thread = threading.Thread(target=self._run, name="qrgate-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread (unsent events stay in the outbox). Safe to call twice."""
        self._stop.set()
        self._inbox.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            if self._thread.is_alive():
                log.warning("outbox publisher did not stop within %.1f s", timeout_s)

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until every event in the outbox is acknowledged, or timeout_s passes.

        Returns True when the outbox is empty of unsent events."""
        deadline = self._monotonic() + timeout_s
        while self.outbox.unsent > 0:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return False
            self._drained.clear()
            self.wake()
            if self.outbox.unsent == 0:
                break
            self._drained.wait(min(remaining, 1.0))
        return True

    @property
    def inflight(self) -> int:
        """Scan events handed to paho and not yet acknowledged."""
        return len(self._outstanding)

    @property
    def tracked_ids(self) -> int:
        """Message ids remembered: the copies in flight plus the stale copies still awaiting a
        late PUBACK. Bounded by ``inflight_max * (1 + LATE_ACK_KEEP_S / STALE_S)``."""
        return len(self._inflight) + len(self._forgotten)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        errors = 0
        while not self._stop.is_set():
            try:
                self.step()
                if errors:
                    errors = 0
                    self.alarms.set("outbox_error", None)
            except StoreError as err:
                errors += 1
                if errors in (1, 10) or errors % 100 == 0:
                    log.error("outbox publisher (%d failures in a row): %s", errors, err)
                    self.alarms.set("outbox_error", str(err))
                self._stop.wait(1.0)
            except Exception:  # the drain thread must survive a bug in one turn
                log.exception("outbox publisher turn failed")
                self._stop.wait(1.0)

    def step(self, timeout_s: float = TICK_S) -> None:
        """One turn of the drain loop: wait up to timeout_s for acks or a wake-up, mark acked
        events sent, feed the window, prune when due, tick the state. Tests drive this."""
        try:
            items = [self._inbox.get(timeout=timeout_s)]
        except queue.Empty:
            items = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        acked: list[int] = []
        app_acked: int | None = None
        for item in items:
            if item[0] == "ack":
                seq = self._inflight.pop(item[1], None)
                if seq is None:
                    late = self._forgotten.pop(item[1], None)
                    if late is not None and item[2]:
                        acked.append(late[0])  # the broker took the stale copy: sent
                    continue  # not ours (state, availability...), or a late refusal
                self._mid_of.pop(seq, None)
                self._outstanding.discard(seq)
                self._handed_at.pop(seq, None)
                if item[2]:
                    acked.append(seq)
                else:
                    self._refused(seq, item[3], item[4])
            elif item[0] == "app_ack":
                through = self._parse_app_ack(item[1])
                if through is not None:
                    app_acked = max(app_acked or 0, through)
            elif item[0] == "disconnected":
                self._hooks_ran = False
            elif item[0] == "connected":
                self._hooks_ran = True
                self._retry_at = 0.0
                self._connected_since = self._monotonic()
                if self.key_document is not None:
                    self.link.publish("key", self.key_document, qos=1, retain=True)
                if self.skips_document is not None:
                    # before the events: a consumer then knows the skips when it sees the jump
                    self.link.publish(SKIPS_SUBTOPIC, self.skips_document, qos=1, retain=True)
                if self.state is not None:
                    self.state.force()
        if acked:
            try:
                changed = self.outbox.mark_sent(acked)
            except StoreError:
                # Not recorded as sent: publish them again later (a duplicate, never a loss).
                self._cursor = min(self._cursor, min(acked) - 1)
                raise
            self.sent += changed  # both copies of a stale event may be acknowledged
            for seq in acked:
                self._failed.pop(seq, None)
            if not self._failed and "publish_refused" in self.alarms.active():
                log.info("broker accepts scan events again")
                self.alarms.set("publish_refused", None)
                self._retry_s = RETRY_FIRST_S
        if app_acked is not None:
            # Applied even when it does not move forward: rows published after an earlier ack
            # through the same seq (requeued, or not yet published then) are covered by it now.
            changed = self.outbox.mark_acked(app_acked)
            self.acked_through = max(self.acked_through, app_acked)
            log.debug("consumer acknowledged through seq %d (%d rows)", app_acked, changed)
        now = self._monotonic()
        if self.link.is_connected() and now >= self._retry_at:
            self._forget_stale(now)
            self._republish_unacked()
            self._feed()
        if self.outbox.unsent == 0:
            self._drained.set()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.outbox.prune(self._wall())
        if self.state is not None and self._hooks_ran:
            # not between CONNACK and the on-connect hook: a state published there would be
            # published again at once by the hook's force()
            self.state.tick(now)
        with self.changed:
            self.changed.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until predicate() is true, checked after each turn of the loop (at least
        every ``TICK_S``), or timeout_s passes. Returns the last value of predicate()."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout=timeout_s)

    def _parse_app_ack(self, payload: bytes) -> int | None:
        """The ``acked_through`` of a consumer ack, or None if it is to be ignored.

        Never raises: whatever the payload holds, a refusal is logged and counted."""
        try:
            problem, through = self._check_app_ack(payload)
        except Exception as err:  # hostile input must never stop the drain loop
            problem, through = f"unreadable ({type(err).__name__})", None
        if problem is not None:
            self.acks_ignored += 1
            log.warning("ignored a consumer ack on %s: %s (%d bytes)", self.link.topic("ack"), problem,
                        len(payload))
            return None
        return through

    def _check_app_ack(self, payload: bytes) -> tuple[str | None, int | None]:
        if len(payload) > MAX_ACK_BYTES:
            return f"longer than {MAX_ACK_BYTES} bytes", None
        try:
            doc = json.loads(payload, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        through = doc.get("acked_through") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or type(through) is not int or through < 0:
            return "not JSON with an integer acked_through", None
        if doc.get("device_id") != self.link.settings.device_id:
            return f"for device {str(doc.get('device_id'))[:64]!r}", None
        published = self.outbox.published_high
        if through > published:
            return (f"acked_through {through} is above the highest seq this gate has published "
                    f"({published}): not an ack of what it sent"), None
        return None, through

    def _republish_unacked(self) -> None:
        if self.app_ack_timeout_s is None:
            return
        lowest = self.outbox.requeue_unacked(self._wall() - self.app_ack_timeout_s)
        if lowest is not None:
            self.republished_unacked += 1
            log.warning("scan events from seq %d were not acknowledged by the consumer within %.0f s; "
                        "publishing them again", lowest, self.app_ack_timeout_s)
            self._cursor = min(self._cursor, lowest - 1)

    def _refused(self, seq: int, code: int, reason: str) -> None:
        self.refused += 1
        first = not self._failed
        self._failed[seq] = f"0x{code:02x} {reason}"
        # Publish it again later, in order, with everything after it that is not outstanding.
        self._cursor = min(self._cursor, seq - 1)
        self._retry_at = self._monotonic() + self._retry_s
        if first:
            text = (f"broker refused scan event seq {seq} with reason 0x{code:02x} ({reason}); "
                    f"events stay in the outbox; check the broker ACL for {self.link.topic('scan')}")
            log.error("%s", text)
            self.alarms.set("publish_refused", text)
            self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)

    def _forget_stale(self, now: float) -> None:
        while self._forgotten:
            mid, (_, at) = next(iter(self._forgotten.items()))
            if now - at <= LATE_ACK_KEEP_S:
                break
            del self._forgotten[mid]  # its PUBACK is not coming; stop waiting for it
        stale = [seq for seq, at in self._handed_at.items()
                 if now - max(at, self._connected_since) > STALE_S]
        if stale:
            log.warning("%d scan events unacknowledged for %.0f s on a live connection; publishing "
                        "them again", len(stale), STALE_S)
            for seq in stale:
                self._outstanding.discard(seq)
                del self._handed_at[seq]
                mid = self._mid_of.pop(seq, None)
                if mid is not None and self._inflight.pop(mid, None) is not None:
                    self._forgotten[mid] = (seq, now)
            self._cursor = min(self._cursor, min(stale) - 1)

    def _feed(self) -> None:
        free = self.inflight_max - len(self._outstanding)
        if free <= 0:
            return
        rows = self.outbox.pending(after_seq=self._cursor, limit=free + len(self._outstanding))
        for seq, body in rows:
            if free <= 0:
                break
            if seq in self._outstanding:
                self._cursor = max(self._cursor, seq)
                continue
            payload = body.encode("utf-8") if self._seal is None else self._seal(body.encode("utf-8"))
            mid = self.link.publish_tracked("scan", payload)
            if mid is None:
                self.queue_refusals += 1
                break  # paho's queue is full; the rest stays on disk
            self._forgotten.pop(mid, None)  # paho's 16-bit ids wrap: the new copy owns this id
            self._inflight[mid] = seq
            self._mid_of[seq] = mid
            self._outstanding.add(seq)
            self._handed_at[seq] = self._monotonic()
            self._cursor = max(self._cursor, seq)
            free -= 1
        self.max_inflight_seen = max(self.max_inflight_seen, len(self._outstanding))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number an ack may hold")
