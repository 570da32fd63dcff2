"""A trace's answer as the health office reads it: JSON, CSV, XLSX or a text table.

JSON: ``{"case": {...}, "visits": [{"venue_id", "from", "to", "started_by", "ended_by"}],
"contacts": [{"subject", "display", "venue_id", "from", "to", "overlap_s", "overlaps"}],
"count": N}``, times in UTC RFC 3339. ``count`` is the number of contact rows (one per
overlap); ``people`` the number of different contacts; ``overlaps`` on a row is how many
overlaps that subject has in the whole trace. Only what the store keeps is written: masked
displays and subjects as stored. CSV and XLSX cells a spreadsheet would run as formulas are
written as text.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import tzinfo
from typing import IO, Any

from provisioning.history.events import format_ts
from provisioning.history.export import local_time
from provisioning.history.trace_store import TraceFound
from provisioning.history.tracing import TraceRules

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("kind", "subject", "display", "venue_id", "from", "to", "overlap_s", "started_by", "ended_by",
               "overlaps")
# With --reveal: one row per opened event (kind "opened"; "from" is the scan's time).
REVEAL_COLUMNS = ("role", "event_id", "name", "phone", "id", "problem")


def _rfc3339(ts_ms: int) -> str:
    return format_ts(ts_ms).replace(".000Z", "Z")


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def trace_report(found: TraceFound, case_subjects: frozenset[str], since_ms: int, until_ms: int,
                 rules: TraceRules) -> dict[str, Any]:
    """The JSON-ready answer of a trace (see module docstring)."""
    result = found.result
    case_display = next((found.displays[(v.subject, v.venue_id)] for v in reversed(result.visits)
                         if (v.subject, v.venue_id) in found.displays), "")
    per_subject = Counter(c.subject for c in result.contacts)
    return {
        "case": {
            "subjects": sorted(case_subjects), "display": case_display,
            "since": _rfc3339(since_ms), "until": _rfc3339(until_ms),
            "min_overlap_min": _number(rules.min_overlap_ms / 60_000),
            "default_dwell_min": _number(rules.default_dwell_ms / 60_000),
            "max_dwell_h": _number(rules.max_dwell_ms / 3_600_000),
            "venues": sorted({v.venue_id for v in result.visits}),
        },
        "visits": [{"venue_id": v.venue_id, "from": _rfc3339(v.from_ms), "to": _rfc3339(v.to_ms),
                    "started_by": v.started_by, "ended_by": v.ended_by} for v in result.visits],
        "contacts": [{"subject": c.subject, "display": found.displays.get((c.subject, c.venue_id), ""),
                      "venue_id": c.venue_id, "from": _rfc3339(c.from_ms), "to": _rfc3339(c.to_ms),
                      "overlap_s": c.overlap_ms // 1000, "overlaps": per_subject[c.subject]}
                     for c in result.contacts],
        "count": len(result.contacts),
        "people": len(per_subject),
    }


def revealed_rows(opened: list[Any]) -> list[dict[str, Any]]:
    """The JSON-ready rows of a reveal (``reveal.OpenedContact`` list), times in RFC 3339."""
    rows = []
    for item in opened:
        row = item.as_dict()
        row["ts"] = _rfc3339(row.pop("ts_ms"))
        rows.append(row)
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"kind": "visit", "subject": "", "display": report["case"]["display"], **v, "overlap_s": "",
             "overlaps": ""} for v in report["visits"]]
    rows += [{"kind": "contact", **c, "started_by": "", "ended_by": ""} for c in report["contacts"]]
    rows += [{"kind": "opened", "subject": r["subject"], "display": r["display"], "venue_id": r["venue_id"],
              "from": r["ts"], "to": "", "overlap_s": "", "started_by": "", "ended_by": "", "overlaps": "",
              **{c: r[c] or "" for c in REVEAL_COLUMNS}} for r in report.get("revealed", ())]
    return rows


def _columns(report: dict[str, Any]) -> tuple[str, ...]:
    return CSV_COLUMNS + REVEAL_COLUMNS if "revealed" in report else CSV_COLUMNS


def write_trace(fmt: str, report: dict[str, Any], out: IO[bytes], tz: tzinfo) -> None:
    """Write the report as ``json``, ``csv``, ``xlsx`` or ``table`` (UTF-8)."""
    if fmt == "json":
        out.write(json.dumps(report, ensure_ascii=False, indent=1).encode() + b"\n")
    elif fmt == "csv":
        text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
        writer = csv.writer(text)
        columns = _columns(report)
        writer.writerow(columns)
        for row in _rows(report):
            writer.writerow([_cell(row.get(c, "")) for c in columns])
        text.flush()
        text.detach()
    elif fmt == "xlsx":
        _write_xlsx(report, out)
    elif fmt == "table":
        out.write(render_table(report, tz).encode())
    else:
        raise ValueError(f"unknown format {fmt!r}; use table, json, csv or xlsx")


def _write_xlsx(report: dict[str, Any], out: IO[bytes]) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheets = [("visits", "visit", CSV_COLUMNS), ("contacts", "contact", CSV_COLUMNS)]
    if "revealed" in report:
        sheets.append(("opened", "opened", ("subject", "display", "venue_id", "from", *REVEAL_COLUMNS)))
    for title, kind, columns in sheets:
        sheet = book.create_sheet(title)
        sheet.append(list(columns))
        for row in _rows(report):
            if row["kind"] != kind:
                continue
            cells = []
            for col in columns:
                cell = WriteOnlyCell(sheet, value=row[col])
                if isinstance(row[col], str):
                    cell.data_type = "s"  # never a formula
                cells.append(cell)
            sheet.append(cells)
    book.save(out)


def render_table(report: dict[str, Any], tz: tzinfo) -> str:
    """The report as text: the case's visits, then the contacts, in local time."""
    from provisioning.history.events import parse_ts_ms

    def local(ts: str) -> str:
        return local_time(parse_ts_ms(ts), tz)[:16]

    case = report["case"]
    lines = [f"case {case['display'] or '(no display)'}: {len(report['visits'])} visits at "
             f"{len(case['venues'])} venues, {case['since']} to {case['until']}",
             f"{'venue':<14} {'from':<16}  {'to':<16}  ended by"]
    lines += [f"{v['venue_id']:<14} {local(v['from'])}  {local(v['to'])}  {v['ended_by']}" for v in report["visits"]]
    lines.append("")
    lines.append(f"{'contact':<34} {'venue':<14} {'from':<16}  {'to':<16}  {'min':>5}  overlaps")
    for c in report["contacts"]:
        who = (c["display"] or c["subject"][:12])[:34]
        lines.append(f"{who:<34} {c['venue_id']:<14} {local(c['from'])}  {local(c['to'])}  "
                     f"{c['overlap_s'] // 60:>5}  {c['overlaps']}")
    lines.append(f"{report['count']} overlaps, {report['people']} people (at least "
                 f"{case['min_overlap_min']:g} min together)")
    if "revealed" in report:
        opened = report["revealed"]
        lines.append("")
        lines.append(f"contacts opened (audited): {sum(1 for r in opened if r['problem'] is None)} of {len(opened)} "
                     "events")
        lines.append(f"{'role':<8} {'venue':<14} {'time':<16}  {'name':<28} {'phone':<14} id")
        for r in opened:
            if r["problem"] is None:
                lines.append(f"{r['role']:<8} {r['venue_id']:<14} {local(r['ts'])}  {r['name'][:28]:<28} "
                             f"{r['phone'][:14]:<14} {r['id']}")
            else:
                lines.append(f"{r['role']:<8} {r['venue_id']:<14} {local(r['ts'])}  not opened: {r['problem']} "
                             f"(event {r['event_id']})")
    return "\n".join(lines) + "\n"
