"""`qrgate history import`: scan events from a JSON Lines file into the history, for recovery.

Each line is one scan event as a gate publishes it (``ScanEvent.to_json_dict``, schema
``qrgate.scan/1``): a backup, a test scenario, or a gate's outbox copied off a broken SD card.
Every line goes through the collector's own check (``events.parse_scan``, with the event's
own ``device_id`` standing for the topic's), and events are stored once by ``event_id``, so
importing a file twice, or a file that overlaps what the collector already stored, adds
nothing twice.

Scan events carry no signature in this version, so no event can be verified beyond the
collector's checks: ``--unverified`` is required to import at all, and every event imported
is recorded in ``event_imports`` (event id, file hash, time, operator, ``unverified = 1``),
so the history can always tell an imported event from a collected one. When events are
signed (issue 10), verified events are imported without the flag and recorded with
``unverified = 0``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from provisioning.history.events import HistoryEvent, Rejected, parse_scan
from provisioning.history.sql_store import SqlHistoryStore

MAX_LINE_BYTES = 64 * 1024
BATCH_EVENTS = 500
MAX_REPORTED = 50

_TABLE = ("CREATE TABLE IF NOT EXISTS event_imports (event_id TEXT PRIMARY KEY, source_sha256 TEXT NOT NULL,"
          " imported_ms BIGINT NOT NULL, operator TEXT NOT NULL, unverified INTEGER NOT NULL)")
_MARK = ("INSERT INTO event_imports (event_id, source_sha256, imported_ms, operator, unverified)"
         " VALUES {rows} ON CONFLICT (event_id) DO NOTHING")


@dataclass
class ImportResult:
    """What an import read and did.

    Attributes:
        lines: non-blank lines read.
        events: lines that are valid scan events.
        stored: events that were new to the history.
        problems: ``(line number, reason)`` of refused lines, the first ``MAX_REPORTED``.
        refused: how many lines were refused.
        sha256: the file's SHA-256 (kept with each imported event).
    """

    lines: int = 0
    events: int = 0
    stored: int = 0
    refused: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    sha256: str = ""

    @property
    def duplicates(self) -> int:
        return self.events - self.stored


def read_events(stream: IO[bytes], now_ms: int, result: ImportResult) -> Iterator[HistoryEvent]:
    """Yield the valid events of a JSONL stream; count and report the refused lines in ``result``."""
    digest = hashlib.sha256()
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            break
        digest.update(raw)
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the long line
                raw = stream.readline(MAX_LINE_BYTES + 1)
                digest.update(raw)
            _refuse(result, number, f"line longer than {MAX_LINE_BYTES} bytes")
            result.lines += 1
            continue
        if not raw.strip():
            continue
        result.lines += 1
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            _refuse(result, number, "not UTF-8 JSON")
            continue
        device = data.get("device_id") if isinstance(data, dict) else None
        if not isinstance(device, str):
            _refuse(result, number, "no device_id")
            continue
        parsed = parse_scan(device, raw, now_ms)
        if isinstance(parsed, Rejected):
            _refuse(result, number, parsed.problem)
            continue
        result.events += 1
        yield parsed
    result.sha256 = digest.hexdigest()


def _refuse(result: ImportResult, line: int, reason: str) -> None:
    result.refused += 1
    if len(result.problems) < MAX_REPORTED:
        result.problems.append((line, reason))


def check_file(stream: IO[bytes], now_ms: int) -> ImportResult:
    """Read a whole file without storing anything (the first pass of an import)."""
    result = ImportResult()
    for _ in read_events(stream, now_ms, result):
        pass
    return result


def import_events(store: SqlHistoryStore, stream: IO[bytes], now_ms: int, operator: str, *,
                  unverified: bool, sha256: str) -> ImportResult:
    """Store the valid events of the stream (by ``event_id``, once) and mark each in ``event_imports``.

    Args:
        sha256: the file's hash from ``check_file`` (kept with each mark).

    Raises:
        StoreError: the database refused; the batches committed before stay (importing again is safe).
    """
    store._write(_TABLE, [])
    result = ImportResult()
    batch: list[HistoryEvent] = []
    for event in read_events(stream, now_ms, result):
        batch.append(event)
        if len(batch) >= BATCH_EVENTS:
            _store(store, batch, result, (sha256, now_ms, operator, unverified))
            batch = []
    _store(store, batch, result, (sha256, now_ms, operator, unverified))
    return result


def _store(store: SqlHistoryStore, batch: list[HistoryEvent], result: ImportResult,
           mark: tuple[str, int, str, bool]) -> None:
    """Mark the batch's events not stored yet, then store them.

    Marks go first, so a crash between the two commits leaves marks without events (the next
    import of the file stores them, already marked), never imported events without a mark.
    """
    if not batch:
        return
    ids = [event.event_id for event in batch]
    marks_ = ", ".join("?" for _ in ids)
    stored = {str(r[0]) for r in store._fetch(f"SELECT event_id FROM events WHERE event_id IN ({marks_})", ids)}
    new = list(dict.fromkeys(i for i in ids if i not in stored))
    sha256, now_ms, operator, unverified = mark
    if new:  # one statement per batch: one commit, not one per event
        store._write(_MARK.format(rows=", ".join("(?, ?, ?, ?, ?)" for _ in new)),
                     [v for i in new for v in (i, sha256, now_ms, operator, int(unverified))])
    result.stored += len(store.add(batch))


def marks(store: SqlHistoryStore) -> dict[str, tuple[str, int, str, bool]]:
    """event_id -> (file sha256, imported_ms, operator, unverified) of every imported event."""
    store._write(_TABLE, [])
    rows = store._fetch("SELECT event_id, source_sha256, imported_ms, operator, unverified FROM event_imports")
    return {str(e): (str(s), int(t), str(o), bool(u)) for e, s, t, o, u in rows}
