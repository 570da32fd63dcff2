"""The scan loop: frame to decision to relay and event, and the recorder every event goes through.

Usage flow::

    recorder = EventRecorder(sink, listeners=[publisher, printer])
    service = GateService(frames=..., decoder=..., outputs=..., recorder=recorder, clock=...,
                          gatekeeper=Gatekeeper(identity, check_payload, lists, memory),
                          events=EventFactory(...), stats=LoopStats(),
                          interceptors=[provisioning], observers=[monitor, passage_check])
    service.run(stop)          # until stop is set (or a replay source ends)
    # then the composition root shuts down in order: relay, camera, outbox, MQTT, stores

Tests drive ``step()`` directly; ``run()`` stays a thin wrapper.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from firmware.core.errors import DecodeError, StoreError
from firmware.core.events import ENTROPY_BYTES, EventFactory
from firmware.core.gatekeeper import Gatekeeper, LoopStats
from firmware.core.model import DecodedCode, Frame, Moment, Reason, ScanEvent, Verdict
from firmware.ports import (
    Clock,
    CodeInterceptor,
    Decoder,
    EventListener,
    EventSink,
    FrameSource,
    LoopObserver,
    Outputs,
)

log = logging.getLogger(__name__)


def frame_digest(pixels: Any) -> int:
    """A cheap fingerprint of a frame: CRC-32 of every 7th pixel of every 7th row (about 10 µs
    at 640x480). A live sensor's noise changes it on every frame; a frozen capture does not."""
    sample = np.ascontiguousarray(pixels[::7, ::7])
    return zlib.crc32(sample.data)


class _Guard:
    """Runs listeners so that a failing one is logged (first time with a traceback), never fatal:
    the scan loop must outlive a broken printer, publisher wake-up or status hook."""

    def __init__(self) -> None:
        self._failed: set[str] = set()

    def call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            key = getattr(callback, "__qualname__", repr(callback))
            if key not in self._failed:
                self._failed.add(key)
                log.exception("listener %s failed; the gate goes on (further failures logged at debug)", key)
            else:
                log.debug("listener %s failed again", key, exc_info=True)


class EventRecorder:
    """Stores events in the sink and tells the listeners (publisher wake-up, ``--print-events``).

    Every event of the gate goes through here: scan decisions (from the loop) and records that
    are not decisions (``provisioned``, a remote open, ``not_passed``). Thread-safe as far as
    the sink is (the outbox is).

    Args:
        sink: the durable event store.
        listeners: told about each stored event, in order; a failure is logged, never raised.
    """

    def __init__(self, sink: EventSink, listeners: Sequence[EventListener] = ()) -> None:
        self.sink = sink
        self._listeners = tuple(listeners)
        self._guard = _Guard()

    def append(self, event: ScanEvent) -> ScanEvent:
        """Store event and tell the listeners. Returns it with ``event_id`` and ``seq``.

        Raises:
            StoreError: the event could not be stored; no listener was called.
        """
        stored = self.sink.append(event)
        for listener in self._listeners:
            self._guard.call(listener.event_stored, stored)
        return stored


class GateService:
    """Reads frames, decodes, decides, records and gives feedback.

    The event of a grant is committed before the relay moves; the event of a denial
    is committed right after its feedback. If a grant cannot be stored, the gate
    refuses instead (reason ``storage_full``): no unrecorded opening.

    Args:
        frames, decoder, outputs, clock: the ports.
        recorder: stores events and tells the recorder's listeners.
        gatekeeper: the policy and its state.
        events: builds events for this gate.
        stats: the loop statistics (shared read-only with the device monitor and status).
        interceptors: see CodeInterceptor (provisioning codes).
        observers: loop-thread features: told of each scan event and called after each step.
        random_bytes: the random source for sealed contacts (``privacy.escrow_key``); os.urandom.

    With a live frame source (``FrameSource.live``), a frame identical to the one before
    counts as no frame (``LoopStats``): a frozen capture faults like a silent camera.
    """

    def __init__(self, *, frames: FrameSource, decoder: Decoder, outputs: Outputs, recorder: EventRecorder,
                 clock: Clock, gatekeeper: Gatekeeper, events: EventFactory, stats: LoopStats | None = None,
                 interceptors: Sequence[CodeInterceptor] = (), observers: Sequence[LoopObserver] = (),
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.frames, self.decoder, self.outputs, self.recorder = frames, decoder, outputs, recorder
        self._random = random_bytes
        self.clock, self.gatekeeper, self.events = clock, gatekeeper, events
        self.stats = stats if stats is not None else LoopStats()
        self._interceptors = tuple(interceptors)
        self._observers = tuple(observers)
        self._guard = _Guard()
        self._decode_errors = 0

    @property
    def input_ended(self) -> bool:
        """True once a replay source has run out."""
        return self.stats.input_ended

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
        if any(interceptor.intercept(code, now) for interceptor in self._interceptors):
            return
        decision = self.gatekeeper.decide(code, now, frame.captured_mono_s)
        if decision is None:
            return
        entropy = self._random(ENTROPY_BYTES) if self.events.escrow_key is not None else b""
        event = self.events.build(decision, now.wall_s, now.wall_trusted, code.text, entropy)
        memory = self.gatekeeper.memory
        if decision.granted:
            try:
                stored = self.recorder.append(event)
            except StoreError as err:
                log.error("cannot record a grant, refusing instead: %s", err)
                decision = replace(decision, verdict=Verdict.DENIED, reason=Reason.STORAGE_FULL)
                memory.saw(decision.code_sha256, now.mono_s)
                self.outputs.show(decision)
                return
            self.outputs.show(decision)
            self.frames.flush_next()
        else:
            self.outputs.show(decision)
            try:
                stored = self.recorder.append(event)
            except StoreError as err:
                log.error("cannot record a denial: %s", err)
                memory.saw(decision.code_sha256, now.mono_s)
                return
        memory.remember(decision, now, self.events.direction)
        self.stats.decisions += 1
        self.stats.granted += int(decision.granted)
        self.stats.last_event = stored
        for observer in self._observers:
            self._guard.call(observer.event_stored, stored)

    def after_step(self) -> None:
        """Run the observers' after-step work (watchdog, passage timers) and prune the memory when due."""
        for observer in self._observers:
            self._guard.call(observer.after_step)
        self.gatekeeper.prune_if_due(self.clock.monotonic(), self.clock.wall())

    def run(self, stop: threading.Event) -> None:
        """Run the loop until stop is set or a replay source ends (``input_ended``)."""
        try:
            while not stop.is_set():
                self.step()
                self.after_step()
        except EOFError:
            self.stats.input_ended = True
