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
every row with ``seq <= N`` delivered (``SqliteOutbox.mark_acked``). It ignores malformed
messages, other device ids, acks that do not move forward, and acks above the highest seq
this outbox ever assigned (a stale ack from before a wiped state directory). PUBACKed rows
not acknowledged within ``app_ack_timeout_s`` are published again (at least once).

The publisher also prunes the outbox periodically and ticks the ``StateReporter``.
"""

from __future__ import annotations

import threading


class Alarms:
    """Named alarms shared by the outbox, the publisher and the status: name -> text.

    Thread-safe. ``set(name, None)`` clears an alarm.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, str] = {}

    def set(self, name: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._active.pop(name, None)
            else:
                self._active[name] = text

    def active(self) -> dict[str, str]:
        """A copy of the active alarms."""
        with self._lock:
            return dict(self._active)
