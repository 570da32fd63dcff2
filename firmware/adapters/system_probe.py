"""Small reads of the running system for health and status: CPU temperature, clock sync flag."""

from __future__ import annotations

from pathlib import Path

THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


def read_cpu_temp_c(path: Path = THERMAL_PATH) -> float | None:
    """CPU temperature in °C from sysfs (millidegrees), or None where it cannot be read."""
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def clock_synced(flag: Path = TIMESYNC_FLAG) -> bool:
    """True when systemd-timesyncd reports the clock synchronised."""
    return flag.exists()
