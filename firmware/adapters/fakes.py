"""Fakes that ship with the package: for `--fake-hardware` runs, benches and tests.

They implement the real ports and keep state; none of them only records calls.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import replace

from firmware.core.model import DecodedCode, Frame, OutboxStats, ScanEvent


class ScriptedFrames:
    """A FrameSource that plays frames queued with ``push``.

    Honours the timing contract: when nothing is queued, ``read`` waits out
    ``timeout_s`` on an event (never a busy loop). After ``end()``, an empty
    queue raises EOFError.
    """

    live = False  # set True to stand in for a camera (frozen-frame detection)

    def __init__(self, frames: list[Frame] | None = None) -> None:
        self._queue: deque[Frame] = deque(frames or [])
        self._arrived = threading.Event()
        self._ended = False
        self.closed = False
        if self._queue:
            self._arrived.set()

    def push(self, frame: Frame) -> None:
        self._queue.append(frame)
        self._arrived.set()

    def end(self) -> None:
        self._ended = True
        self._arrived.set()

    def read(self, timeout_s: float) -> Frame | None:
        if not self._queue:
            if self._ended:
                raise EOFError("scripted frames ended")
            self._arrived.clear()
            if not self._queue and not self._arrived.wait(timeout_s):
                return None
            if not self._queue:
                if self._ended:
                    raise EOFError("scripted frames ended")
                return None
        return self._queue.popleft()

    def flush_next(self) -> None:
        """Nothing is buffered ahead of the script."""

    def close(self) -> None:
        self.closed = True


class TableDecoder:
    """A Decoder that returns the codes registered for a frame's ``origin``.

    Lets service tests and the loop bench skip image decoding when they need to.
    """

    def __init__(self, table: dict[str, list[bytes]] | None = None) -> None:
        self.table = dict(table or {})

    def decode(self, frame: Frame) -> list[DecodedCode]:
        return [DecodedCode(p, p.decode("utf-8", "replace")) for p in self.table.get(frame.origin, [])]


class MemorySink:
    """An EventSink in memory: assigns seq and event_id like the real ones, keeps the events."""

    def __init__(self) -> None:
        self.events: list[ScanEvent] = []
        self.fail_with: Exception | None = None
        self.closed = False

    def append(self, event: ScanEvent) -> ScanEvent:
        if self.fail_with is not None:
            raise self.fail_with
        stored = replace(event, seq=len(self.events) + 1, event_id=f"{len(self.events) + 1:026x}")
        self.events.append(stored)
        return stored

    def stats(self) -> OutboxStats:
        """Every event counts as delivered: no backlog, no alarm."""
        count = len(self.events)
        return OutboxStats(stored=count, unsent=0, oldest_unsent_s=None, seq_high=count, max_events=0, fill=0.0,
                           alarm_level=0.0, quarantined=())

    def close(self) -> None:
        self.closed = True
