"""Process helpers of the daemon and the long-running tools: the state-directory lock and signals.

Adapters over ``fcntl`` and ``signal``; the composition root and the tools' commands use them.
"""

from __future__ import annotations

import fcntl
import signal
import threading
from pathlib import Path
from typing import Any

from firmware.core.errors import StoreError

STATE_LOCK_NAME = "daemon.lock"


def hold_state_lock(state_dir: Path) -> Any:
    """Take the state directory's exclusive lock for the daemon's lifetime.

    Tools that must not touch the daemon's files check ``state_dir_in_use`` first.

    Raises:
        StoreError: another qrgate daemon already runs on this state directory.
    """
    fh = open(state_dir / STATE_LOCK_NAME, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        fh.close()
        raise StoreError(f"another qrgate daemon is running on {state_dir}; stop it first "
                         "(`systemctl stop qrgate`)") from err
    return fh


def state_dir_in_use(state_dir: Path) -> bool:
    """True while a daemon holds the state directory's lock (for CLI tools)."""
    path = state_dir / STATE_LOCK_NAME
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set the stop event and nothing else (main thread only)."""
    def handler(signum: int, frame: object) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
