"""The daemon's live status as a JSON file in the runtime directory, and its reader.

The daemon writes ``<runtime_dir>/status.json`` (schema ``qrgate.status/1``) about
every second and at once on a state change, atomically (temp file in the same
directory, then ``os.replace``): a reader never sees half a file. ``/run`` is tmpfs, so
there is no fsync and no SD-card wear.

``qrgate status`` reads it without opening the camera, GPIO or any database, and
decides whether the daemon is really running: the writer's pid must be alive and the
state directory's lock held (``firmware.app.builder.state_dir_in_use``). A file left behind by a
killed daemon is therefore reported as "not running", whatever it says.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.adapters.atomic_files import write_atomic
from firmware.core.status_view import STATUS_SCHEMA

log = logging.getLogger(__name__)


STATUS_FILE_NAME = "status.json"




STATUS_INTERVAL_S = 1.0


# `qrgate status` exit statuses
EXIT_READY = 0


EXIT_NOT_READY = 1


EXIT_NOT_RUNNING = 3  # as `systemctl status` for a stopped unit


def status_path(runtime_dir: str | Path) -> Path:
    """The status file inside a runtime directory."""
    return Path(runtime_dir) / STATUS_FILE_NAME


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Write snapshot as JSON to path atomically (0644: the status holds no secrets).

    Raises:
        OSError: the runtime directory cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(snapshot, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")
    # exactly 0644: the unit's UMask=0027 would hide it from technicians; tmpfs, so no fsync
    write_atomic(path, data, mode=0o644, durable=False)


def read_status(path: Path) -> dict[str, Any] | None:
    """Read a status file. None if it is missing, unreadable or not a status object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != STATUS_SCHEMA:
        return None
    return data


def pid_alive(pid: Any) -> bool:
    """True if a process with this pid exists (it may belong to another user)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_running(snapshot: dict[str, Any] | None, state_dir: Path,
                   lock_held: Callable[[Path], bool]) -> bool:
    """True if the daemon that wrote snapshot still runs.

    Args:
        snapshot: the status file's content (None if there is none).
        state_dir: the daemon's state directory.
        lock_held: ``firmware.app.builder.state_dir_in_use``; a PermissionError from it (the
            caller cannot open the lock file) leaves the pid as the only evidence.
    """
    if snapshot is None or not pid_alive(snapshot.get("pid")):
        return False
    try:
        return lock_held(state_dir)
    except PermissionError:
        return True


class StatusWriter:
    """Writes the snapshot every ``interval_s`` and at once when the state changes.

    Called from the monitor thread only (``maybe_write``). A write failure is logged
    once per distinct error and never raised: the gate must keep running.

    Args:
        path: the status file.
        interval_s: the longest time between two writes.
    """

    def __init__(self, path: Path, interval_s: float = STATUS_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self._last_mono_s: float | None = None
        self._last_state: str | None = None
        self._last_error: str | None = None
        self._checked_owner = False
        self._own_pid: Any = None  # the pid in the snapshots this writer wrote
        self.writes = 0

    def maybe_write(self, now_mono_s: float, snapshot_fn: Callable[[], dict[str, Any]], state: str) -> bool:
        """Write if the state changed or interval_s passed. Returns True if written."""
        due = (self._last_mono_s is None or state != self._last_state
               or now_mono_s - self._last_mono_s >= self.interval_s)
        if not due:
            return False
        self._last_mono_s, self._last_state = now_mono_s, state
        snapshot = snapshot_fn()
        self._own_pid = snapshot.get("pid")
        if not self._checked_owner:
            self._checked_owner = True
            self._warn_if_shared(snapshot)
        try:
            write_status(self.path, snapshot)
        except OSError as err:
            if str(err) != self._last_error:
                log.error("cannot write the status file %s: %s; `qrgate status` will say not running",
                          self.path, err)
                self._last_error = str(err)
            return False
        self._last_error = None
        self.writes += 1
        return True

    def _warn_if_shared(self, snapshot: dict[str, Any]) -> None:
        """Log an error when the file is another running gate's: both would overwrite it."""
        current = read_status(self.path)
        if current is None or current.get("device_id") == snapshot.get("device_id"):
            return
        pid = current.get("pid")
        if pid != snapshot.get("pid") and pid_alive(pid):
            log.error("the status file %s belongs to gate %s (pid %s), which still runs: give each gate on "
                      "this machine its own device.runtime_dir (`qrgate provision device --runtime-dir DIR`), "
                      "or `qrgate status` shows one gate's state for the other", self.path,
                      current.get("device_id"), pid)

    def remove(self) -> None:
        """Delete the status file at shutdown, unless another live process wrote it last. Never raises."""
        current = read_status(self.path)
        if current is not None and current.get("pid") != self._own_pid and pid_alive(current.get("pid")):
            return  # another running gate's (a shared runtime_dir): leave it to its writer
        try:
            self.path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("cannot remove the status file %s: %s", self.path, err)
