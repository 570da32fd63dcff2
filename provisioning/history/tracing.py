"""Contact tracing (truy vết): presence intervals from scans, and the contacts of a case.

Pure: no I/O, no clock. The store (``trace_store``) reads the scans; this module turns them
into presence intervals and overlaps.

The rules, per person (``subject``) and venue, on granted scans only (denied scans are not
presence; scans without a subject cannot be traced):

* A granted ``in`` scan (a gate's or a phone check-in's) starts an interval. It ends at the
  person's next granted ``out`` scan at the same venue (any gate of the venue: the gates of one
  venue share the venue's subject), when that ``out`` comes within ``max_dwell_ms`` of the start
  (``ended_by = "out"``); otherwise it ends ``default_dwell_ms`` after the start
  (``ended_by = "default_dwell"``).
* A granted ``out`` that no interval is open for (the person's previous granted scan at the
  venue is an ``out``, or there is none, or it is an ``in`` more than ``max_dwell_ms`` earlier)
  gives the interval ``[out - default_dwell_ms, out]`` (``started_by = "default_dwell"``,
  ``ended_by = "out"``).
* Intervals of one person at one venue that overlap or touch are merged into one (two ``in``
  scans before one ``out`` give one visit); the merged visit keeps the earliest start and the
  latest end, and the ``started_by``/``ended_by`` of those ends.
* Scans at the same millisecond sort ``in`` before ``out``, then by ``event_id``.

Two intervals at the same venue overlap by ``min(end) - max(start)``; a contact is another
subject whose interval at a venue overlaps one of the case's visits by at least the minimum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DEFAULT_MIN_OVERLAP_MIN = 15
DEFAULT_DWELL_MIN = 60
DEFAULT_MAX_DWELL_H = 12


@dataclass(frozen=True)
class TraceRules:
    """The interval and overlap settings of one trace (milliseconds).

    Raises:
        ValueError: a value is negative or zero where it must not be.
    """

    default_dwell_ms: int = DEFAULT_DWELL_MIN * MINUTE_MS
    max_dwell_ms: int = DEFAULT_MAX_DWELL_H * HOUR_MS
    min_overlap_ms: int = DEFAULT_MIN_OVERLAP_MIN * MINUTE_MS

    def __post_init__(self) -> None:
        if not 0 < self.default_dwell_ms <= 7 * 24 * HOUR_MS:
            raise ValueError("the default dwell must be above 0 and at most 7 days")
        if not 0 < self.max_dwell_ms <= 7 * 24 * HOUR_MS:
            raise ValueError("the maximum dwell must be above 0 and at most 7 days")
        if not 0 <= self.min_overlap_ms <= 7 * 24 * HOUR_MS:
            raise ValueError("the minimum overlap must be 0 to 7 days")

    @property
    def reach_ms(self) -> int:
        """How far from a visit another person's scans can still matter (the longest interval)."""
        return max(self.default_dwell_ms, self.max_dwell_ms)


class Presence(NamedTuple):
    """One granted scan that says where a person was (a tuple: a trace builds tens of thousands).

    Attributes:
        subject: the person as stored (HMAC per venue, or the raw id).
        venue_id: where.
        direction: ``in`` or ``out`` (anything else is ignored).
        ts_ms: the gate's time, Unix ms.
        event_id: the event's id (orders scans of the same millisecond).
    """

    subject: str
    venue_id: str
    direction: str
    ts_ms: int
    event_id: str


class Visit(NamedTuple):
    """A presence interval ``[from_ms, to_ms]`` of one subject at one venue."""

    subject: str
    venue_id: str
    from_ms: int
    to_ms: int
    started_by: str  # "in" or "default_dwell"
    ended_by: str  # "out" or "default_dwell"


class Contact(NamedTuple):
    """One overlap of another subject's visit with one of the case's visits."""

    subject: str
    venue_id: str
    from_ms: int
    to_ms: int

    @property
    def overlap_ms(self) -> int:
        return self.to_ms - self.from_ms


def _order(p: Presence) -> tuple[int, int, str]:
    return (p.ts_ms, 0 if p.direction == "in" else 1, p.event_id)


def _raw_intervals(scans: list[Presence], rules: TraceRules) -> list[Visit]:
    """The intervals of one subject at one venue, scans already sorted, before merging."""
    found: list[Visit] = []
    next_out: list[Presence | None] = [None] * len(scans)
    upcoming: Presence | None = None
    for i in range(len(scans) - 1, -1, -1):
        next_out[i] = upcoming
        if scans[i].direction == "out":
            upcoming = scans[i]
    for i, scan in enumerate(scans):
        if scan.direction == "in":
            nxt = next_out[i]
            if nxt is not None and nxt.ts_ms - scan.ts_ms <= rules.max_dwell_ms:
                found.append(Visit(scan.subject, scan.venue_id, scan.ts_ms, nxt.ts_ms, "in", "out"))
            else:
                found.append(Visit(scan.subject, scan.venue_id, scan.ts_ms,
                                   scan.ts_ms + rules.default_dwell_ms, "in", "default_dwell"))
        elif scan.direction == "out":
            before = scans[i - 1] if i else None
            open_in = (before is not None and before.direction == "in"
                       and scan.ts_ms - before.ts_ms <= rules.max_dwell_ms)
            if not open_in:
                found.append(Visit(scan.subject, scan.venue_id, scan.ts_ms - rules.default_dwell_ms,
                                   scan.ts_ms, "default_dwell", "out"))
    return found


