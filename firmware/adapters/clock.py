"""The system clock adapter, with a guard against a wrong wall clock.

A Pi has no real-time clock: after a power cut it may boot in 1970 or at the last
saved time. The wall clock is trusted only when it is not below the persisted
high-water mark and, if required, systemd reports it synchronised.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from firmware.adapters.atomic_files import write_atomic

log = logging.getLogger(__name__)

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
HIGH_WATER_SAVE_INTERVAL_S = 600.0


class SystemClock:
    """The Clock port on the host clocks.

    Args:
        high_water_path: file holding the highest wall time seen (Unix seconds), or None.
        require_synced: trust the wall clock only once ``synced_flag`` exists.
        synced_flag: systemd-timesyncd's flag file.
    """

    def __init__(self, high_water_path: Path | None = None, require_synced: bool = False,
                 synced_flag: Path = TIMESYNC_FLAG) -> None:
        self._hw_path = high_water_path
        self._require_synced = require_synced
        self._synced_flag = synced_flag
        self._high_water_s = self._load_high_water()
        self._saved_mono_s = -HIGH_WATER_SAVE_INTERVAL_S
        self._synced_cached = False

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wall_trusted(self) -> bool:
        """True when the wall clock is at or above its high-water mark (and synced if required).

        Raises the high-water mark as time goes on; saves it at most every 10 minutes
        (SD-card wear) and at close.
        """
        now = time.time()
        if now + 1.0 < self._high_water_s:
            return False
        if self._require_synced and not self._synced_cached:
            # once synced, timesyncd keeps it so for the life of the boot
            self._synced_cached = self._synced_flag.exists()
            if not self._synced_cached:
                return False
        if now > self._high_water_s:
            self._high_water_s = now
            if time.monotonic() - self._saved_mono_s >= HIGH_WATER_SAVE_INTERVAL_S:
                self.save()
        return True

    @property
    def high_water_s(self) -> float:
        return self._high_water_s

    def _load_high_water(self) -> float:
        if self._hw_path is None:
            return 0.0
        try:
            return float(self._hw_path.read_text().strip() or 0.0)
        except FileNotFoundError:
            return 0.0
        except (OSError, ValueError) as err:
            log.warning("clock high-water file %s is unreadable (%s); starting from 0", self._hw_path, err)
            return 0.0

    def save(self) -> None:
        """Persist the high-water mark atomically. Never raises (logs instead)."""
        self._saved_mono_s = time.monotonic()
        if self._hw_path is None:
            return
        try:
            # Not durable: saved every few minutes, and a lost save only lowers the guard a little.
            write_atomic(self._hw_path, f"{self._high_water_s:.3f}\n".encode(), durable=False)
        except OSError as err:
            log.warning("cannot save clock high-water mark to %s: %s", self._hw_path, err)
