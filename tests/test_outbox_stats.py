"""SqliteOutbox.stats(): in-memory figures that match the database, read without the lock."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from firmware.adapters.outbox import ALARM_LEVELS, SqliteOutbox, StorageFull
from tests.conftest import FakeClock
from tests.test_outbox import AlarmLog, scan_event


def figures_from_db(path: Path, max_events: int) -> tuple:
    """What stats() must report, read straight from the file through a second connection."""
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        unsent = conn.execute("SELECT count(*) FROM events WHERE sent = 0").fetchone()[0]
        row = conn.execute("SELECT created_s FROM events WHERE sent = 0 ORDER BY seq LIMIT 1").fetchone()
        high = max(conn.execute("SELECT value FROM meta WHERE key = 'seq_high'").fetchone()[0],
                   conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    fill = unsent / max_events
    level = 1.0 if unsent >= max_events else max([0.0] + [a for a in ALARM_LEVELS if fill >= a])
    quarantined = tuple(sorted(p.name for p in path.parent.glob(path.name + ".corrupt-*")
                               if not p.name.endswith(("-wal", "-shm"))))
    return (stored, unsent, None if row is None else row[0], high, min(1.0, fill), level, quarantined)


def figures(outbox: SqliteOutbox) -> tuple:
    s = outbox.stats()
    assert s.max_events == outbox.max_events
    return (s.stored, s.unsent, s.oldest_unsent_s, s.seq_high, s.fill, s.alarm_level, s.quarantined)


def test_stats_match_the_database_through_appends_acks_prunes_full_and_reopens(tmp_path):
    path, max_events = tmp_path / "outbox.sqlite", 40
    clock = FakeClock(wall_s=1_700_000_000.0)
    rng = random.Random(20261126)
    alarms = AlarmLog()

    def reopen() -> SqliteOutbox:
        return SqliteOutbox(path, max_events=max_events, retention_s=300.0, wall=clock.wall, on_alarm=alarms)

    outbox = reopen()
    assert figures(outbox) == figures_from_db(path, max_events)
    ops = {"append": 0, "full": 0, "ack": 0, "ack_oldest": 0, "prune": 0, "crash": 0, "reopen": 0}
    for i in range(600):
        clock.advance(rng.choice([0.0, 0.5, 7.0, 90.0]))
        # Appends only at first, to fill the budget (alarms, StorageFull), then a random mix.
        op = "append" if i <= max_events else rng.choices(list(ops), weights=[10, 0, 4, 2, 2, 1, 1])[0]
        unsent = [seq for seq, _ in outbox.pending(0, max_events)]
        if op == "append":
            try:
                outbox.append(scan_event())
            except StorageFull:
                op = "full"
        elif op == "ack" and unsent:
            outbox.mark_sent(rng.sample(unsent, rng.randint(1, len(unsent))) + [10_000])
        elif op == "ack_oldest" and unsent:
            outbox.mark_sent(unsent[:1])
        elif op == "prune":
            outbox.prune(clock.wall())
        elif op == "crash":
            outbox = reopen()  # no close: as after a power cut (the old connection is dropped)
        elif op == "reopen":
            outbox.close()
            outbox = reopen()
        ops[op] += 1
        assert figures(outbox) == figures_from_db(path, max_events), op
    assert min(ops.values()) > 0, ops  # every kind of change was exercised
    # A quarantined file is seen at open, and again when the directory is looked at.
    (tmp_path / "outbox.sqlite.corrupt-20260101T000000Z").write_bytes(b"old")
    assert figures(outbox)[-1] == ()  # stats() does not glob
    assert outbox.quarantined_files() == ("outbox.sqlite.corrupt-20260101T000000Z",)
    assert figures(outbox) == figures_from_db(path, max_events)
    outbox.close()
    outbox = reopen()
    assert figures(outbox) == figures_from_db(path, max_events)
    assert alarms.changes[-1][0] == "outbox_quarantined"
    outbox.close()


def test_stats_never_wait_on_the_append_lock_nor_touch_the_database(tmp_path):
    clock = FakeClock(wall_s=1_700_000_000.0)
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", max_events=100, wall=clock.wall)
    for _ in range(3):
        outbox.append(scan_event())
    outbox.mark_sent([1])
    statements: list[str] = []
    outbox._conn.set_trace_callback(statements.append)
    results: list = []
    done = threading.Event()

    def read() -> None:
        results.append(outbox.stats())
        done.set()

    # Hold the lock an append would hold during its fsync'd commit: stats() must still answer.
    with outbox._lock:
        threading.Thread(target=read, name="stats-reader", daemon=True).start()
        answered = done.wait(timeout=5.0)
    assert answered, "stats() waited on the outbox lock"
    assert (results[0].stored, results[0].unsent, results[0].oldest_unsent_s) == (3, 2, 1_700_000_000.0)
    for _ in range(100):
        outbox.stats()
    assert statements == []
    outbox._conn.set_trace_callback(None)
    outbox.close()


@pytest.mark.parametrize("acked", [[2], [1], [1, 2, 3]])
def test_oldest_unsent_follows_acks_in_any_order(tmp_path, acked):
    clock = FakeClock(wall_s=1_700_000_000.0)
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite", max_events=100, wall=clock.wall)
    for _ in range(3):
        outbox.append(scan_event())
        clock.advance(10.0)
    outbox.mark_sent(acked)
    assert figures(outbox) == figures_from_db(tmp_path / "outbox.sqlite", 100)
    outbox.close()
