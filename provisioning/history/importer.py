"""`qrgate history import`: scan events from a JSON Lines file into the history, for recovery.

Each line is one scan event as a gate publishes it (``ScanEvent.to_json_dict``, schema
``qrgate.scan/1``): a backup, a test scenario, or a gate's outbox copied off a broken SD card.
Every line goes through the collector's own check (``events.parse_scan``, with the event's
own ``device_id`` standing for the topic's), and events are stored once by ``event_id``, so
importing a file twice, or a file that overlaps what the collector already stored, adds
nothing twice.

Verified like the collector (issue 10): a line signed by its gate (as the gate publishes it, and
as ``qrgate outbox export`` writes it: the event JSON with a last ``"sig"`` member) whose signature
verifies with the key the history registered for the event's ``device_id`` is **verified**. A line
without a signature, or of a gate with no registered key, is **unverifiable**: the whole import is
refused unless ``--unverified``. A signature that does not verify with the registered key (a
changed byte, a forged event, another key) is a broken line, never stored. Every event an import
stores is recorded in ``event_imports`` (event id, file hash, time, operator, ``unverified`` 0 or
1), so the history can always tell an imported event, and an unverified one, from a collected one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from firmware.core import event_signature
from provisioning.history.events import HistoryEvent, Rejected, bad_signature_reason, no_key_reason, parse_scan, verifies
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
        verified: events whose signature verified with their gate's registered key.
        unverifiable: ``(line number, why)`` of the first ``MAX_REPORTED`` events that cannot be verified.
        unverified: how many events cannot be verified (unsigned, or no key registered).
    """

    lines: int = 0
    events: int = 0
    stored: int = 0
    refused: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    sha256: str = ""
    verified: int = 0
    unverified: int = 0
    unverifiable: list[tuple[int, str]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.events - self.stored


def _verify(raw: bytes, device: str, keys: dict[str, str]) -> tuple[bytes, str | None, str | None]:
    """Split a line into the event body and its verification: (body, why unverifiable, why refused)."""
    line = raw.rstrip(b"\r\n")
    try:
        sealed = event_signature.unseal(line)
    except event_signature.SignatureError:
        if event_signature.SIG_MARKER in line:
            return line, None, "a \"sig\" member that is not a signature at the end of the event"
        return line, "unsigned", None
    registered = keys.get(device)
    if registered is None:
        return sealed.body, no_key_reason(device), None
    if not verifies(sealed, registered):
        return sealed.body, None, bad_signature_reason(device) + " (changed, forged, or signed by another key)"
    return sealed.body, None, None


def read_events(stream: IO[bytes], now_ms: int, result: ImportResult,
                keys: dict[str, str]) -> Iterator[tuple[HistoryEvent, bool]]:
    """Yield ``(event, verified)`` for the valid events of a JSONL stream; count and report the refused
    lines and the unverifiable events in ``result``.

    Args:
        keys: the registered device keys (``HistoryStore.device_keys``).
    """
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
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            _refuse(result, number, "not UTF-8 JSON")
            continue
        device = data.get("device_id") if isinstance(data, dict) else None
        if not isinstance(device, str):
            _refuse(result, number, "no device_id")
            continue
        body, unverifiable, refused = _verify(raw, device, keys)
        if refused is not None:
            _refuse(result, number, refused)
            continue
        parsed = parse_scan(device, body, now_ms)
        if isinstance(parsed, Rejected):
            _refuse(result, number, parsed.problem)
            continue
        result.events += 1
        if unverifiable is None:
            result.verified += 1
        else:
            result.unverified += 1
            if len(result.unverifiable) < MAX_REPORTED:
                result.unverifiable.append((number, unverifiable))
        yield parsed, unverifiable is None
    result.sha256 = digest.hexdigest()


def _refuse(result: ImportResult, line: int, reason: str) -> None:
    result.refused += 1
    if len(result.problems) < MAX_REPORTED:
        result.problems.append((line, reason))


def check_file(stream: IO[bytes], now_ms: int, keys: dict[str, str]) -> ImportResult:
    """Read and verify a whole file without storing anything (the first pass of an import)."""
    result = ImportResult()
    for _ in read_events(stream, now_ms, result, keys):
        pass
    return result


def import_events(store: SqlHistoryStore, stream: IO[bytes], now_ms: int, operator: str, *,
                  unverified: bool, sha256: str) -> ImportResult:
    """Store the valid events of the stream (by ``event_id``, once) and mark each in ``event_imports``.

    Verified events are marked ``unverified = 0``; unverifiable ones are stored (marked
    ``unverified = 1``) only when ``unverified`` is true, and skipped otherwise.

    Args:
        sha256: the file's hash from ``check_file`` (kept with each mark).

    Raises:
        StoreError: the database refused; the batches committed before stay (importing again is safe).
    """
    store._write(_TABLE, [])
    keys = store.device_keys()
    result = ImportResult()
    batch: list[tuple[HistoryEvent, bool]] = []
    for event, verified in read_events(stream, now_ms, result, keys):
        if not verified and not unverified:
            continue
        batch.append((event, verified))
        if len(batch) >= BATCH_EVENTS:
            _store(store, batch, result, (sha256, now_ms, operator))
            batch = []
    _store(store, batch, result, (sha256, now_ms, operator))
    return result


def _store(store: SqlHistoryStore, batch: list[tuple[HistoryEvent, bool]], result: ImportResult,
           mark: tuple[str, int, str]) -> None:
    """Mark the batch's events not stored yet, then store them.

    Marks go first, so a crash between the two commits leaves marks without events (the next
    import of the file stores them, already marked), never imported events without a mark.
    """
    if not batch:
        return
    ids = [event.event_id for event, _ in batch]
    marks_ = ", ".join("?" for _ in ids)
    stored = {str(r[0]) for r in store._fetch(f"SELECT event_id FROM events WHERE event_id IN ({marks_})", ids)}
    # an event twice in one file: marked unverified if any of its lines is
    flags: dict[str, bool] = {}
    for event, verified in batch:
        if event.event_id not in stored:
            flags[event.event_id] = flags.get(event.event_id, False) or not verified
    sha256, now_ms, operator = mark
    if flags:  # one statement per batch: one commit, not one per event
        store._write(_MARK.format(rows=", ".join("(?, ?, ?, ?, ?)" for _ in flags)),
                     [v for i, unverified in flags.items() for v in (i, sha256, now_ms, operator, int(unverified))])
    result.stored += len(store.add([event for event, _ in batch]))


def marks(store: SqlHistoryStore) -> dict[str, tuple[str, int, str, bool]]:
    """event_id -> (file sha256, imported_ms, operator, unverified) of every imported event."""
    store._write(_TABLE, [])
    rows = store._fetch("SELECT event_id, source_sha256, imported_ms, operator, unverified FROM event_imports")
    return {str(e): (str(s), int(t), str(o), bool(u)) for e, s, t, o, u in rows}
