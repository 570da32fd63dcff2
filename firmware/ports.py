"""The small ports the gate service talks through.

Each port states its timing contract. Adapters live in ``device`` (hardware and
decoder libraries) and in ``firmware`` (storage, MQTT, systemd).
"""

from __future__ import annotations

from typing import Protocol

from firmware.core.model import Decision, DecodedCode, Frame, ScanEvent


class FrameSource(Protocol):
    """Where frames come from: the camera, or image files replayed as a camera.

    Attributes:
        live: True for a camera, where two identical frames in a row mean a frozen capture;
            False for replayed images, which repeat on purpose.
    """

    live: bool

    def read(self, timeout_s: float) -> Frame | None:
        """Return the next greyscale frame, or None if none arrived within timeout_s.

        Blocks at most timeout_s (it never busy-loops when there is nothing to read).

        Raises:
            CameraUnavailable: the source failed and will not deliver again without a restart.
            EOFError: a finite replay source has run out of frames.
        """
        ...

    def flush_next(self) -> None:
        """Make the next read return a frame captured after this call (after a relay pulse,
        so an old buffered frame cannot show the same code again). Returns at once."""
        ...

    def close(self) -> None:
        """Release the camera. Safe to call twice."""
        ...


class Decoder(Protocol):
    """Finds QR codes in a frame."""

    def decode(self, frame: Frame) -> list[DecodedCode]:
        """Return every QR symbol in the frame (empty list if none). Blocks for the decode only.

        Raises:
            DecodeError: the library failed on this frame; the caller skips the frame.
        """
        ...


class Outputs(Protocol):
    """The relay, LEDs and buzzer."""

    def show(self, decision: Decision) -> None:
        """Start the relay pulse (if granted) and the LED/buzzer pattern. Returns at once.

        The relay release is timed on a background thread, independent of the caller.
        """
        ...

    def release(self) -> None:
        """Drive the relay to its off level now and stop every pattern. Never raises."""
        ...


class EventSink(Protocol):
    """Durable storage for scan events (the local events file, later the MQTT outbox)."""

    def append(self, event: ScanEvent) -> ScanEvent:
        """Store the event durably and return it with ``event_id`` and ``seq`` filled in.

        Returns only after the event is committed to disk.

        Raises:
            StoreError: the event could not be stored (for example the disk is full).
        """
        ...

    def close(self) -> None:
        """Flush and close. Safe to call twice."""
        ...


class Clock(Protocol):
    """Time, injected so that tests can move it."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going backwards."""
        ...

    def wall(self) -> float:
        """Unix seconds, possibly wrong on a Pi without a real-time clock."""
        ...

    def wall_trusted(self) -> bool:
        """True when the wall clock can be used for validity checks."""
        ...
