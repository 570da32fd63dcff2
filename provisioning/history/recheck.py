"""`qrgate history quarantine --recheck`: store the quarantined events that verify now.

The collector keeps what it cannot store in the ``quarantine`` table, most often a gate's events
that arrived before its key was registered (``qrgate history device add``). Once the key is
there, ``recheck_quarantine`` runs every kept message through the collector's checks again: the
signature over the exact bytes with the key **now** registered for the topic's device, then
``parse_scan`` (every field, ``device_id`` against the topic's). What verifies is stored once
by ``event_id`` (with its sealed contact, if any) and leaves the quarantine; since the gap report
is computed from the stored events, the holes those events fill close. The rest stays, with the
reason this check found. Enrolment (a ``provisioned`` event claiming a provisioning nonce) is
not replayed here: register the key with ``device add``.

Safe to run while a collector runs and to run again: the events are stored before their
quarantine rows are deleted, and storing an event twice adds nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from firmware.core import event_signature
from firmware.core.errors import StoreError
from provisioning.history.events import (
    MAX_SCAN_PAYLOAD_BYTES,
    HistoryEvent,
    Rejected,
    bad_signature_reason,
    no_key_reason,
    parse_scan,
    verifies,
)
from provisioning.history.sql_store import QuarantinedMessage, SqlHistoryStore

log = logging.getLogger(__name__)

BATCH_MESSAGES = 500
# The collector's own limit: a longer message was quarantined unparsed.


@dataclass
class RecheckResult:
    """What a re-check found.

    Attributes:
        checked: quarantined messages looked at.
        stored: events that were new to the history.
        duplicates: events that verified but were stored already, or twice in the quarantine (their rows
            leave the quarantine too).
        kept: messages left in the quarantine.
        kept_reasons: how many were kept for each reason.
        devices: the devices whose events were stored.
    """

    checked: int = 0
    stored: int = 0
    duplicates: int = 0
    kept: int = 0
    kept_reasons: Counter[str] = field(default_factory=Counter)
    devices: set[str] = field(default_factory=set)


def recheck_message(message: QuarantinedMessage, keys: dict[str, str]) -> HistoryEvent | Rejected:
    """Check one quarantined message as the collector would now. Pure apart from the key parsing.

    Args:
        message: the quarantined message.
        keys: device_id -> registered public key text (``HistoryStore.device_keys``).

    Returns:
        The event to store, or why it still cannot be stored.
    """
    device = message.device_id
    if not device or not message.topic.endswith(f"/{device}/scan"):
        return Rejected("topic is not <prefix>/<device>/scan")
    if message.payload_bytes > len(message.payload) or message.payload_bytes > MAX_SCAN_PAYLOAD_BYTES:
        return Rejected(f"longer than {MAX_SCAN_PAYLOAD_BYTES} bytes")
    try:
        sealed = event_signature.unseal(message.payload)
    except event_signature.SignatureError as err:
        return Rejected(f"unsigned: {err}")
    registered = keys.get(device)
    if registered is None:
        return Rejected(no_key_reason(device))
    if not verifies(sealed, registered):
        return Rejected(bad_signature_reason(device))
    return parse_scan(device, sealed.body, message.received_ms)


def recheck_quarantine(store: SqlHistoryStore, device: str = "", batch: int = BATCH_MESSAGES) -> RecheckResult:
    """Re-check the quarantine (one device's, if given) against the keys registered now.

    Each batch: the events that verify are stored (once by ``event_id``), then their rows are
    deleted from the quarantine; the other rows get the reason found now. An event the database
    refuses while it answers stays in the quarantine with the database's reason.

    Raises:
        StoreError: the database cannot be read or written (what was done before stays done).
    """
    keys = store.device_keys()
    result = RecheckResult()
    after = 0
    while True:
        messages = store.quarantined_messages(after, device, batch)
        if not messages:
            return result
        after = messages[-1].id
        verified: list[tuple[QuarantinedMessage, HistoryEvent]] = []
        kept: list[tuple[int, str]] = []
        for message in messages:
            outcome = recheck_message(message, keys)
            if isinstance(outcome, Rejected):
                kept.append((message.id, outcome.problem))
            else:
                verified.append((message, outcome))
        released, refused = _store(store, verified, result)
        kept.extend(refused)
        store.release_quarantined(released)
        store.set_quarantine_reasons(kept)
        result.checked += len(messages)
        result.kept += len(kept)
        result.kept_reasons.update(reason for _, reason in kept)


def _store(store: SqlHistoryStore, verified: list[tuple[QuarantinedMessage, HistoryEvent]],
           result: RecheckResult) -> tuple[list[int], list[tuple[int, str]]]:
    """Store the verified events; returns the rows to release and (row, reason) of those refused."""
    if not verified:
        return [], []
    events = [event for _, event in verified]
    try:
        fresh_ids = {ev.event_id for ev in store.add(events)}
        refused: list[tuple[int, str]] = []
        stored = verified
    except StoreError as err:
        # One event the database refuses must not hold back the others: store them one by one.
        log.error("%s; storing the re-checked events one by one", err)
        fresh_ids, refused, stored = set(), [], []
        for message, event in verified:
            try:
                fresh_ids.update(ev.event_id for ev in store.add([event]))
                stored.append((message, event))
            except StoreError as one:
                if not _answers(store, event.device_id):
                    raise
                refused.append((message.id, f"refused by the database: {str(one)[:200]}"))
    counted: set[str] = set()
    for _, event in stored:
        if event.event_id in fresh_ids and event.event_id not in counted:
            result.stored += 1
            result.devices.add(event.device_id)
        else:  # stored before, or the same event quarantined twice (a redelivery)
            result.duplicates += 1
        counted.add(event.event_id)
    return [message.id for message, _ in stored], refused


def _answers(store: SqlHistoryStore, device: str) -> bool:
    try:
        store.max_seq(device)
        return True
    except StoreError:
        return False
