"""Helpers for the delivery fault tests: image folders, daemon configs, a daemon subprocess,
and the delivery check that compares the outbox file with what a subscriber received."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from device.synthetic import write_code_png
from tests import daemon_support

# Set QRGATE_FULL_FAULTS=1 to run the fault tests at the size the issue specifies.
FULL = os.environ.get("QRGATE_FULL_FAULTS", "") not in ("", "0")
DEVICE_ID = "fault-gate"


def code_images(folder: Path, count: int, prefix: str = "FAULT") -> Path:
    """Write count distinct small QR images (unknown-format codes: each is a denied event)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_code_png(folder / f"{i:05d}.png", f"{prefix}-{i:05d}", width=160, height=160, seed=i)
    return folder


def subset(source: Path, target: Path, count: int) -> Path:
    """A folder holding symlinks to the first count images of source."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir())[:count]:
        (target / path.name).symlink_to(path)
    return target


def write_config(tmp: Path, images: Path, *, broker=None, prefix: str = "qrgate", fps: float | None = None,
                 max_events: int = 300_000, issuers: Path | None = None, **sections) -> Path:
    """A daemon config: dir: replay (one frame per image), mock GPIO, optional broker.

    sections: more config sections, as for ``tests.daemon_support.write_config``.
    """
    issuers = issuers or (tmp / "issuers")
    issuers.mkdir(exist_ok=True)
    camera = {"as_fast_as_possible": True} if fps is None else {"fps": fps}
    mqtt = {} if broker is None else {"host": broker.host, "port": broker.port, "prefix": prefix, "keepalive_s": 5}
    mqtt.update(sections.pop("mqtt", None) or {})
    return daemon_support.write_config(
        tmp, images=images, device={"id": DEVICE_ID, "venue_id": "v-fault"},
        camera={"frames_per_image": 1, **camera}, gpio={"relay_pulse_ms": 50}, keys={"issuers_dir": issuers},
        outbox={"max_events": max_events}, mqtt=mqtt or None, **sections)


class Daemon:
    """``qrgate run --print-events --exit-at-end`` as a child process.

    Printed events (committed to the outbox before they are printed) are collected from
    stdout by a reader thread; stderr goes to a log file.
    """

    def __init__(self, config: Path, log_path: Path, *extra: str, drain_timeout_s: float = 60.0) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = daemon_support.start_gate(config, "--print-events", "--exit-at-end", "--drain-timeout-s",
                                              str(drain_timeout_s), *extra, stdout=subprocess.PIPE,
                                              stderr=self._log)
        self.printed: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            with self._cond:
                self.printed.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_printed(self, count: int, timeout_s: float) -> bool:
        """Block until count events were printed (False on timeout or if the process ended)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.printed) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return len(self.printed) >= count
                self._cond.wait(min(remaining, 0.5))
            return True

    def wait(self, timeout_s: float) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        self._log.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(30)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def outbox_rows(state_dir: Path) -> list[tuple[int, str, int]]:
    """(seq, event_id, sent) of every row, after checking the database's integrity."""
    conn = sqlite3.connect(f"file:{state_dir / 'outbox.sqlite'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return conn.execute("SELECT seq, event_id, sent FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def check_delivery(state_dir: Path, received: list[dict], printed: list[dict]) -> list[tuple[int, str, int]]:
    """The delivery promise, checked by event_id and seq:

    - the outbox has no seq gap and every row is marked sent;
    - every stored event arrived at the subscriber; duplicates only as the same event_id;
    - nothing arrived that is not in the outbox;
    - every printed (decided and committed) event is in the outbox, identical.
    """
    rows = outbox_rows(state_dir)
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), "seq gap in the outbox"
    assert [r for r in rows if not r[2]] == [], "unsent rows left"
    stored = {seq: eid for seq, eid, _ in rows}
    got = {(e["seq"], e["event_id"]) for e in received}
    assert got == set(stored.items()), (
        f"missing {sorted(set(stored.items()) - got)[:5]}, "
        f"unexpected {sorted(got - set(stored.items()))[:5]}")
    assert {(e["seq"], e["event_id"]) for e in printed} <= set(stored.items())
    return rows


def first_arrival_order(received: list[dict]) -> list[int]:
    """The seqs in the order each first arrived."""
    seen: set[int] = set()
    order = []
    for e in received:
        if e["seq"] not in seen:
            seen.add(e["seq"])
            order.append(e["seq"])
    return order
