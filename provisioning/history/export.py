"""Writing history rows as a readable table, CSV, JSON or XLSX.

The columns are the same in every file format (``EXPORT_COLUMNS``). Only what the store
keeps is written: the masked name and phone, and the subject as the gate's privacy
setting left it. Cells that a spreadsheet would run as a formula are written as text.
A venue appears by its id and, when the caller knows it (venue records, the back office),
its name (``venue_name``). In XLSX the local time is a real date-time cell in the chosen
time zone, columns are fitted to their contents, the header row is frozen and filtered.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import IO, Any

from firmware.core.text import strip_invisible
from provisioning.history.events import HistoryEvent

FORMATS = ("table", "csv", "json", "xlsx")
EXPORT_COLUMNS = ("local_time", "ts", "display", "venue_id", "venue_name", "device_id", "direction", "decision",
                  "reason", "credential", "subject", "seq", "event_id", "boot_id", "time_synced",
                  "latency_ms", "code_sha256")
_TABLE_COLUMNS = (("local_time", "Time"), ("display", "Person"), ("venue_id", "Venue"),
                  ("device_id", "Device"), ("direction", "Dir"), ("decision", "Decision"),
                  ("reason", "Reason"))
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "table": "text/plain; charset=utf-8",
}


def local_time(ts_ms: int, tz: tzinfo) -> str:
    """Format Unix ms as ``YYYY-MM-DD HH:MM:SS`` in ``tz`` (what the manager reads).

    Never raises: a time the calendar cannot hold in ``tz`` (a forged ``9999-12-31T23:00Z``
    is year 10000 in Asia/Ho_Chi_Minh) is shown in UTC with ``UTC`` after it, and one that
    is out of every range as ``invalid time``.
    """
    try:
        return datetime.fromtimestamp(ts_ms / 1000, tz=tz).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        pass
    try:
        return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "invalid time"


def _local_datetime(ts_ms: int, tz: tzinfo) -> datetime | None:
    """A naive date-time in tz for a spreadsheet cell, or None when the calendar cannot hold it
    (a forged far-future time): the cell then gets ``local_time``'s text instead."""
    try:
        when = datetime.fromtimestamp(ts_ms / 1000, tz=tz).replace(tzinfo=None)
    except (OverflowError, ValueError, OSError):
        return None
    return when if when.year < 9999 else None


def clean_text(value: str) -> str:
    """Text safe in every export and page: NFC, control and format characters (bidi controls,
    zero-width) removed, since XML (XLSX) cannot hold most controls and bidi controls reorder a row."""
    value = unicodedata.normalize("NFC", value)
    return value if value.isprintable() else strip_invisible(value)


