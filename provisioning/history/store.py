"""Where the history keeps events: one small interface, SQLite and PostgreSQL behind it.

``open_store(url)`` picks the adapter: a plain path or ``sqlite:///path`` gives
``SqliteHistoryStore`` (``sqlite_store``), ``postgresql://...`` gives
``PostgresHistoryStore`` (``pg_store``, psycopg 3). Both run the same SQL for every query
(``SqlHistoryStore`` below); only connecting, the table types and the batch insert differ.

Every public method of a store may be called from any thread (one lock per store).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from firmware.core.errors import ConfigError
from provisioning.history.events import HistoryEvent
from provisioning.history.query import Filter, Gap, Page, SkippedReservation, WriteOff
from provisioning.history.sql_store import SqlHistoryStore

log = logging.getLogger(__name__)


class HistoryStore(Protocol):
    """Durable storage for scan history. Methods block on the database only."""

    def add(self, events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
        """Store the events that are not stored yet (by ``event_id``) in one transaction.

        Returns only after the transaction is committed.

        Returns:
            The events that were new, in the order given.

        Raises:
            StoreError: the database refused or is unreachable; nothing was stored.
        """
        ...

    def page(self, flt: Filter, page: int = 1, page_size: int = 50) -> Page:
        """Return the total count and one page of matching events, newest first."""
        ...

    def rows(self, flt: Filter) -> Iterator[HistoryEvent]:
        """Yield every matching event, newest first, reading in batches."""
        ...

    def gaps(self, device: str = "") -> list[Gap]:
        """Return the open holes in each device's stored ``seq`` numbers (all devices if empty):
        missing seqs that are not written off."""
        ...

    def write_off(self, device: str, first_seq: int, last_seq: int, reason: str, now_ms: int) -> WriteOff:
        """Declare a hole lost for good, so it stops holding back the device's acks.

        The range must lie inside a known gap: no stored event in it, a stored event below and
        above it, and no overlap with an earlier write-off. An event that arrives later inside
        the range is still stored as usual.

        Raises:
            ConfigError: the range is not a known gap (the message says why), or reason is empty.
            StoreError: the database refused.
        """
        ...

    def write_offs(self, device: str = "") -> list[WriteOff]:
        """Return the written-off ranges, by device and seq (all devices if empty)."""
        ...

    def record_skip(self, device: str, first_seq: int, last_seq: int, cause: str, exact: bool, file: str,
                    declared_at: str, now_ms: int) -> tuple[bool, int]:
        """Keep a skipped reservation a gate declared in a verified skips document, and write
        the range off with reason "skipped reservation". Idempotent on (device, first_seq).

        Returns:
            (True if it was new, how many stored events lie inside the range).

        Raises:
            StoreError: the database refused.
        """
        ...

    def skipped(self, device: str = "") -> list[SkippedReservation]:
        """Return the skipped reservations gates declared, by device and seq (all if empty)."""
        ...

    def sources(self) -> list[tuple[str, str]]:
        """Return the (venue_id, device_id) pairs ever stored, sorted."""
        ...

    def max_seq(self, device: str) -> int | None:
        """Return the highest stored ``seq`` of a device, or None if it has no events."""
        ...

    def contiguous_through(self, device: str, from_seq: int | None = None) -> int | None:
        """Return the highest ``seq`` N of a device such that every seq from its lowest stored
        seq (or from ``from_seq``, a value this method returned before) up to N is stored or
        written off: the seq before its first open gap, or its max seq without open gaps. None
        if it has no events.

        Costs one index probe per stored seq between the start and N, so callers pass the
        previous answer as ``from_seq``.
        """
        ...

    def contiguous_through_many(self, starts: dict[str, int | None]) -> dict[str, int | None]:
        """``contiguous_through`` for several devices (device -> ``from_seq`` or None) in as few
        statements as possible; a device with no events maps to None."""
        ...

    def device_keys(self) -> dict[str, str]:
        """Return every registered device's public key (raw Ed25519, base64url), by device id."""
        ...

    def device_key(self, device: str) -> str | None:
        """Return one device's registered public key, or None."""
        ...

    def register_device(self, device: str, public_key: str, source: str, now_ms: int) -> None:
        """Register (or replace) the key the device's scan events must verify with."""
        ...

    def claim_enrolment(self, nonce_hex: str, device: str, public_key: str, now_ms: int) -> bool:
        """Use a provisioning nonce recorded by ``add_enrolment`` for this device, registering
        its key. False if unknown, bound to another device, or used by another device or key."""
        ...

    def quarantine(self, rows: Sequence[tuple[int, str, str, str, bytes]]) -> None:
        """Keep messages that are not stored as events, with the reason (never among the events).

        Args:
            rows: (received_ms, topic, device_id from the topic, reason, payload).
        """
        ...

    def prune(self, before_ms: int, batch_rows: int = 5000) -> int:
        """Delete events older than ``before_ms`` in batches of ``batch_rows``, one commit each.

        An event is old when both its gate timestamp and its receive time are before
        ``before_ms``, so a gate with a wrong clock cannot get its fresh scans deleted.

        Returns:
            How many events were deleted.
        """
        ...

    def optimize(self) -> None:
        """Refresh the query planner's statistics. Cheap; the collector runs it after retention."""
        ...

    def close(self) -> None:
        """Close the connection. Safe to call twice."""
        ...


def parse_db_url(url: str) -> tuple[str, str]:
    """Split a ``--db`` value into (kind, target): ``("sqlite", path)`` or ``("postgresql", url)``.

    Raises:
        ConfigError: an unknown scheme.
    """
    text = url.strip()
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql", text
    if text.startswith("sqlite:///"):
        return "sqlite", text[len("sqlite://"):]
    if text.startswith("sqlite://"):
        return "sqlite", text[len("sqlite://"):]
    if text.startswith("sqlite:"):
        return "sqlite", text[len("sqlite:"):]
    if "://" in text or not text:
        raise ConfigError(f"--db {url!r} is not a database; give a file path, sqlite:///path/history.sqlite "
                          "or postgresql://user@host/dbname")
    return "sqlite", text


def open_store(url: str, readonly: bool = False) -> SqlHistoryStore:
    """Open (and create the tables of) the store named by ``url``.

    Args:
        url: a path, ``sqlite:///path`` or ``postgresql://...``.
        readonly: refuse writes at the database level (the web page uses this).

    Raises:
        ConfigError: a bad URL.
        StoreError: the database cannot be opened or created.
    """
    kind, target = parse_db_url(url)
    if kind == "postgresql":
        from provisioning.history.pg_store import PostgresHistoryStore

        return PostgresHistoryStore(target, readonly=readonly)
    from provisioning.history.sqlite_store import SqliteHistoryStore

    return SqliteHistoryStore(Path(target), readonly=readonly)
