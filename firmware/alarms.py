"""Named alarms shared by the outbox, the publisher, the features and the status: name -> text.

Thread-safe. Adapters and features raise and clear them; the status and the retained MQTT
state show them.
"""

from __future__ import annotations

import threading


class Alarms:
    """Named alarms shared by the outbox, the publisher and the status: name -> text.

    Thread-safe. ``set(name, None)`` clears an alarm.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, str] = {}

    def set(self, name: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._active.pop(name, None)
            else:
                self._active[name] = text

    def active(self) -> dict[str, str]:
        """A copy of the active alarms."""
        with self._lock:
            return dict(self._active)
