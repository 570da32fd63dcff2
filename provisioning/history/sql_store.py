"""The SQL history store shared by SQLite and PostgreSQL: schema, queries, gaps, write-offs, prune.

Only connecting, the table types and the batch insert differ between the two adapters
(``sqlite_store``, ``pg_store``), which subclass ``SqlHistoryStore``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from firmware.core.errors import ConfigError, StoreError
from provisioning.history.events import COLUMNS, HistoryEvent
from provisioning.history.query import Filter, Gap, Page, SkippedReservation, WriteOff, build_where

log = logging.getLogger(__name__)
# who may sign a gate's events: one line per change, shown without -v (firmware.adapters.logsetup)
registry = logging.getLogger("provisioning.history.registry")


SCHEMA_VERSION = 1


EXPORT_BATCH_ROWS = 2000


_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM events"


_ORDER = " ORDER BY ts_ms DESC, event_id DESC"


_GAPS = (
    "SELECT device_id, seq, ts, next_seq, next_ts FROM ("
    " SELECT device_id, seq, ts,"
    " LEAD(seq) OVER (PARTITION BY device_id ORDER BY seq) AS next_seq,"
    " LEAD(ts) OVER (PARTITION BY device_id ORDER BY seq) AS next_ts"
    " FROM events{where}) AS runs"
    " WHERE next_seq > seq + 1 ORDER BY device_id, seq"
)


# Each device's lowest stored seq, with its time, and the oldest event time ever stored for the
# device (``sources.first_ms`` is never lowered by retention): a leading hole is open only while
# the lowest stored event is still the oldest one ever stored, i.e. nothing was pruned before it.
# The minimum per device is taken once (GROUP BY), not once per stored row: with PostgreSQL's
# partitions by day a correlated min() probed every day's index for each of a million rows (91 s).
_FIRSTS = (
    "SELECT e.device_id, e.seq, e.ts, e.ts_ms, (SELECT min(first_ms) FROM sources s WHERE s.device_id = e.device_id)"
    " FROM (SELECT device_id, min(seq) AS seq FROM events{where} GROUP BY device_id) AS m"
    " JOIN events e ON e.device_id = m.device_id AND e.seq = m.seq ORDER BY e.device_id"
)


# The end of each device's run, for many devices in one statement (one round trip for a
# collector's acks): the lowest seq at or above the start, stored or the end of a write-off, whose
# successor is neither stored nor written off; per (device, start) row of the VALUES list.
_RUN_END = (
    " AND NOT EXISTS (SELECT 1 FROM events n WHERE n.device_id = d.device_id AND n.seq = {x} + 1)"
    " AND NOT EXISTS (SELECT 1 FROM written_off w2 WHERE w2.device_id = d.device_id"
    " AND w2.first_seq <= {x} + 1 AND w2.last_seq >= {x} + 1)"
)
_CONTIGUOUS_MANY = (
    "WITH d (device_id, from_seq) AS (VALUES {rows})"
    " SELECT d.device_id,"
    " (SELECT min(e.seq) FROM events e WHERE e.device_id = d.device_id AND e.seq >= d.from_seq"
    + _RUN_END.format(x="e.seq") + "),"
    " (SELECT min(w.last_seq) FROM written_off w WHERE w.device_id = d.device_id AND w.last_seq >= d.from_seq"
    + _RUN_END.format(x="w.last_seq") + ")"
    " FROM d"
)
CONTIGUOUS_MANY_CHUNK = 500


# One statement, so the checks and the insert see the same rows.
_WRITE_OFF = (
    "INSERT INTO written_off (device_id, first_seq, last_seq, reason, written_ms)"
    " SELECT ?, ?, ?, ?, ? WHERE"
    " NOT EXISTS (SELECT 1 FROM events WHERE device_id = ? AND seq BETWEEN ? AND ?)"
    " AND (? = 1 OR EXISTS (SELECT 1 FROM events WHERE device_id = ? AND seq < ?))"
    " AND EXISTS (SELECT 1 FROM events WHERE device_id = ? AND seq > ?)"
    " AND NOT EXISTS (SELECT 1 FROM written_off WHERE device_id = ? AND first_seq <= ? AND last_seq >= ?)"
)


_WRITE_OFFS = "SELECT device_id, first_seq, last_seq, reason, written_ms FROM written_off{where}"


# The reason of the write-off that stands for a gate's signed skip declaration. Reserved: a
# person's write-off may not use it, so the report can tell the two apart.
SKIP_REASON = "skipped reservation"


# Tables both databases create the same way (BIGINT is an integer in SQLite too).
SHARED_TABLES = (
    "CREATE TABLE IF NOT EXISTS seq_skips ("
    " device_id TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, cause TEXT NOT NULL,"
    " exact INTEGER NOT NULL, file TEXT NOT NULL, declared_at TEXT NOT NULL, received_ms BIGINT NOT NULL,"
    " PRIMARY KEY (device_id, first_seq))",
)


_SKIPPED = (
    "SELECT s.device_id, s.first_seq, s.last_seq, s.cause, s.exact, s.file, s.declared_at, s.received_ms,"
    " (SELECT count(*) FROM events e WHERE e.device_id = s.device_id AND e.seq BETWEEN s.first_seq AND s.last_seq)"
    " FROM seq_skips s{where} ORDER BY s.device_id, s.first_seq"
)


_PRUNE = ("DELETE FROM events WHERE event_id IN (SELECT event_id FROM events"
          " WHERE ts_ms < ? AND received_ms < ? ORDER BY ts_ms LIMIT ?)")
# Events whose time is far after their arrival (a wrong or forged clock, ts = 9999-12-31) would never
# grow old by ts_ms: they go by their arrival time instead.
FUTURE_SLACK_MS = 86_400_000
_PRUNE_FUTURE = ("DELETE FROM events WHERE event_id IN (SELECT event_id FROM events"
                 " WHERE received_ms < ? AND ts_ms > received_ms + ? LIMIT ?)")


INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms)",
    "CREATE INDEX IF NOT EXISTS events_venue_ts ON events (venue_id, ts_ms)",
    "CREATE INDEX IF NOT EXISTS events_device_ts ON events (device_id, ts_ms)",
    "CREATE INDEX IF NOT EXISTS events_device_seq ON events (device_id, seq)",
    "CREATE INDEX IF NOT EXISTS events_subject ON events (subject)",
)


# A quarantined message keeps at most this many bytes of its payload (its length is kept too).
QUARANTINE_PAYLOAD_MAX = 16 * 1024


@dataclasses.dataclass(frozen=True)
class QuarantinedMessage:
    """A message the collector could not store, as the ``quarantine`` table keeps it.

    Attributes:
        id: its row.
        received_ms: when the collector received it (Unix ms).
        topic, device_id: where it came from (``device_id`` from the topic; empty if none).
        reason: why it was not stored.
        payload: its first ``QUARANTINE_PAYLOAD_MAX`` bytes.
        payload_bytes: its whole length (more than ``len(payload)``: it was cut).
    """

    id: int
    received_ms: int
    topic: str
    device_id: str
    reason: str
    payload: bytes
    payload_bytes: int


def _printable(text: str, limit: int) -> str:
    """Text safe for both databases and for a terminal: control and surrogate characters
    replaced by U+FFFD, cut to ``limit`` characters."""
    import unicodedata

    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cs") else c for c in text[:limit])


# Up to this many allowed venues, a page is read venue by venue (see _page_query).
MERGE_VENUES_MAX = 50


def _page_query(flt: Filter, where: str, params: list[Any], page_size: int, offset: int) -> tuple[str, list[Any]]:
    """The SQL of one page, newest first.

    With a few allowed venues and no single venue asked for (the back office's manager view),
    ``venue_id IN (...) ORDER BY ts_ms`` makes both databases sort every matching row. Reading
    each venue's newest ``offset + page_size`` rows in index order and merging them gives the
    same page for the cost of a page per venue.
    """
    venues = flt.venues or ()
    if flt.venue or not 2 <= len(venues) <= MERGE_VENUES_MAX:
        return f"{_SELECT} WHERE {where}{_ORDER} LIMIT ? OFFSET ?", [*params, page_size, offset]
    parts, merged = [], []
    for n, venue in enumerate(venues):
        one_where, one_params = build_where(dataclasses.replace(flt, venue=venue, venues=None))
        parts.append(f"SELECT * FROM ({_SELECT} WHERE {one_where}{_ORDER} LIMIT ?) AS v{n}")
        merged.extend([*one_params, offset + page_size])
    return " UNION ALL ".join(parts) + _ORDER + " LIMIT ? OFFSET ?", [*merged, page_size, offset]


def event_from_row(row: Sequence[Any]) -> HistoryEvent:
    """Build a HistoryEvent from a row selected in ``COLUMNS`` order (same on both databases)."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["time_synced"] = bool(values["time_synced"])
    values["latency_ms"] = float(values["latency_ms"])
    values["ts_ms"] = int(values["ts_ms"])
    values["seq"] = int(values["seq"])
    values["received_ms"] = int(values["received_ms"])
    return HistoryEvent(**values)


def _open_parts(hole: Gap, written: list[WriteOff]) -> list[Gap]:
    """Split a hole around the write-offs of its device that fall inside it."""
    parts, start = [], hole.first_missing
    for w in written:
        if w.device_id != hole.device_id or w.last_seq < start or w.first_seq > hole.last_missing:
            continue
        if w.first_seq > start:
            parts.append(Gap(hole.device_id, start, w.first_seq - 1, hole.after_ts, hole.before_ts))
        start = max(start, w.last_seq + 1)
    if start <= hole.last_missing:
        parts.append(Gap(hole.device_id, start, hole.last_missing, hole.after_ts, hole.before_ts))
    return parts


def source_updates(events: Sequence[HistoryEvent]) -> list[tuple[str, str, int, int, int]]:
    """Summarise a batch per (venue, device): first and last event time, last receive time."""
    seen: dict[tuple[str, str], list[int]] = {}
    for ev in events:
        key = (ev.venue_id, ev.device_id)
        if key in seen:
            first, last, received = seen[key]
            seen[key] = [min(first, ev.ts_ms), max(last, ev.ts_ms), max(received, ev.received_ms)]
        else:
            seen[key] = [ev.ts_ms, ev.ts_ms, ev.received_ms]
    return [(v, d, *vals) for (v, d), vals in seen.items()]  # type: ignore[misc]


def contact_rows(events: Sequence[HistoryEvent]) -> list[tuple[str, str]]:
    """The (event_id, contact_sealed) rows of a batch, for ``event_contacts``, each event once."""
    return list({ev.event_id: (ev.event_id, ev.contact_sealed) for ev in events
                 if ev.contact_sealed is not None}.values())  # type: ignore[misc]


class SqlHistoryStore:
    """The queries both databases share.

    Adapters provide ``_fetch``, ``_write``, ``add``, ``optimize`` and ``close``.

    Subclasses hold one connection and take ``self._lock`` around each public call.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- adapter hooks -------------------------------------------------------------------
    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        """Run one writing statement (committed on its own) and return its row count."""
        raise NotImplementedError

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one writing statement for each row, all in one committed transaction."""
        raise NotImplementedError

    # -- shared queries -------------------------------------------------------------------
    def count(self, flt: Filter) -> int:
        """Return how many events match ``flt``."""
        where, params = build_where(flt)
        with self._lock:
            return int(self._fetch(f"SELECT count(*) FROM events WHERE {where}", params)[0][0])

    def page(self, flt: Filter, page: int = 1, page_size: int = 50) -> Page:
        """Return the total count and one page of matching events, newest first."""
        page = max(1, int(page))
        where, params = build_where(flt)
        with self._lock:
            total = int(self._fetch(f"SELECT count(*) FROM events WHERE {where}", params)[0][0])
            last_page = max(1, -(-total // page_size))
            page = min(page, last_page)
            sql, page_params = _page_query(flt, where, params, page_size, (page - 1) * page_size)
            rows = self._fetch(sql, page_params)
        return Page(total=total, rows=[event_from_row(r) for r in rows], page=page, page_size=page_size)

    def rows(self, flt: Filter) -> Iterator[HistoryEvent]:
        """Yield every matching event, newest first (keyset paging, ``EXPORT_BATCH_ROWS`` a read)."""
        where, params = build_where(flt)
        after: tuple[int, str] | None = None
        while True:
            sql, args = f"{_SELECT} WHERE {where}", list(params)
            if after is not None:
                sql += " AND (ts_ms < ? OR (ts_ms = ? AND event_id < ?))"
                args += [after[0], after[0], after[1]]
            with self._lock:
                batch = self._fetch(sql + _ORDER + " LIMIT ?", [*args, EXPORT_BATCH_ROWS])
            for row in batch:
                yield event_from_row(row)
            if len(batch) < EXPORT_BATCH_ROWS:
                return
            last = event_from_row(batch[-1])
            after = (last.ts_ms, last.event_id)

    def gaps(self, device: str = "") -> list[Gap]:
        """Return the open holes in each device's stored ``seq`` numbers (all devices if empty).

        A hole partly written off is returned as the parts still open, each with the
        timestamps of the stored events around the whole hole.
        """
        where, params = (" WHERE device_id = ?", [device]) if device else ("", [])
        with self._lock:
            found = self._fetch(_GAPS.format(where=where), params)
            firsts = self._fetch(_FIRSTS.format(where=" WHERE device_id = ?" if device else ""), params)
            written = self.write_offs(device)
        # A gate's seq starts at 1: events before the lowest stored one (published before the
        # collector first subscribed) are a hole too, unless retention pruned them.
        leading = [Gap(device_id=d, first_missing=1, last_missing=int(s) - 1, after_ts="", before_ts=ts)
                   for d, s, ts, ts_ms, first_ms in firsts
                   if int(s) > 1 and (first_ms is None or int(ts_ms) <= int(first_ms))]
        holes = [Gap(device_id=d, first_missing=int(s) + 1, last_missing=int(n) - 1, after_ts=ts,
                     before_ts=nts) for d, s, ts, n, nts in found]
        ordered = sorted([*leading, *holes], key=lambda g: (g.device_id, g.first_missing))
        return [part for hole in ordered for part in _open_parts(hole, written)]

    def write_off(self, device: str, first_seq: int, last_seq: int, reason: str, now_ms: int) -> WriteOff:
        """Declare a hole lost for good (see HistoryStore.write_off)."""
        reason = " ".join(reason.split())
        if not reason:
            raise ConfigError("give a --reason: it is kept with the write-off for whoever audits the history")
        if reason.lower().startswith(SKIP_REASON):
            raise ConfigError(f"the reason {SKIP_REASON!r} is kept for the ranges a gate declares skipped in "
                              "its signed skips message; describe in other words why these scans are lost")
        if not 1 <= first_seq <= last_seq:
            raise ConfigError(f"seq range {first_seq}..{last_seq} is empty or below 1; give FIRST-LAST "
                              "with FIRST <= LAST, as `qrgate history query --gaps` lists them")
        with self._lock:
            inserted = self._write(_WRITE_OFF, [device, first_seq, last_seq, reason, now_ms,
                                                device, first_seq, last_seq, first_seq, device, first_seq,
                                                device, last_seq, device, last_seq, first_seq])
            if inserted != 1:
                raise ConfigError(self._why_not_a_gap(device, first_seq, last_seq))
        log.warning("seq %d..%d of %s written off (%d scans): %s", first_seq, last_seq, device,
                    last_seq - first_seq + 1, reason)
        return WriteOff(device, first_seq, last_seq, reason, now_ms)

    def _why_not_a_gap(self, device: str, first_seq: int, last_seq: int) -> str:
        span = f"seq {first_seq}..{last_seq} of {device}"
        stored = self._fetch("SELECT min(seq), count(*) FROM events WHERE device_id = ? AND seq BETWEEN ? AND ?",
                             [device, first_seq, last_seq])
        if stored and int(stored[0][1]):
            return (f"{span} is not lost: {int(stored[0][1])} of them are stored (seq {int(stored[0][0])} first); "
                    "write off only what `qrgate history query --gaps` lists")
        for row in self.write_offs(device):
            if row.first_seq <= last_seq and row.last_seq >= first_seq:
                return f"{span} overlaps the write-off of seq {row.first_seq}..{row.last_seq} ({row.reason})"
        return (f"{span} is not inside a known gap: the history needs a stored event of {device} below "
                f"and above it; check the device id and `qrgate history query --gaps`")

    def write_offs(self, device: str = "") -> list[WriteOff]:
        """Return the written-off ranges, by device and seq (all devices if empty)."""
        where, params = (" WHERE device_id = ?", [device]) if device else ("", [])
        with self._lock:
            found = self._fetch(_WRITE_OFFS.format(where=where) + " ORDER BY device_id, first_seq", params)
        return [WriteOff(str(d), int(f), int(last), str(r), int(w)) for d, f, last, r, w in found]

    def record_skip(self, device: str, first_seq: int, last_seq: int, cause: str, exact: bool, file: str,
                    declared_at: str, now_ms: int) -> tuple[bool, int]:
        """Keep a skip the gate declared (its signature already verified) and write the range off
        with reason ``SKIP_REASON``, so it is not a gap and does not hold back the acks.

        Idempotent on (device, first_seq). Unlike a person's write-off, the range needs no
        stored event around it and may hold stored events (the gate's word is the authority;
        stored events stay stored). The write-off goes first, so a kept skip always has it.

        Returns:
            (True if the skip was new, how many stored events lie inside the range).

        Raises:
            StoreError: the database refused.
        """
        with self._lock:
            self._write("INSERT INTO written_off (device_id, first_seq, last_seq, reason, written_ms)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, first_seq) DO NOTHING",
                        [device, first_seq, last_seq, SKIP_REASON, now_ms])
            new = self._write("INSERT INTO seq_skips (device_id, first_seq, last_seq, cause, exact, file,"
                              " declared_at, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                              " ON CONFLICT (device_id, first_seq) DO NOTHING",
                              [device, first_seq, last_seq, cause, int(exact), _printable(file, 120),
                               _printable(declared_at, 40), now_ms]) == 1
            stored = self._fetch("SELECT count(*) FROM events WHERE device_id = ? AND seq BETWEEN ? AND ?",
                                 [device, first_seq, last_seq])
        return new, int(stored[0][0])

    def skipped(self, device: str = "") -> list[SkippedReservation]:
        """Return the skips gates declared (all devices if empty), by device and seq, each with
        the number of stored events inside it. Empty on a database from before skips existed
        (opened read-only, the table could not be created)."""
        where, params = (" WHERE s.device_id = ?", [device]) if device else ("", [])
        with self._lock:
            try:
                found = self._fetch(_SKIPPED.format(where=where), params)
            except StoreError as err:
                if "seq_skips" in str(err):
                    return []
                raise
        return [SkippedReservation(str(d), int(f), int(last), str(c), bool(x), str(fl), str(at), int(r), int(n))
                for d, f, last, c, x, fl, at, r, n in found]

    def sources(self) -> list[tuple[str, str]]:
        """Return the (venue_id, device_id) pairs ever stored, sorted."""
        with self._lock:
            found = self._fetch("SELECT venue_id, device_id FROM sources ORDER BY venue_id, device_id")
        return [(str(v), str(d)) for v, d in found]

    def max_seq(self, device: str) -> int | None:
        """Return the highest stored ``seq`` of a device, or None if it has no events."""
        with self._lock:
            found = self._fetch("SELECT max(seq) FROM events WHERE device_id = ?", [device])
        return None if not found or found[0][0] is None else int(found[0][0])

    def contiguous_through(self, device: str, from_seq: int | None = None) -> int | None:
        """Return the seq before the device's first gap at or above from_seq (see HistoryStore)."""
        return self.contiguous_through_many({device: from_seq})[device]

    def contiguous_through_many(self, starts: dict[str, int | None]) -> dict[str, int | None]:
        """``contiguous_through`` for many devices at once (device -> its previous answer or None),
        in one statement per ``CONTIGUOUS_MANY_CHUNK`` devices: a collector acknowledging a
        thousand gates makes one round trip, not a thousand."""
        out: dict[str, int | None] = {}
        pending = dict(starts)
        with self._lock:
            unknown = [d for d, start in pending.items() if start is None]
            for i in range(0, len(unknown), CONTIGUOUS_MANY_CHUNK):
                chunk = unknown[i:i + CONTIGUOUS_MANY_CHUNK]
                found = self._fetch("SELECT device_id, min(seq) FROM events WHERE device_id IN ("
                                    + ", ".join("?" * len(chunk)) + ") GROUP BY device_id", chunk)
                lowest = {str(d): int(m) for d, m in found if m is not None}
                for device in chunk:
                    if device in lowest:
                        pending[device] = lowest[device]
                    else:
                        out[device] = None
                        del pending[device]
            items = list(pending.items())
            for i in range(0, len(items), CONTIGUOUS_MANY_CHUNK):
                chunk = items[i:i + CONTIGUOUS_MANY_CHUNK]
                sql = _CONTIGUOUS_MANY.format(rows=", ".join(["(?, CAST(? AS BIGINT))"] * len(chunk)))
                found = self._fetch(sql, [v for pair in chunk for v in pair])
                for device, from_events, from_written in found:
                    ends = [int(x) for x in (from_events, from_written) if x is not None]
                    out[str(device)] = min(ends) if ends else None
        return out

    # -- device keys, enrolments and the quarantine (issue 10) -------------------------------
    def device_keys(self) -> dict[str, str]:
        """Return every registered device's public key (raw Ed25519, base64url), by device id."""
        with self._lock:
            found = self._fetch("SELECT device_id, public_key FROM devices")
        return {str(d): str(k) for d, k in found}

    def device_key(self, device: str) -> str | None:
        """Return one device's registered public key, or None (one indexed read)."""
        with self._lock:
            found = self._fetch("SELECT public_key FROM devices WHERE device_id = ?", [device])
        return str(found[0][0]) if found else None

    def devices(self) -> list[tuple[str, str, str, int]]:
        """Return (device_id, public_key, source, added_ms) of every registered device, sorted."""
        with self._lock:
            found = self._fetch("SELECT device_id, public_key, source, added_ms FROM devices ORDER BY device_id")
        return [(str(d), str(k), str(s), int(a)) for d, k, s, a in found]

    def register_device(self, device: str, public_key: str, source: str, now_ms: int) -> None:
        """Register (or replace) the key the device's events must verify with.

        Logs one line: INFO for a device's first key, WARNING when it replaces another key
        (a new SD card, a rotated key, or a stolen gate's replacement: worth a look).
        """
        with self._lock:
            before = self.device_key(device)
            self._write("INSERT INTO devices (device_id, public_key, source, added_ms) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key,"
                        " source = excluded.source, added_ms = excluded.added_ms",
                        [device, public_key, source[:200], now_ms])
        if before is None:
            registry.info("device %s registered with key %s (%s)", device, _fingerprint(public_key),
                          source[:200])
        elif before != public_key:
            registry.warning("device %s: key %s replaced by %s (%s)", device, _fingerprint(before),
                             _fingerprint(public_key), source[:200])

    def remove_device(self, device: str) -> bool:
        """Forget a device's key (its events are quarantined from then on). True if it had one."""
        with self._lock:
            removed = self._write("DELETE FROM devices WHERE device_id = ?", [device]) == 1
        if removed:
            registry.warning("device %s removed from the registry", device)
        return removed

    def add_enrolment(self, nonce_hex: str, device: str, venue_id: str, now_ms: int) -> None:
        """Record a provisioning code's nonce: the gate that shows it first (in a ``provisioned``
        event signed with the key it carries) gets that key registered. ``device`` empty: any id."""
        with self._lock:
            self._write("INSERT INTO enrolments (nonce, device_id, venue_id, created_ms) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (nonce) DO NOTHING", [nonce_hex, device, venue_id, now_ms])

    def claim_enrolment(self, nonce_hex: str, device: str, public_key: str, now_ms: int) -> bool:
        """Use a recorded nonce for this device and key, and register the key. True if it was
        free (or already used by this very device and key: a duplicate of the same event)."""
        with self._lock:
            claimed = self._write(
                "UPDATE enrolments SET used_ms = ?, used_key = ?, used_by = ? WHERE nonce = ?"
                " AND (device_id = '' OR device_id = ?) AND (used_ms IS NULL OR (used_key = ? AND used_by = ?))",
                [now_ms, public_key, device, nonce_hex, device, public_key, device]) == 1
            if claimed:
                self.register_device(device, public_key, f"enrolled by provisioning nonce {nonce_hex[:8]}...",
                                     now_ms)
        return claimed

    def quarantine(self, rows: Sequence[tuple[int, str, str, str, bytes]]) -> None:
        """Keep messages that are not stored as events: (received_ms, topic, device, reason, payload).

        Text is stored without control characters and the payload as bytes (at most
        ``QUARANTINE_PAYLOAD_MAX`` of them), so whatever arrived fits both databases."""
        with self._lock:
            self._write_many("INSERT INTO quarantine (received_ms, topic, device_id, reason, payload, payload_bytes)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             [[received_ms, _printable(topic, 256), _printable(device, 128), _printable(reason, 300),
                               bytes(payload[:QUARANTINE_PAYLOAD_MAX]), len(payload)]
                              for received_ms, topic, device, reason, payload in rows])

    def quarantined(self, limit: int = 100) -> list[tuple[int, str, str, str, int]]:
        """The newest quarantined messages: (received_ms, topic, device_id, reason, payload_bytes)."""
        with self._lock:
            found = self._fetch("SELECT received_ms, topic, device_id, reason, payload_bytes FROM quarantine"
                                " ORDER BY id DESC LIMIT ?", [limit])
        return [(int(r), str(t), str(d), str(why), int(n)) for r, t, d, why, n in found]

    def quarantine_count(self) -> int:
        """How many messages are in the quarantine."""
        with self._lock:
            return int(self._fetch("SELECT count(*) FROM quarantine")[0][0])

    def quarantined_messages(self, after_id: int = 0, device: str = "", limit: int = 500) -> list[QuarantinedMessage]:
        """Quarantined messages with their payload, oldest first: those with an id above ``after_id``
        (one device's if ``device`` is given), at most ``limit``. Used to re-check them."""
        where, params = (" AND device_id = ?", [device]) if device else ("", [])
        with self._lock:
            rows = self._fetch("SELECT id, received_ms, topic, device_id, reason, payload, payload_bytes FROM quarantine"
                               f" WHERE id > ?{where} ORDER BY id LIMIT ?", [after_id, *params, limit])
        return [QuarantinedMessage(int(i), int(r), str(t), str(d), str(why), bytes(b), int(n))
                for i, r, t, d, why, b, n in rows]

    def release_quarantined(self, ids: Sequence[int]) -> int:
        """Delete quarantined messages whose events are now stored; returns how many were deleted."""
        deleted = 0
        for i in range(0, len(ids), 500):
            chunk = list(ids[i:i + 500])
            with self._lock:
                deleted += self._write("DELETE FROM quarantine WHERE id IN (" + ", ".join("?" for _ in chunk) + ")",
                                       chunk)
        return deleted

    def set_quarantine_reasons(self, reasons: Sequence[tuple[int, str]]) -> None:
        """Replace the reason of quarantined messages: (id, reason) pairs, in one transaction."""
        with self._lock:
            self._write_many("UPDATE quarantine SET reason = ? WHERE id = ?",
                             [[_printable(reason, 300), i] for i, reason in reasons])

    def prune(self, before_ms: int, batch_rows: int = 5000) -> int:
        """Delete events older than ``before_ms`` in batches, one commit per batch; an event stamped
        more than a day after it arrived counts by its arrival time (``FUTURE_SLACK_MS``)."""
        total = 0
        for sql, args in ((_PRUNE, [before_ms, before_ms]), (_PRUNE_FUTURE, [before_ms, FUTURE_SLACK_MS])):
            while True:
                with self._lock:
                    deleted = self._write(sql, [*args, batch_rows])
                total += deleted
                if deleted < batch_rows:
                    break
        if total:
            log.info("retention: deleted %d events older than %d ms", total, before_ms)
        return total


def _fingerprint(public_key: str) -> str:
    """The key's ``SHA256:`` fingerprint for logs, or its first characters if it does not parse."""
    from firmware.core.event_signature import SignatureError, fingerprint, public_key_from_text

    try:
        return fingerprint(public_key_from_text(public_key))
    except (SignatureError, ValueError, TypeError):
        return public_key[:8] + "..."
