"""D4 in CI: the outbox and the state file survive a power cut at every flush point
(un-fsynced data dropped).

The real SqliteOutbox runs in a child process under tests/powercut/writelog.c, which logs
every write, fsync, rename and unlink; the replay rebuilds the state directory as a cut
just before each fsync would leave it (data not fsynced lost, names not made durable by a
directory fsync undone; see tests/powercut_support.replay). At every cut: the database opens and passes ``integrity_check``; every event
whose append had returned (the gate pulses the relay only then) is there; every row whose
mark_sent had returned is still sent or pruned, never unsent again; and the real outbox opens
it without quarantine and gives the next event a seq above every seq it handed out.
The same for the tinydb state: every cut leaves a state file that opens without quarantine
and holds at least the last provisioning record and every used nonce whose write returned.
``QRGATE_FULL_FAULTS=1`` runs 1,200 appends instead of 400.
"""

from __future__ import annotations

import os
import sqlite3
import sys

import pytest

from firmware.adapters.outbox import SqliteOutbox, StorageFull
from tests.powercut.workload import scan
from tests.powercut_support import build_shim, replay, run_traced

APPENDS = 1200 if os.environ.get("QRGATE_FULL_FAULTS") == "1" else 400


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    return build_shim(tmp_path_factory.mktemp("shim"))


def returned(markers: list[str]) -> tuple[set[int], set[int]]:
    """The seqs whose append had returned, and those whose mark_sent had returned."""
    appended: set[int] = set()
    sent: set[int] = set()
    for line in markers:
        kind, *values = line.split()
        if kind == "A":
            appended.add(int(values[0]))
        elif kind == "D":
            sent.update(int(v) for v in values)
    return appended, sent


def test_every_flush_point_leaves_a_sound_outbox_with_every_returned_event(tmp_path, shim):
    state, log, crashed = tmp_path / "state", tmp_path / "writes.log", tmp_path / "after-cut"
    state.mkdir()
    run_traced(shim, state, log, [sys.executable, "-m", "tests.powercut.workload", "outbox", str(state),
                                    str(APPENDS)])
    cuts = 0
    for cut in replay(log):
        cuts += 1
        appended, sent = returned(cut.markers)
        cut.materialize(crashed, keep=("outbox.sqlite", "outbox.seq"))
        names = sorted(p.name for p in crashed.iterdir())
        assert "outbox.sqlite-shm" not in names
        db = crashed / "outbox.sqlite"
        if not appended:
            continue  # nothing returned yet: any state is acceptable, checked by the reopen below
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"cut {cut.index}"
            rows = dict(conn.execute("SELECT seq, sent FROM events").fetchall())
        finally:
            conn.close()
        lost = sorted(s for s in appended - sent if s not in rows)
        assert lost == [], f"cut {cut.index}: events lost after their append returned: {lost}"
        unsent_again = sorted(s for s in sent if rows.get(s) == 0)
        assert unsent_again == [], f"cut {cut.index}: rows marked sent are unsent again: {unsent_again}"
        outbox = SqliteOutbox(db, max_events=60, retention_s=0.0)
        try:
            assert outbox.quarantined_now is None, f"cut {cut.index}: the outbox was quarantined"
            assert outbox.seq_high >= max(appended), f"cut {cut.index}: the next seq would be reused"
            try:
                assert outbox.append(scan(0)).seq > max(appended)
            except StorageFull:
                assert outbox.stats().unsent >= 60  # the budget is full of unsent rows: the documented policy
        finally:
            outbox.close()
    assert cuts >= APPENDS, f"only {cuts} flush points: is the shim logging fsync?"


def test_every_flush_point_leaves_a_whole_state_file_with_every_returned_change(tmp_path, shim):
    from firmware.adapters.state_store import StateStore

    state, log, crashed = tmp_path / "state", tmp_path / "writes.log", tmp_path / "after-cut"
    state.mkdir()
    steps = APPENDS // 4
    run_traced(shim, state, log, [sys.executable, "-m", "tests.powercut.workload", "state", str(state),
                                  str(steps)])
    cuts = 0
    for cut in replay(log):
        cuts += 1
        done = [int(line.split()[1]) for line in cut.markers if line.startswith("V ")]
        cut.materialize(crashed, keep=("state.json",))
        store = StateStore(crashed / "state.json")
        try:
            assert store.quarantined is None, f"cut {cut.index}: the state file was not whole"
            record = store.get("provisioning")
            if done:
                assert record is not None and record["version"] >= done[-1], f"cut {cut.index}: {record}"
                assert all(store.nonce_used(f"{n:032x}") for n in done), f"cut {cut.index}: a used nonce is lost"
        finally:
            store.close()
    assert cuts >= 2 * steps, f"only {cuts} flush points for {steps} state writes"