def _merge(intervals: list[Visit]) -> list[Visit]:
    merged: list[Visit] = []
    for v in sorted(intervals, key=lambda v: (v.from_ms, v.to_ms)):
        if merged and v.from_ms <= merged[-1].to_ms:
            last = merged[-1]
            if v.to_ms > last.to_ms:
                merged[-1] = Visit(last.subject, last.venue_id, last.from_ms, v.to_ms, last.started_by, v.ended_by)
            continue
        merged.append(v)
    return merged


def presence_intervals(scans: Iterable[Presence], rules: TraceRules) -> list[Visit]:
    """Turn granted scans into visits, per subject and venue, by the module's rules.

    Args:
        scans: granted scans in any order (the caller leaves denied scans out); directions other
            than ``in`` and ``out`` are ignored.
        rules: dwell settings.

    Returns:
        The visits, sorted by subject, venue and start.
    """
    groups: dict[tuple[str, str], list[Presence]] = {}
    for scan in scans:
        if scan.direction in ("in", "out") and scan.subject:
            groups.setdefault((scan.subject, scan.venue_id), []).append(scan)
    visits: list[Visit] = []
    for key in sorted(groups):
        group = groups[key]
        if len(group) == 1:  # most people at a venue in a trace's span: one scan, one visit
            visits.extend(_raw_intervals(group, rules))
        else:
            visits.extend(_merge(_raw_intervals(sorted(group, key=_order), rules)))
    return visits


def in_window(visits: Iterable[Visit], since_ms: int, until_ms: int) -> list[Visit]:
    """The visits that overlap ``[since_ms, until_ms)``, unchanged (not clipped)."""
    return [v for v in visits if v.from_ms < until_ms and v.to_ms > since_ms]


def find_contacts(case_visits: Iterable[Visit], others: Iterable[Visit], case_subjects: frozenset[str],
                  rules: TraceRules) -> list[Contact]:
    """Every overlap of another subject's visit with a case visit at the same venue.

    Args:
        case_visits: the case's visits (in the trace window).
        others: visits of anyone at the case's venues (the case's own are skipped).
        case_subjects: every subject the case has (one per venue with per-venue secrets).
        rules: ``min_overlap_ms`` is the least overlap that counts.

    Returns:
        The overlaps, sorted by start, venue and subject.
    """
    by_venue: dict[str, list[Visit]] = {}
    for v in case_visits:
        by_venue.setdefault(v.venue_id, []).append(v)
    least = max(1, rules.min_overlap_ms)  # touching intervals (overlap 0) are never contacts
    found: list[Contact] = []
    for other in others:
        if other.subject in case_subjects:
            continue
        for case in by_venue.get(other.venue_id, ()):
            start = case.from_ms if case.from_ms > other.from_ms else other.from_ms
            end = case.to_ms if case.to_ms < other.to_ms else other.to_ms
            if end - start >= least:
                found.append(Contact(other.subject, other.venue_id, start, end))
    found.sort(key=lambda c: (c.from_ms, c.venue_id, c.subject, c.to_ms))
    return found


@dataclass(frozen=True)
class TraceResult:
    """The case's visits in the window and the overlaps found."""

    visits: list[Visit]
    contacts: list[Contact]

    def contact_subjects(self) -> list[str]:
        """The contacts' subjects, each once, in the order first found."""
        return list(dict.fromkeys(c.subject for c in self.contacts))


def presence_of(subject: str | None, venue_id: str, direction: str, decision: str, ts_ms: int,
                event_id: str) -> Presence | None:
    """The presence a stored event gives, or None: only granted ``in``/``out`` scans with a subject."""
    if decision != "granted" or not subject or direction not in ("in", "out"):
        return None
    return Presence(subject, venue_id, direction, ts_ms, event_id)


def trace(case_scans: Iterable[Presence], venue_scans: Iterable[Presence], case_subjects: frozenset[str],
          since_ms: int, until_ms: int, rules: TraceRules) -> TraceResult:
    """The case's visits overlapping ``[since_ms, until_ms)`` and everyone who overlapped them.

    Args:
        case_scans: the case's granted scans from ``since_ms - rules.reach_ms`` to
            ``until_ms + rules.reach_ms`` (so the visits at the window's edges are whole).
        venue_scans: everyone's granted scans at the case's venues from ``reach_ms`` before each
            case visit to ``reach_ms`` after it (the only scans that can make an overlapping visit).
        case_subjects: the subjects the case is known by.
        since_ms, until_ms: the trace window.
        rules: dwell and overlap settings.

    Returns:
        The case's visits by start time, and the contacts (see ``find_contacts``).
    """
    visits = sorted(in_window(presence_intervals(case_scans, rules), since_ms, until_ms),
                    key=lambda v: (v.from_ms, v.venue_id, v.to_ms))
    others = presence_intervals((s for s in venue_scans if s.subject not in case_subjects), rules)
    return TraceResult(visits, find_contacts(visits, others, case_subjects, rules))
