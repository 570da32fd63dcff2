"""The opened contacts of a reveal, one row per person as the health office's callers need them.

``provisioning.history.reveal.reveal`` answers one entry per scan (a visit's in and out are two).
The page and its CSV show one row per person, role, venue and outcome: the contact opened (name,
full phone, id) with the number of scans and the first and last of them, or why it could not be
opened. Pure: no Django, no clock; the page passes the venue names, the zone and the headings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import IO

from provisioning.history.export import clean_text, local_time
from provisioning.history.reveal import NO_SEALED_CONTACT, OpenedContact

CASE, CONTACT = "case", "contact"
NOT_SEALED, DOES_NOT_OPEN = "not_sealed", "does_not_open"
CSV_FIELDS = ("role", "name", "phone", "id", "venue", "first_scan", "last_scan", "scans", "display", "problem")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class OpenedPerson:
    """One person's scans of a reveal with the same outcome.

    Attributes:
        role: ``case`` or ``contact``.
        subject, venue_id: whose scans (as stored) and where.
        display: the masked display stored with the scans.
        name, phone, id: the opened contact; empty when it did not open.
        problem: None when opened, ``not_sealed`` (no sealed contact stored) or ``does_not_open``
            (another key, or a blob moved or changed).
        scans: how many scans; first_ms, last_ms: the first and last of them (Unix ms).
    """

    role: str
    subject: str
    venue_id: str
    display: str
    name: str
    phone: str
    id: str
    problem: str | None
    scans: int
    first_ms: int
    last_ms: int

    @property
    def opened(self) -> bool:
        return self.problem is None


def problem_kind(problem: str | None) -> str | None:
    """The reveal's problem text as a kind: None, ``not_sealed`` or ``does_not_open``."""
    if problem is None:
        return None
    return NOT_SEALED if problem == NO_SEALED_CONTACT else DOES_NOT_OPEN


def group_opened(opened: Sequence[OpenedContact]) -> list[OpenedPerson]:
    """One row per (role, subject, venue, contact, problem kind): the case first, then by first scan.

    A person whose scans at a venue all opened to the same contact is one row; a scan that did
    not open (or opened to something else) is a row of its own kind, so nothing is hidden.
    """
    groups: dict[tuple[str, ...], list[OpenedContact]] = {}
    for item in opened:
        kind = problem_kind(item.problem) or ""
        key = (item.event.role, item.event.subject, item.event.venue_id, item.name, item.phone, item.id, kind)
        groups.setdefault(key, []).append(item)
    rows = []
    for (role, subject, venue_id, name, phone, ident, kind), items in groups.items():
        times = [i.event.ts_ms for i in items]
        rows.append(OpenedPerson(role, subject, venue_id, items[-1].display, name, phone, ident, kind or None,
                                 len(items), min(times), max(times)))
    return sorted(rows, key=lambda r: (r.role != CASE, r.first_ms, r.venue_id, r.subject, r.problem or ""))


def _cell(value: object) -> object:
    """Text a spreadsheet would run as a formula (a name starting with "=", a phone with "+") is
    written as text."""
    if isinstance(value, str):
        value = clean_text(value)
        if value.startswith(_FORMULA_START):
            return "'" + value
    return value


def write_opened_csv(rows: Sequence[OpenedPerson], out: IO[bytes], tz: tzinfo, *, headings: Mapping[str, str],
                     roles: Mapping[str, str], problems: Mapping[str, str], venue_names: Mapping[str, str]) -> None:
    """Write the rows as UTF-8 CSV with a BOM (spreadsheets then show Vietnamese right).

    Args:
        headings: ``CSV_FIELDS`` -> the column heading in the page's language.
        roles, problems: the words for ``case``/``contact`` and for the problem kinds.
        venue_names: venue_id -> name (the id when unknown).
    """
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow([headings[f] for f in CSV_FIELDS])
    for r in rows:
        values = {"role": roles.get(r.role, r.role), "name": r.name, "phone": r.phone, "id": r.id,
                  "venue": venue_names.get(r.venue_id, r.venue_id), "first_scan": local_time(r.first_ms, tz),
                  "last_scan": local_time(r.last_ms, tz), "scans": r.scans, "display": r.display,
                  "problem": problems.get(r.problem, r.problem) if r.problem else ""}
        writer.writerow([_cell(values[f]) for f in CSV_FIELDS])
    text.flush()
    text.detach()
