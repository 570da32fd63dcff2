"""The ordered shutdown of HOUSE_STYLE section 3: relay, STOPPING=1, camera, outbox flush, MQTT,
GPIO and stores; each step in its own guard with one log line on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

log = logging.getLogger(__name__)



class Phase(IntEnum):
    """The shutdown phases of HOUSE_STYLE section 3, in the order they run."""

    RELAY = 1      # release the relay (and refuse any later pulse) before anything can hang
    ANNOUNCE = 2   # systemd STOPPING=1, stop the device monitor
    CAMERA = 3     # close the camera
    FLUSH = 4      # drain the outbox to MQTT, bounded
    MQTT = 5       # retained offline, disconnect, loop_stop
    CLOSE = 6      # GPIO devices, stores, files


@dataclass
class Shutdown:
    """Ordered shutdown steps; each runs in its own guard and logs one line on failure.

    Steps run by phase, and in the order they were added within a phase, so a close can be
    registered right after its open (a partial build then closes what it opened) and still
    run at its documented place.
    """

    steps: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)
    _phases: list[Phase] = field(default_factory=list)

    def add(self, name: str, step: Callable[[], Any], phase: Phase = Phase.CLOSE) -> None:
        at = sum(1 for p in self._phases if p <= phase)
        self.steps.insert(at, (name, step))
        self._phases.insert(at, phase)

    def run(self) -> None:
        for name, step in self.steps:
            try:
                step()
            except Exception as err:  # one failing step must not skip the rest
                log.error("shutdown step %r failed: %s", name, err)

    def clear(self) -> None:
        self.steps.clear()
        self._phases.clear()