def export_record(ev: HistoryEvent, tz: tzinfo, venue_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the export columns of one event, in ``EXPORT_COLUMNS`` order."""
    values = ev.as_dict()
    values["local_time"] = local_time(ev.ts_ms, tz)
    values["venue_name"] = (venue_names or {}).get(ev.venue_id, "")
    values = {k: clean_text(v) if isinstance(v, str) else v for k, v in values.items()}
    return {c: values[c] for c in EXPORT_COLUMNS}


def _text_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_table(rows: Iterable[HistoryEvent], total: int, out: IO[str], tz: tzinfo,
                venue_names: Mapping[str, str] | None = None) -> int:
    """Write an aligned text table and a count line (venues by name where known). Returns rows."""
    records = [export_record(ev, tz, venue_names) for ev in rows]
    for rec in records:
        rec["venue_id"] = rec["venue_name"] or rec["venue_id"]
    widths = {key: len(title) for key, title in _TABLE_COLUMNS}
    for rec in records:
        for key, _ in _TABLE_COLUMNS:
            widths[key] = min(40, max(widths[key], len(str(rec[key]))))

    def line(cells: dict[str, str]) -> str:
        return "  ".join(str(cells[k])[:widths[k]].ljust(widths[k]) for k, _ in _TABLE_COLUMNS).rstrip()

    out.write(line({k: t for k, t in _TABLE_COLUMNS}) + "\n")
    for rec in records:
        out.write(line(rec) + "\n")
    if len(records) < total:
        out.write(f"{total} events match; showing the newest {len(records)} "
                  "(use --limit, or --format csv|json|xlsx --out FILE for all)\n")
    else:
        out.write(f"{total} events\n")
    return len(records)


def write_csv(rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo,
              venue_names: Mapping[str, str] | None = None) -> int:
    """Write UTF-8 CSV with a BOM (so spreadsheet programs show Vietnamese right). Returns rows."""
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for ev in rows:
        rec = export_record(ev, tz, venue_names)
        writer.writerow([_text_cell(rec[c]) if c != "latency_ms" else rec[c] for c in EXPORT_COLUMNS])
        count += 1
    text.flush()
    text.detach()
    return count


def write_json(rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo, filters: dict[str, Any],
               venue_names: Mapping[str, str] | None = None) -> int:
    """Write ``{"filters": ..., "events": [...], "count": n}`` as UTF-8 JSON. Returns rows."""
    out.write(b'{"filters": ' + json.dumps(filters).encode() + b', "events": [')
    count = 0
    for ev in rows:
        out.write((b",\n" if count else b"\n") + json.dumps(export_record(ev, tz, venue_names), ensure_ascii=False).encode())
        count += 1
    out.write(b'\n], "count": ' + str(count).encode() + b"}\n")
    return count


XLSX_MAX_WIDTH = 60
XLSX_TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


def write_xlsx(rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo,
               venue_names: Mapping[str, str] | None = None, filters: dict[str, Any] | None = None) -> int:
    """Write an Excel workbook with openpyxl. Returns rows.

    One sheet: a frozen, filtered header row; ``local_time`` as a date-time cell (Excel has
    no time zones: the wall time in ``tz``, named on the ``about`` sheet with the filters); the other cells as
    values, text never read as a formula; each column as wide as its longest cell (capped).
    """
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    book = Workbook()
    sheet = book.active
    sheet.title = "history"
    header = list(EXPORT_COLUMNS)
    sheet.append(header)
    widths = [len(h) for h in header]
    count = 0
    for ev in rows:
        rec = export_record(ev, tz, venue_names)
        count += 1
        for col_index, col in enumerate(EXPORT_COLUMNS, start=1):
            value = rec[col]
            when = _local_datetime(ev.ts_ms, tz) if col == "local_time" else None
            if when is not None:
                cell = sheet.cell(row=count + 1, column=col_index, value=when)
                cell.number_format = XLSX_TIME_FORMAT
                shown = len(XLSX_TIME_FORMAT)
            else:
                cell = sheet.cell(row=count + 1, column=col_index, value=value)
                if isinstance(value, str):
                    cell.data_type = "s"  # never a formula, whatever the text starts with
                shown = len(str(value)) if value is not None else 0
            widths[col_index - 1] = max(widths[col_index - 1], shown)
    for col_index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(col_index)].width = min(XLSX_MAX_WIDTH, width + 2)
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(EXPORT_COLUMNS))}{count + 1}"
    about = book.create_sheet("about")
    about.append(["local_time is in", getattr(tz, "key", None) or datetime.now(tz).strftime("UTC%z")])
    for key, value in (filters or {}).items():
        about.append([f"filter {key}", str(value)])
    about.column_dimensions["A"].width = 20
    about.column_dimensions["B"].width = 40
    book.save(out)
    return count


def write_export(fmt: str, rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo,
                 filters: dict[str, Any], venue_names: Mapping[str, str] | None = None) -> int:
    """Write rows in a file format (``csv``, ``json`` or ``xlsx``). Returns the number of rows.

    ``venue_names`` (venue id to name) fills the ``venue_name`` column; ids are always kept."""
    if fmt == "csv":
        return write_csv(rows, out, tz, venue_names)
    if fmt == "json":
        return write_json(rows, out, tz, filters, venue_names)
    if fmt == "xlsx":
        return write_xlsx(rows, out, tz, venue_names, filters)
    raise ValueError(f"unknown export format {fmt!r}; use one of csv, json, xlsx")
