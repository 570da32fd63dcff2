"""Passage check: with a rotation or door sensor fitted, a grant nobody used becomes ``not_passed``.

Every grant waits for a passage pulse (``core.passage.PassageWatch``). A grant still waiting
``commands.pass_timeout_s`` after it was given is recorded as a ``not_passed`` event and
its anti-passback passage is forgotten (in memory and in the passback store), so the
person can come back and try again.

Threads: the sensor's pulses arrive on a gpiozero thread and only go on a queue; everything
else runs on the scan loop thread (``event_stored``, ``after_step``, ``passage_recorded``).
"""

from __future__ import annotations

import logging
import queue
from typing import Any

from firmware.core.errors import StoreError
from firmware.core.model import ScanEvent
from firmware.core.passage import PassageWatch, PendingGrant, not_passed_event
from firmware.core.policy import GateMemory
from firmware.ports import Clock, PassbackLog, Recorder

log = logging.getLogger(__name__)


class PassageCheck:
    """Matches passage pulses to grants; records ``not_passed`` for unused ones.

    Args:
        clock: the gate's clock.
        recorder: where ``not_passed`` events are recorded.
        memory: the gatekeeper's memory (its passage of an unused grant is forgotten).
        passback: the persistent passage store.
        watch: the waiting grants (also told of passages by ``PassageLog``).
    """

    def __init__(self, *, clock: Clock, recorder: Recorder, memory: GateMemory, passback: PassbackLog,
                 watch: PassageWatch) -> None:
        self.clock, self.recorder, self.memory, self.passback = clock, recorder, memory, passback
        self.watch = watch
        self.pass_timeout_s = watch.pass_timeout_s
        self._pulses: queue.SimpleQueue[float] = queue.SimpleQueue()

    def start(self) -> None:
        """Nothing to start: it runs on the scan loop thread (``after_step``)."""

    def stop(self) -> None:
        """Nothing to stop: a grant still waiting at shutdown is neither passed nor recorded."""

    def passage_pulse(self) -> None:
        """The sensor saw someone pass (gpiozero thread): queued for the loop thread."""
        self._pulses.put(self.clock.monotonic())

    def event_stored(self, event: ScanEvent) -> None:
        """A scan event was stored (loop thread): a grant starts waiting for its passage."""
        self.watch.granted(event, self.clock.monotonic())

    def after_step(self) -> None:
        """Loop thread, after each step: settle passages, then record unused grants."""
        while True:
            try:
                self._pulses.get_nowait()
            except queue.Empty:
                break
            self.watch.passage()
        for grant in self.watch.expired(self.clock.monotonic()):
            self._record_not_passed(grant)

    def _record_not_passed(self, grant: PendingGrant) -> None:
        if grant.subject_key is not None:
            self.memory.forget_passage(grant.subject_key)
            self.passback.forget(grant.subject_key)
        event = not_passed_event(grant.event, self.clock.wall(), self.clock.wall_trusted())
        try:
            self.recorder.append(event)
        except StoreError as err:
            log.error("cannot record a not_passed event: %s", err)
            return
        log.info("grant %s was not used within %.0f s: recorded not_passed", grant.event.event_id,
                 self.pass_timeout_s)

    def status_fields(self) -> dict[str, Any]:
        """``passage``: grants waiting and passages matched."""
        return {"passage": {"waiting": self.watch.waiting, "passed": self.watch.passed}}


class PassageLog:
    """The gate memory's passage callback: persists each passage for anti-passback across
    restarts and, with a passage sensor, tells the watch whose grant comes next.

    Args:
        passback: the persistent passage store.
        watch: the passage watch, or None without a sensor.
    """

    def __init__(self, passback: PassbackLog, watch: PassageWatch | None = None) -> None:
        self.passback, self.watch = passback, watch

    def __call__(self, subject_key: str, direction: str, wall_s: float) -> None:
        """Loop thread, just before the grant's event is stored."""
        self.passback.record(subject_key, direction, wall_s)
        if self.watch is not None:
            self.watch.passage_recorded(subject_key)
