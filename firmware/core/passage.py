"""Grants that were not used: matching passage-sensor pulses to grants. Pure.

With a rotation or door sensor fitted, every grant waits for a passage. A passage
pulse settles the oldest waiting grant (people pass in the order they were let in).
A grant still waiting ``pass_timeout_s`` after it was given is not used: the caller
records a ``not_passed`` event for it and forgets its anti-passback passage, so the
person can come back and try again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from firmware.core.events import rfc3339_ms
from firmware.core.model import ScanEvent

NOT_PASSED = "not_passed"


@dataclass(frozen=True)
class PendingGrant:
    """A grant waiting for its passage.

    Attributes:
        event: the stored grant event.
        subject_key: the gate memory's key of the person (None without a subject).
        deadline_mono_s: when it counts as not used.
    """

    event: ScanEvent
    subject_key: str | None
    deadline_mono_s: float


class PassageWatch:
    """Waiting grants in order. Owned by the scan loop thread.

    Args:
        pass_timeout_s: how long a grant waits for its passage.
    """

    def __init__(self, pass_timeout_s: float) -> None:
        self.pass_timeout_s = pass_timeout_s
        self._pending: deque[PendingGrant] = deque()
        self._next_key: str | None = None
        self.passed = 0
        self.unmatched_passages = 0

    def passage_recorded(self, subject_key: str) -> None:
        """The gate memory recorded a passage for subject_key (just before the grant's event)."""
        self._next_key = subject_key

    def granted(self, event: ScanEvent, now_mono_s: float) -> None:
        """A grant event was stored; it now waits for a passage."""
        if event.decision != "granted":
            return
        self._pending.append(PendingGrant(event, self._next_key, now_mono_s + self.pass_timeout_s))
        self._next_key = None

    def passage(self) -> PendingGrant | None:
        """A passage pulse: settles the oldest waiting grant (None if nobody was waiting)."""
        if not self._pending:
            self.unmatched_passages += 1
            return None
        self.passed += 1
        return self._pending.popleft()

    def expired(self, now_mono_s: float) -> list[PendingGrant]:
        """Remove and return the grants whose time ran out."""
        out = []
        while self._pending and self._pending[0].deadline_mono_s <= now_mono_s:
            out.append(self._pending.popleft())
        return out

    @property
    def waiting(self) -> int:
        """Grants waiting for a passage."""
        return len(self._pending)


def not_passed_event(grant: ScanEvent, wall_s: float, time_synced: bool) -> ScanEvent:
    """The ``not_passed`` event for an unused grant: same person and code, new time, new id."""
    # The grant's sealed contact is bound to the grant's event id: it stays on the grant only.
    return replace(grant, decision=NOT_PASSED, reason=NOT_PASSED, ts=rfc3339_ms(wall_s),
                   time_synced=time_synced, latency_ms=0.0, event_id=None, seq=None, contact_sealed=None)
