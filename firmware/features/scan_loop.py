"""The gate service: the scan loop from frame to decision to relay and event.

Usage flow::

    service = GateService(frames=..., decoder=..., outputs=..., sink=..., clock=...,
                          gatekeeper=Gatekeeper(rules, check, lists), events=EventFactory(...))
    service.run(stop)          # until stop is set (or a replay source ends)
    # then the composition root shuts down in order: relay, camera, outbox, MQTT, stores

Tests drive ``step()`` directly; ``run()`` stays a thin wrapper.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from firmware.core.errors import DecodeError, StoreError
from firmware.core.events import EventFactory
from firmware.core.model import Decision, DecodedCode, Frame, Moment, Reason, ScanEvent, Verdict
from firmware.core.policy import Checker, EmptyLists, GateMemory, Lists, Rules, decide
from firmware.ports import Clock, Decoder, EventSink, FrameSource, Outputs

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0


class CodeInterceptor(Protocol):
    """Sees every code before the policy; used for provisioning codes."""

    def intercept(self, code: DecodedCode, now: Moment) -> bool:
        """Return True if the code was consumed here (no scan decision for it)."""
        ...


@dataclass
class Gatekeeper:
    """The policy with its inputs: rules, credential check, lists, memory and blocking state.

    ``blocked`` (a Reason or None) is set by the device state: lockdown, not provisioned,
    storage full, stale lists with fail-closed policy.
    """

    rules: Rules
    check: Checker
    lists: Lists = field(default_factory=EmptyLists)
    memory: GateMemory = field(default_factory=GateMemory)
    blocked: Reason | None = None

    _next_prune_mono_s: float = field(default=0.0, init=False, repr=False)

    def prune_if_due(self, clock: Clock) -> None:
        """Once a minute, forget codes and grants older than the repeat window and passages
        older than the passback window, so memory stays bounded over months of running."""
        now_mono_s = clock.monotonic()
        if now_mono_s < self._next_prune_mono_s:
            return
        self._next_prune_mono_s = now_mono_s + PRUNE_INTERVAL_S
        self.memory.prune(now_mono_s, max(self.rules.repeat_window_s, 1.0))
        self.memory.prune_passages(clock.wall(), self.rules.passback_window_s)

    def decide(self, code: DecodedCode, now: Moment, frame_mono_s: float) -> Decision | None:
        """Decide one code (None while the same code is still in view)."""
        decision = decide(code, now, frame_mono_s, self.memory, self.rules, self.check, self.lists, self.blocked)
        if decision is None:
            self.memory.saw(code.sha256, now.mono_s)
        return decision


class LoopStats:
    """Frame and decode statistics for status, health and the watchdog. Loop thread writes.

    ``last_frame_mono_s`` is the time of the last *fresh* frame: with a frame digest given
    (live cameras), a frame identical to the one before does not count, so a camera that
    keeps returning the same buffer (a frozen capture) looks silent to the watchdog and the
    device state (``camera_fault``), exactly like one that stopped.
    """

    def __init__(self, window: int = 512) -> None:
        self.frames = 0
        self.frozen_frames = 0
        self.last_frame_mono_s: float | None = None
        self._last_digest: int | None = None
        self.decode_ms: deque[float] = deque(maxlen=window)
        self.frame_times: deque[float] = deque(maxlen=window)
        self.decisions = 0
        self.granted = 0
        self.last_event: ScanEvent | None = None

    def frame_seen(self, now_mono_s: float, digest: int | None = None) -> None:
        """Count a frame; digest (see ``frame_digest``) is given for live cameras only."""
        self.frames += 1
        self.frame_times.append(now_mono_s)
        if digest is not None and digest == self._last_digest:
            self.frozen_frames += 1
            return
        self._last_digest = digest
        self.last_frame_mono_s = now_mono_s

    def fps(self) -> float:
        """Frames per second over the recent window."""
        if len(self.frame_times) < 2:
            return 0.0
        span = self.frame_times[-1] - self.frame_times[0]
        return (len(self.frame_times) - 1) / span if span > 0 else 0.0

    def decode_percentile_ms(self, pct: float) -> float:
        """Decode time percentile (0-100) in ms over the recent window, 0 if none."""
        if not self.decode_ms:
            return 0.0
        ordered = sorted(self.decode_ms)
        return ordered[min(len(ordered) - 1, int(round(pct / 100.0 * (len(ordered) - 1))))]


def frame_digest(pixels: Any) -> int:
    """A cheap fingerprint of a frame: CRC-32 of every 7th pixel of every 7th row (about 10 µs
    at 640x480). A live sensor's noise changes it on every frame; a frozen capture does not."""
    sample = np.ascontiguousarray(pixels[::7, ::7])
    return zlib.crc32(sample.data)


