"""systemd readiness and watchdog notifications without libsystemd (sd_notify(3) protocol).

Adapter: one AF_UNIX datagram per message to the socket named by ``$NOTIFY_SOCKET``
(a path, or an abstract socket when it starts with ``@``). With the variable unset
(not under systemd) every call does nothing. Sending never raises: a lost
notification must not stop the gate; the watchdog then restarts it if it matters.

The watchdog rule (HOUSE_STYLE section 2): ``WATCHDOG=1`` is sent from the scan loop
only (``ping_if_frames_fresh`` after each loop step), and only while the last frame is
younger than ``camera.max_frame_age_s``. A hung camera read blocks the loop, so no
pings; a camera that delivers nothing keeps the loop turning but stops the pings too.
Either way systemd restarts the service after ``WatchdogSec``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``.

    Args:
        environ: the environment to read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` from
            (``os.environ`` by default; tests pass a dict).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        elif address:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying", address)
        usec = env.get("WATCHDOG_USEC", "")
        # ping at half the watchdog period, as sd_watchdog_enabled(3) advises; 1 s if unknown
        self.ping_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 1.0
        self._name = address
        self._last_ping_s: float | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # the loop, the monitor and shutdown all send
        self.sent = 0

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=value`` lines. Returns False if not sent. Never raises."""
        if self.address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
            except OSError as err:
                log.warning("cannot notify systemd at %s: %s", self._name, err)
                return False
            self.sent += 1
            return True

    def ready(self, status: str = "") -> bool:
        """``READY=1`` (with a STATUS line if given), once the adapters are open."""
        return self.send("READY=1", f"STATUS={status}") if status else self.send("READY=1")

    def status(self, text: str) -> bool:
        """``STATUS=text``: what `systemctl status` shows."""
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        """``STOPPING=1``, shutdown step 2 (after the relay is released)."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """``WATCHDOG=1`` unconditionally. Prefer ``ping_if_frames_fresh`` from the loop."""
        return self.send("WATCHDOG=1")

    def ping_if_frames_fresh(self, now_mono_s: float, last_frame_mono_s: float | None,
                             max_frame_age_s: float) -> bool:
        """Send ``WATCHDOG=1`` if the last frame is fresh and a ping is due. Loop thread only.

        Args:
            now_mono_s: monotonic now.
            last_frame_mono_s: monotonic time of the last frame, or None if none yet.
            max_frame_age_s: frames older than this prove nothing.

        Returns:
            True if a ping was sent.
        """
        if last_frame_mono_s is None or now_mono_s - last_frame_mono_s >= max_frame_age_s:
            return False
        if self._last_ping_s is not None and now_mono_s - self._last_ping_s < self.ping_interval_s:
            return False
        self._last_ping_s = now_mono_s
        return self.watchdog()

    def close(self) -> None:
        """Close the socket. Safe to call twice."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
