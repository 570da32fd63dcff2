"""The process whose writes are logged for the power-cut replay (tests/test_powercut.py).

Run as ``python -m tests.powercut.workload outbox|state STATE_DIR COUNT`` under the writelog
shim. It writes a marker line after each call returns, into ``STATE_DIR/markers``.

``outbox`` drives the real SqliteOutbox the way the gate does (append before the relay, PUBACKs
marking rows sent, pruning, restarts):

- ``A <seq>``: append returned, so the gate would now pulse the relay for this event;
- ``D <seq> ...``: mark_sent returned for these rows;
- ``P <n>``, ``O``: a prune deleted n rows; the outbox was closed and opened again.

``state`` drives the real StateStore (tinydb, atomic writes) the way provisioning does: each
step stores a new provisioning record and a used nonce in one batch, then writes ``V <n>``.

The markers file is logged like every other file, so the replay knows, at each flush point,
which calls had returned before it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from firmware.adapters.outbox import SqliteOutbox, StorageFull
from firmware.core.model import ScanEvent


def scan(n: int) -> ScanEvent:
    return ScanEvent(device_id="gate-1", venue_id="v-1", direction="in", ts="2026-11-26T10:00:00.000Z",
                     time_synced=True, boot_id="b00t", decision="granted", reason="ok", credential="qrgate",
                     subject=None, display="NGUYỄN ĐÌNH *** 0966 323 ***", latency_ms=12.5,
                     code_sha256=f"{n:064x}")


def open_markers(state_dir: Path):
    markers = os.open(state_dir / "markers", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def mark(line: str) -> None:
        os.write(markers, (line + "\n").encode())

    return markers, mark


def state_steps(state_dir: Path, steps: int) -> int:
    from firmware.adapters.state_store import StateStore

    markers, mark = open_markers(state_dir)
    store = StateStore(state_dir / "state.json")
    for n in range(1, steps + 1):
        with store.batch():
            store.put("provisioning", {"version": n, "venue_id": f"v-{n}", "direction": "in"})
            store.add_nonce(f"{n:032x}", expires_s=2e9, now_s=1e9)
        mark(f"V {n}")
    store.close()
    os.close(markers)
    return 0


def outbox_steps(state_dir: Path, appends: int) -> int:
    markers, mark = open_markers(state_dir)

    def open_outbox() -> SqliteOutbox:
        # A small budget and no retention, so pruning and the full-store policy both run.
        return SqliteOutbox(state_dir / "outbox.sqlite", max_events=60, retention_s=0.0)

    outbox = open_outbox()
    for n in range(1, appends + 1):
        try:
            event = outbox.append(scan(n))
            mark(f"A {event.seq}")
        except StorageFull:
            pass  # the gate denies the scan; nothing was stored, nothing to check
        if n % 5 == 0:
            sent = [seq for seq, _body in outbox.pending(limit=4)]
            outbox.mark_sent(sent)
            mark("D " + " ".join(map(str, sent)))
        if n % 17 == 0:
            mark(f"P {outbox.prune(outbox._wall() + 1.0)}")
        if n % 97 == 0:
            outbox.close()
            outbox = open_outbox()
            mark("O")
    outbox.close()
    os.close(markers)
    return 0


if __name__ == "__main__":
    steps = {"outbox": outbox_steps, "state": state_steps}[sys.argv[1]]
    sys.exit(steps(Path(sys.argv[2]), int(sys.argv[3])))