class GateService:
    """Reads frames, decodes, decides, records and gives feedback.

    The event of a grant is committed before the relay moves; the event of a denial
    is committed right after its feedback. If a grant cannot be stored, the gate
    refuses instead (reason ``storage_full``): no unrecorded opening.

    Args:
        frames, decoder, outputs, sink, clock: the ports.
        gatekeeper: the policy and its state.
        events: builds events for this gate.
        interceptors: see CodeInterceptor.
        on_event: called with every stored event (loop thread); must return quickly.

    With a live frame source (``FrameSource.live``), a frame identical to the one before
    counts as no frame (``LoopStats``): a frozen capture faults like a silent camera.
    """

    def __init__(self, *, frames: FrameSource, decoder: Decoder, outputs: Outputs, sink: EventSink,
                 clock: Clock, gatekeeper: Gatekeeper, events: EventFactory,
                 interceptors: list[CodeInterceptor] | None = None,
                 on_event: list[Callable[[ScanEvent], None]] | None = None) -> None:
        self.frames, self.decoder, self.outputs, self.sink = frames, decoder, outputs, sink
        self.clock, self.gatekeeper, self.events = clock, gatekeeper, events
        self.interceptors = list(interceptors or [])
        self.on_event = list(on_event or [])
        self.after_step: list[Callable[[], None]] = []  # loop thread, after every step (watchdog, timers)
        self.stats = LoopStats()
        self.input_ended = False
        self._failed_callbacks: set[str] = set()
        self._decode_errors = 0

    def step(self, timeout_s: float = 0.5) -> int:
        """Handle at most one frame. Returns the number of codes found in it.

        Raises:
            EOFError: a replay source has run out.
            CameraUnavailable: the camera failed.
        """
        frame = self.frames.read(timeout_s)
        if frame is None:
            return 0
        started = self.clock.monotonic()
        self.stats.frame_seen(started, frame_digest(frame.pixels) if self.frames.live else None)
        try:
            codes = self.decoder.decode(frame)
        except DecodeError as err:
            self._decode_errors += 1
            if self._decode_errors in (1, 10, 100) or self._decode_errors % 1000 == 0:
                log.warning("decoder failed on a frame (%d so far): %s", self._decode_errors, err)
            return 0
        self.stats.decode_ms.append((self.clock.monotonic() - started) * 1000.0)
        for code in codes:
            self._handle(code, frame)
        return len(codes)

    def _handle(self, code: DecodedCode, frame: Frame) -> None:
        now = Moment(self.clock.monotonic(), self.clock.wall(), self.clock.wall_trusted())
        if any(interceptor.intercept(code, now) for interceptor in self.interceptors):
            return
        decision = self.gatekeeper.decide(code, now, frame.captured_mono_s)
        if decision is None:
            return
        event = self.events.build(decision, now.wall_s, now.wall_trusted, code.text)
        if decision.granted:
            try:
                stored = self.sink.append(event)
            except StoreError as err:
                log.error("cannot record a grant, refusing instead: %s", err)
                decision = replace(decision, verdict=Verdict.DENIED, reason=Reason.STORAGE_FULL)
                self.gatekeeper.memory.saw(decision.code_sha256, now.mono_s)
                self.outputs.show(decision)
                return
            self.outputs.show(decision)
            self.frames.flush_next()
        else:
            self.outputs.show(decision)
            try:
                stored = self.sink.append(event)
            except StoreError as err:
                log.error("cannot record a denial: %s", err)
                self.gatekeeper.memory.saw(decision.code_sha256, now.mono_s)
                return
        self.gatekeeper.memory.remember(decision, now, self.events.direction)
        self.stats.decisions += 1
        self.stats.granted += int(decision.granted)
        self.stats.last_event = stored
        for callback in self.on_event:
            self._guarded(callback, stored)

    def record(self, event: ScanEvent, skip: tuple[Callable[[ScanEvent], None], ...] = ()) -> ScanEvent:
        """Store an event that is not a scan decision (provisioned, remote open, not_passed) and
        tell the listeners, as for a scan. Thread-safe as far as the sink is (the outbox is).

        Args:
            event: the event, without event_id and seq.
            skip: listeners not to call (for example one that belongs to the loop thread).

        Raises:
            StoreError: the event could not be stored; no listener was called.
        """
        stored = self.sink.append(event)
        for callback in self.on_event:
            if callback not in skip:
                self._guarded(callback, stored)
        return stored

    def _guarded(self, callback: Callable[..., None], *args: object) -> None:
        """Run a listener; its failure is logged (first time with a traceback), never fatal:
        the scan loop must outlive a broken printer, publisher wake-up or status hook."""
        try:
            callback(*args)
        except Exception:
            key = getattr(callback, "__qualname__", repr(callback))
            if key not in self._failed_callbacks:
                self._failed_callbacks.add(key)
                log.exception("listener %s failed; the gate goes on (further failures logged at debug)", key)
            else:
                log.debug("listener %s failed again", key, exc_info=True)

    def run(self, stop: threading.Event) -> None:
        """Run the loop until stop is set or a replay source ends (``input_ended``)."""
        try:
            while not stop.is_set():
                self.step()
                for hook in self.after_step:
                    self._guarded(hook)
                self.gatekeeper.prune_if_due(self.clock)
        except EOFError:
            self.input_ended = True
