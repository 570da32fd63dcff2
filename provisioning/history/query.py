"""The manager's filters, and the one SQL ``WHERE`` clause both databases run.

Pure: the current time is passed in. SQL uses ``?`` placeholders; the PostgreSQL store
converts them to ``%s``. No SQL text contains a literal ``%`` or ``?`` besides placeholders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from firmware.core.errors import ConfigError
from provisioning.history.events import person_key

DECISIONS = ("granted", "denied")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(m|min|h|d|w)$", re.IGNORECASE)
_UNIT_S = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# A person text that can only be an id: an HMAC (hex) or an ID card number. A masked display
# never holds more than 7 digits in a row, so these skip the (unindexed) display search.
_ID_ONLY = re.compile(r"^(?:[0-9a-fA-F]{16,}|\d{9,})$")


@dataclass(frozen=True)
class Filter:
    """What the manager asked for. Every field is optional; empty means "any".

    Attributes:
        since_ms: events at or after this time (Unix ms).
        until_ms: events strictly before this time (Unix ms).
        person: matches the hashed or raw ``subject`` exactly (as the gate stored it), or a part
            of the masked name and phone (accents, case and spaces ignored). A text that can
            only be an id (16+ hex digits, or 9+ digits) is matched against ``subject`` only.
        venue: exact venue id.
        device: exact device id (the "controller" of the original system).
        decision: ``granted``, ``denied``, or another stored event type.
        venues: the venues the reader may see (a venue-scoped token); None means all. Applied
            on top of ``venue``, so asking for another venue gives nothing.
    """

    since_ms: int | None = None
    until_ms: int | None = None
    person: str = ""
    venue: str = ""
    device: str = ""
    decision: str = ""
    venues: tuple[str, ...] | None = None

    def describe(self) -> dict[str, Any]:
        """The filter without the person text (safe to log or to put in an export header)."""
        described = {"since_ms": self.since_ms, "until_ms": self.until_ms, "person": bool(self.person),
                     "venue": self.venue or None, "device": self.device or None,
                     "decision": self.decision or None}
        if self.venues is not None:
            described["venues_allowed"] = list(self.venues)
        return described


@dataclass(frozen=True)
class Gap:
    """A run of missing sequence numbers on one device: scans lost somewhere.

    Attributes:
        device_id: the device.
        first_missing, last_missing: the missing ``seq`` range, inclusive.
        after_ts, before_ts: timestamps of the stored events around the hole.
    """

    device_id: str
    first_missing: int
    last_missing: int
    after_ts: str
    before_ts: str

    @property
    def missing(self) -> int:
        """How many events are missing."""
        return self.last_missing - self.first_missing + 1


@dataclass(frozen=True)
class WriteOff:
    """A seq range an operator declared lost for good (a quarantined outbox, scans lost before
    acks were on). It no longer counts as a gap and no longer holds back the gate's acks.

    Attributes:
        device_id: the device.
        first_seq, last_seq: the written-off range, inclusive.
        reason: the operator's words, kept for the audit trail.
        written_ms: when it was written off (Unix ms).
    """

    device_id: str
    first_seq: int
    last_seq: int
    reason: str
    written_ms: int

    @property
    def count(self) -> int:
        """How many seq numbers the range covers."""
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True)
class SkippedReservation:
    """A seq range a gate declared it will never use (a signed ``qrgate.seq-skips/1`` record,
    ``firmware.core.seq_skips``): not lost scans. Written off with reason "skipped reservation".

    Attributes:
        device_id: the device.
        first_seq, last_seq: the declared range, inclusive.
        cause: ``new_outbox`` or ``quarantined_outbox``.
        exact: True if the gate read its old outbox and no seq of the range was ever used;
            False if the old outbox could not be read and the range is its last reservation
            block, so scans that outbox held in the range (not stored here) are lost with it.
        file: the quarantined outbox file's name on the gate, or "".
        declared_at: when the gate recorded it (RFC 3339).
        received_ms: when the collector first stored it (Unix ms).
        stored: how many stored events lie inside the range (expected only when not exact).
    """

    device_id: str
    first_seq: int
    last_seq: int
    cause: str
    exact: bool
    file: str
    declared_at: str
    received_ms: int
    stored: int = 0

    @property
    def count(self) -> int:
        """How many seq numbers the range covers."""
        return self.last_seq - self.first_seq + 1

    @property
    def not_stored(self) -> int:
        """Seq numbers of the range with no stored event."""
        return self.count - self.stored


@dataclass(frozen=True)
class Page:
    """One page of results with the total count.

    Attributes:
        total: how many events match the filter.
        rows: this page's events, newest first.
        page: 1-based page number.
        page_size: rows per page.
    """

    total: int
    rows: list = field(default_factory=list)
    page: int = 1
    page_size: int = 50

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, -(-self.total // self.page_size))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def build_where(flt: Filter) -> tuple[str, list[Any]]:
    """Return ``(sql, params)`` for the WHERE clause of ``flt`` (``"1=1"`` when empty)."""
    clauses: list[str] = []
    params: list[Any] = []
    if flt.since_ms is not None:
        clauses.append("ts_ms >= ?")
        params.append(int(flt.since_ms))
    if flt.until_ms is not None:
        clauses.append("ts_ms < ?")
        params.append(int(flt.until_ms))
    if flt.venue:
        clauses.append("venue_id = ?")
        params.append(flt.venue)
    if flt.venues is not None:
        if flt.venues:
            clauses.append("venue_id IN (" + ", ".join("?" for _ in flt.venues) + ")")
            params.extend(flt.venues)
        else:
            clauses.append("1 = 0")
    if flt.device:
        clauses.append("device_id = ?")
        params.append(flt.device)
    if flt.decision:
        clauses.append("decision = ?")
        params.append(flt.decision)
    if flt.person.strip():
        needle = person_key(flt.person)
        if needle and not _ID_ONLY.match(flt.person.strip()):
            clauses.append("(subject = ? OR person_key LIKE ? ESCAPE '\\')")
            params.extend([flt.person.strip(), "%" + _like_escape(needle) + "%"])
        else:
            clauses.append("subject = ?")
            params.append(flt.person.strip())
    return (" AND ".join(clauses) or "1=1"), params


def parse_time(text: str, now_ms: int, tz: tzinfo) -> int:
    """Parse a ``--since``/``--until`` value into Unix ms.

    Accepts RFC 3339 (``2026-07-02T10:21:00Z``), a local date and time in ``tz``
    (``2026-07-02 10:21``, ``2026-07-02T10:21``), a local date (midnight), or a duration back
    from now (``30m``, ``12h``, ``7d``, ``2w``).

    Raises:
        ConfigError: the value is none of these.
    """
    value = text.strip()
    rel = _RELATIVE.match(value)
    if rel:
        seconds = float(rel.group(1)) * _UNIT_S[rel.group(2).lower()]
        if not seconds <= 200 * 365 * 86400:  # also NaN-proof; a bigger number does not fit the databases
            raise ConfigError(f"duration {text[:40]!r} is longer than 200 years")
        return now_ms - int(seconds * 1000)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=tz)
        else:
            moment = datetime.fromisoformat(value.replace(" ", "T", 1))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
        return int(round(moment.timestamp() * 1000))
    except (ValueError, OverflowError) as err:
        raise ConfigError(f"time {text[:40]!r} is not understood; use 2026-07-02, '2026-07-02 10:21', "
                          "2026-07-02T10:21:00Z or a duration back from now such as 12h or 7d") from err


def day_after(ms: int, tz: tzinfo) -> int:
    """Return the start of the day after the local day containing ``ms`` (for inclusive dates)."""
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=tz) + timedelta(days=1)
        start = datetime(moment.year, moment.month, moment.day, tzinfo=tz)
        return int(start.timestamp() * 1000)
    except (OverflowError, ValueError, OSError) as err:
        raise ConfigError("that date is out of the calendar's range; pick an earlier one") from err


def make_filter(*, since: str = "", until: str = "", person: str = "", venue: str = "", device: str = "",
                decision: str = "", now_ms: int, tz: tzinfo) -> Filter:
    """Build a Filter from text inputs (CLI or web form), checking each.

    A bare date for ``until`` includes that whole day.

    Raises:
        ConfigError: every bad input, one line each.
    """
    problems: list[str] = []
    since_ms = until_ms = None
    try:
        since_ms = parse_time(since, now_ms, tz) if since.strip() else None
    except ConfigError as err:
        problems.extend(err.problems)
    try:
        if until.strip():
            until_ms = parse_time(until, now_ms, tz)
            if len(until.strip()) == 10:
                until_ms = day_after(until_ms, tz)
    except ConfigError as err:
        problems.extend(err.problems)
    decision = decision.strip().lower()
    if decision and not re.fullmatch(r"[a-z_]{1,40}", decision):
        problems.append(f"decision {decision!r} is not an event type; use granted or denied")
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        problems.append("the 'until' time is not after the 'since' time; swap them")
    if problems:
        raise ConfigError(problems)
    return Filter(since_ms=since_ms, until_ms=until_ms, person=person.strip(), venue=venue.strip(),
                  device=device.strip(), decision=decision)
