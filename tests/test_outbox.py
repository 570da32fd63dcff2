"""SqliteOutbox: seq and event_id assignment, durability, budget, pruning, quarantine."""

from __future__ import annotations

import json
import sqlite3
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firmware.adapters.outbox import SEQ_RESERVE_BLOCK, SqliteOutbox, StorageFull, UnavailableSink
from firmware.core.errors import StoreError
from firmware.core.model import ScanEvent
from tests.conftest import FakeClock

_codes = count()


def scan_event(decision: str = "denied", reason: str = "unknown_format") -> ScanEvent:
    n = next(_codes)
    return ScanEvent(device_id="gate-1", venue_id="v-1", direction="in", ts="2026-11-26T10:00:00.000Z",
                     time_synced=True, boot_id="b00t", decision=decision, reason=reason, credential="unknown",
                     subject=None, display="", latency_ms=12.5, code_sha256=f"{n:064x}")


class AlarmLog:
    """Records alarm changes as (name, text) in order."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str | None]] = []

    def __call__(self, name: str, text: str | None) -> None:
        self.changes.append((name, text))


def open_outbox(path: Path, clock: FakeClock | None = None, **kw) -> SqliteOutbox:
    clock = clock or FakeClock()
    return SqliteOutbox(path, wall=clock.wall, **kw)


def db_rows(path: Path) -> list[tuple[int, str, int, dict]]:
    with sqlite3.connect(path) as conn:
        return [(seq, eid, sent, json.loads(body)) for seq, eid, sent, body in
                conn.execute("SELECT seq, event_id, sent, body FROM events ORDER BY seq")]


def test_append_assigns_increasing_seq_and_unique_event_ids_committed_before_return(tmp_path):
    outbox = open_outbox(tmp_path / "outbox.sqlite")
    stored = [outbox.append(scan_event()) for _ in range(5)]
    # Read through a second connection while the outbox is still open: the rows are committed.
    rows = db_rows(tmp_path / "outbox.sqlite")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5] == [e.seq for e in stored]
    assert [r[1] for r in rows] == [e.event_id for e in stored]
    assert len({e.event_id for e in stored}) == 5
    assert [r[3] for r in rows] == [e.to_json_dict() for e in stored]
    assert [r[2] for r in rows] == [0] * 5
    outbox.close()


def test_database_uses_wal_and_full_sync(tmp_path):
    outbox = open_outbox(tmp_path / "outbox.sqlite")
    assert outbox._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    outbox.close()


def test_seq_continues_after_restart_and_after_every_row_is_pruned(tmp_path):
    path = tmp_path / "outbox.sqlite"
    clock = FakeClock()
    outbox = open_outbox(path, clock, retention_s=60.0)
    for _ in range(3):
        outbox.append(scan_event())
    outbox.mark_sent([1, 2, 3])
    clock.advance(120.0)
    assert outbox.prune(clock.wall()) == 3
    outbox.close()
    reopened = open_outbox(path, clock)
    assert reopened.append(scan_event()).seq == 4
    reopened.close()


def test_pending_returns_unsent_in_seq_order_after_cursor_and_mark_sent_only_counts_changes(tmp_path):
    outbox = open_outbox(tmp_path / "outbox.sqlite")
    for _ in range(6):
        outbox.append(scan_event())
    assert outbox.mark_sent([2, 4]) == 2
    assert outbox.mark_sent([2, 4, 99]) == 0
    assert [seq for seq, _ in outbox.pending(after_seq=0, limit=10)] == [1, 3, 5, 6]
    assert [seq for seq, _ in outbox.pending(after_seq=3, limit=1)] == [5]
    body = dict(outbox.pending(0, 10))[1]
    assert json.loads(body)["seq"] == 1
    assert outbox.unsent == 4
    outbox.close()


def test_budget_refuses_with_storage_full_then_recovers_when_rows_are_sent(tmp_path):
    alarms = AlarmLog()
    outbox = open_outbox(tmp_path / "outbox.sqlite", max_events=10, on_alarm=alarms)
    for _ in range(10):
        outbox.append(scan_event())
    with pytest.raises(StorageFull) as info:
        outbox.append(scan_event())
    assert isinstance(info.value, StoreError)
    assert "outbox.max_events = 10" in str(info.value)
    assert [name for name, _ in alarms.changes] == ["outbox_fill"] * 3
    assert [text.split(":")[0] if text else None for _, text in alarms.changes] == [
        "outbox backlog at 50 % of its budget (5 of 10)", "outbox backlog at 80 % of its budget (8 of 10)",
        "outbox full"]
    assert outbox.stats().alarm_level == 1.0
    # Committed rows are intact; nothing was dropped to make room.
    assert [r[0] for r in db_rows(tmp_path / "outbox.sqlite")] == list(range(1, 11))
    outbox.mark_sent(range(1, 8))
    assert outbox.append(scan_event()).seq == 11  # sent rows were pruned to make room
    assert alarms.changes[-1] == ("outbox_fill", None)
    assert [r[0] for r in db_rows(tmp_path / "outbox.sqlite")] == list(range(2, 12))[-10:]
    outbox.close()


def test_prune_by_age_and_size_never_touches_unsent_rows(tmp_path):
    clock = FakeClock()
    outbox = open_outbox(tmp_path / "outbox.sqlite", clock, max_events=100, retention_s=3600.0)
    for _ in range(95):
        outbox.append(scan_event())
    outbox.mark_sent(range(1, 91))
    # Over 90 % of the budget: the oldest sent rows go even though they are young.
    assert outbox.prune(clock.wall()) == 5
    assert outbox.stats().stored == 90
    clock.advance(7200.0)
    assert outbox.prune(clock.wall()) == 85
    assert [r[0] for r in db_rows(tmp_path / "outbox.sqlite")] == [91, 92, 93, 94, 95]
    assert outbox.unsent == 5
    outbox.close()


@pytest.mark.parametrize("damage", ["garbage", "nul_filled", "truncated", "wrong_schema"])
def test_unreadable_outbox_is_quarantined_with_alarm_and_seq_continues_above_high_water(tmp_path, damage):
    path = tmp_path / "outbox.sqlite"
    outbox = open_outbox(path)
    for _ in range(2500):
        outbox.append(scan_event())
    outbox.close()
    size = path.stat().st_size
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif damage == "nul_filled":
        path.write_bytes(b"\0" * size)
    elif damage == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    else:
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE events (x INTEGER)")
    alarms = AlarmLog()
    clock = FakeClock(wall_s=1_790_000_000.0)
    fresh = open_outbox(path, clock, on_alarm=alarms)
    assert fresh.quarantined_now is not None
    assert fresh.quarantined_files() == ("outbox.sqlite.corrupt-20260921T141320Z",)
    assert (tmp_path / "outbox.sqlite.corrupt-20260921T141320Z").exists()
    assert [name for name, _ in alarms.changes] == ["outbox_quarantined"]
    # 2,500 seqs were used; the reservation file holds the block above them.
    new = fresh.append(scan_event())
    assert 2500 < new.seq <= 2500 + SEQ_RESERVE_BLOCK
    assert fresh.append(scan_event()).seq == new.seq + 1
    fresh.close()
    # A restart keeps the alarm (the file is still there) and the seq.
    again = open_outbox(path, clock, on_alarm=alarms)
    assert [name for name, _ in alarms.changes] == ["outbox_quarantined"] * 2
    assert again.quarantined_now is None
    assert again.append(scan_event()).seq == new.seq + 2
    again.close()


def test_a_deleted_outbox_restarts_above_the_reservation_never_reusing_seq(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = open_outbox(path)
    for _ in range(3):
        outbox.append(scan_event())
    outbox.close()
    for p in tmp_path.glob("outbox.sqlite*"):
        p.unlink()
    fresh = open_outbox(path)
    assert fresh.append(scan_event()).seq == SEQ_RESERVE_BLOCK + 1
    fresh.close()


def test_outbox_in_an_unwritable_place_raises_store_error_and_the_fail_closed_sink_refuses(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        open_outbox(blocker / "outbox.sqlite")
    assert "state directory" in str(info.value)
    sink = UnavailableSink(str(info.value))
    with pytest.raises(StoreError):
        sink.append(scan_event())


def test_stats_report_backlog_and_oldest_unsent_time(tmp_path):
    clock = FakeClock(wall_s=1_700_000_000.0)
    outbox = open_outbox(tmp_path / "outbox.sqlite", clock, max_events=1000)
    outbox.append(scan_event())
    clock.advance(5.0)
    outbox.append(scan_event())
    outbox.mark_sent([1])
    s = outbox.stats()
    assert (s.stored, s.unsent, s.oldest_unsent_s, s.seq_high, s.fill, s.quarantined) == (
        2, 1, 1_700_000_005.0, 2, 0.001, ())
    outbox.close()


class OutboxMachine(RuleBasedStateMachine):
    """Append, acknowledge, prune, crash (reopen without close): acknowledged events are
    stored or delivered, never lost; seq strictly increasing and never reused."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-sm-"))
        self.clock = FakeClock()
        self.outbox = open_outbox(self.dir / "outbox.sqlite", self.clock, max_events=30, retention_s=10.0)
        self.acknowledged: dict[int, str] = {}
        self.delivered: set[int] = set()
        self.seqs: list[int] = []

    @rule()
    def append(self):
        try:
            e = self.outbox.append(scan_event())
        except StorageFull:
            assert self.outbox.unsent >= 30
            return
        assert not self.seqs or e.seq > self.seqs[-1]
        self.seqs.append(e.seq)
        self.acknowledged[e.seq] = e.event_id

    @rule(data=st.data())
    def deliver_some(self, data):
        pending = [s for s, _ in self.outbox.pending(0, 50)]
        if pending:
            chosen = data.draw(st.lists(st.sampled_from(pending), max_size=10))
            self.outbox.mark_sent(chosen)
            self.delivered |= set(chosen)

    @rule(seconds=st.floats(0, 30))
    def prune(self, seconds):
        self.clock.advance(seconds)
        self.outbox.prune(self.clock.wall())

    @precondition(lambda self: True)
    @rule()
    def crash_and_restart(self):
        # No close(): as after a kill. Committed transactions must all be there.
        self.outbox._conn.close()
        self.outbox = open_outbox(self.dir / "outbox.sqlite", self.clock, max_events=30, retention_s=10.0)

    @invariant()
    def acknowledged_are_stored_or_delivered(self):
        stored = {seq: eid for seq, eid, _, _ in db_rows(self.dir / "outbox.sqlite")}
        for seq, eid in self.acknowledged.items():
            assert seq in self.delivered or stored.get(seq) == eid
        unsent = {seq for seq, _, sent, _ in db_rows(self.dir / "outbox.sqlite") if not sent}
        assert unsent == set(self.acknowledged) - self.delivered

    def teardown(self):
        self.outbox.close()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


