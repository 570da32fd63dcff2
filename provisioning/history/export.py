"""Writing history rows as a readable table, CSV, JSON or XLSX.

The columns are the same in every file format (``EXPORT_COLUMNS``). Only what the store
keeps is written: the masked name and phone, and the subject as the gate's privacy
setting left it. Cells that a spreadsheet would run as a formula are written as text.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timezone, tzinfo
from typing import IO, Any

from firmware.core.text import strip_invisible
from provisioning.history.events import HistoryEvent

FORMATS = ("table", "csv", "json", "xlsx")
EXPORT_COLUMNS = ("local_time", "ts", "display", "venue_id", "device_id", "direction", "decision",
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


def clean_text(value: str) -> str:
    """Text safe in every export and page: NFC, control and format characters (bidi controls,
    zero-width) removed, since XML (XLSX) cannot hold most controls and bidi controls reorder a row."""
    value = unicodedata.normalize("NFC", value)
    return value if value.isprintable() else strip_invisible(value)


def export_record(ev: HistoryEvent, tz: tzinfo) -> dict[str, Any]:
    """Return the export columns of one event, in ``EXPORT_COLUMNS`` order."""
    values = ev.as_dict()
    values["local_time"] = local_time(ev.ts_ms, tz)
    values = {k: clean_text(v) if isinstance(v, str) else v for k, v in values.items()}
    return {c: values[c] for c in EXPORT_COLUMNS}


def _text_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_table(rows: Iterable[HistoryEvent], total: int, out: IO[str], tz: tzinfo) -> int:
    """Write an aligned text table and a count line. Returns the number of rows written."""
    records = [export_record(ev, tz) for ev in rows]
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


def write_csv(rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo) -> int:
    """Write UTF-8 CSV with a BOM (so spreadsheet programs show Vietnamese right). Returns rows."""
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for ev in rows:
        rec = export_record(ev, tz)
        writer.writerow([_text_cell(rec[c]) if c != "latency_ms" else rec[c] for c in EXPORT_COLUMNS])
        count += 1
    text.flush()
    text.detach()
    return count


def write_json(rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo, filters: dict[str, Any]) -> int:
    """Write ``{"filters": ..., "events": [...], "count": n}`` as UTF-8 JSON. Returns rows."""
    out.write(b'{"filters": ' + json.dumps(filters).encode() + b', "events": [')
    count = 0
    for ev in rows:
        out.write((b",\n" if count else b"\n") + json.dumps(export_record(ev, tz), ensure_ascii=False).encode())
        count += 1
    out.write(b'\n], "count": ' + str(count).encode() + b"}\n")
    return count


def write_xlsx(rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo) -> int:
    """Write an Excel workbook (one sheet, header row) with openpyxl. Returns rows."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet("history")
    sheet.append(list(EXPORT_COLUMNS))
    count = 0
    for ev in rows:
        rec = export_record(ev, tz)
        cells = []
        for col in EXPORT_COLUMNS:
            cell = WriteOnlyCell(sheet, value=rec[col])
            if isinstance(rec[col], str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
            cells.append(cell)
        sheet.append(cells)
        count += 1
    book.save(out)
    return count


def write_export(fmt: str, rows: Iterable[HistoryEvent], out: IO[bytes], tz: tzinfo,
                 filters: dict[str, Any]) -> int:
    """Write rows in a file format (``csv``, ``json`` or ``xlsx``). Returns the number of rows."""
    if fmt == "csv":
        return write_csv(rows, out, tz)
    if fmt == "json":
        return write_json(rows, out, tz, filters)
    if fmt == "xlsx":
        return write_xlsx(rows, out, tz)
    raise ValueError(f"unknown export format {fmt!r}; use one of csv, json, xlsx")