CHILD_FILL = r"""
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
from firmware.core.errors import StoreError
from firmware.adapters.outbox import SqliteOutbox
from tests.test_outbox import scan_event
outbox = SqliteOutbox(Path(sys.argv[1]))
refused = 0
while refused < 20:
    try:
        e = outbox.append(scan_event())
    except StoreError as err:
        refused += 1
        continue
    print(e.seq, e.event_id, flush=True)
outbox.close()
print("FULL", flush=True)
"""


def test_disk_full_keeps_every_committed_event_intact_and_the_outbox_recovers(tmp_path):
    """S3: a file-size limit makes writes fail as a full disk would (EFBIG instead of ENOSPC)."""
    import subprocess
    import sys

    path = tmp_path / "outbox.sqlite"
    result = subprocess.run([sys.executable, "-c", CHILD_FILL, str(path), str(1024 * 1024)],
                            capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[-1] == "FULL"
    acknowledged = [(int(s), eid) for s, eid in zip(lines[0:-1:2], lines[1:-1:2], strict=True)]
    assert len(acknowledged) > 50
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    stored = [(seq, eid) for seq, eid, _, _ in db_rows(path)]
    assert stored == acknowledged
    # Room again (no limit): the same file takes new events, seq goes on.
    outbox = open_outbox(path)
    assert outbox.quarantined_now is None
    assert outbox.append(scan_event()).seq == acknowledged[-1][0] + 1
    outbox.close()
