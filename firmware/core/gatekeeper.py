"""The policy with its live inputs (identity, lists, memory, blocking reason), and loop statistics.

Pure: no I/O and no clock reads (times come in as arguments).

Who writes what (each piece of live state has one writer):

- ``Gatekeeper.blocked``: the device monitor only (``set_blocked``), from the device state;
  provisioning and an unusable outbox reach it as device inputs, never directly.
- the identity: the provisioning feature only (``IdentityCell.swap``).
- the memory and ``LoopStats``: the scan loop thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from firmware.core.credentials.trust import TrustStore
from firmware.core.identity import GateIdentity, IdentityCell
from firmware.core.model import Credential, Decision, DecodedCode, Moment, Reason, Rejection, ScanEvent
from firmware.core.policy import EmptyLists, GateMemory, Lists, Rules, decide

PRUNE_INTERVAL_S = 60.0

# Parses and verifies a payload against the trusted issuer keys; never raises
# (``firmware.core.credentials.check_payload``).
CredentialCheck = Callable[[bytes, TrustStore], Credential | Rejection]


class Gatekeeper:
    """Decides codes with the identity in force, the lists and the gate's memory.

    Args:
        identity: the cell holding the current GateIdentity (rules and trusted issuers).
        check: the credential check, given the trusted issuers of the identity in force.
        lists: deny and allow lists.
        memory: codes in view, recent grants, passages (owned by the scan loop).
        blocked: the initial blocking reason (the device monitor sets it from then on).
    """

    def __init__(self, identity: IdentityCell, check: CredentialCheck, lists: Lists | None = None,
                 memory: GateMemory | None = None, blocked: Reason | None = None) -> None:
        self.identity = identity
        self._check = check
        self.lists: Lists = lists if lists is not None else EmptyLists()
        self.memory = memory if memory is not None else GateMemory()
        self._blocked = blocked
        self._next_prune_mono_s = 0.0

    @classmethod
    def fixed(cls, *, rules: Rules, check: Callable[[bytes], Credential | Rejection], lists: Lists | None = None,
              memory: GateMemory | None = None) -> Gatekeeper:
        """A gatekeeper whose identity never changes, with a check that needs no issuer keys
        (tools, benches and tests)."""
        def checked(payload: bytes, trust: TrustStore) -> Credential | Rejection:
            return check(payload)

        return cls(IdentityCell(GateIdentity(rules=rules)), checked, lists, memory)

    @property
    def blocked(self) -> Reason | None:
        """The reason every code is denied with right now (lockdown, not provisioned...), or None."""
        return self._blocked

    def set_blocked(self, reason: Reason | None) -> None:
        """Device monitor only: the blocking reason that follows from the device state."""
        self._blocked = reason

    def prune_if_due(self, now_mono_s: float, now_wall_s: float) -> None:
        """Once a minute, forget codes and grants older than the repeat window and passages
        older than the passback window, so memory stays bounded over months of running."""
        if now_mono_s < self._next_prune_mono_s:
            return
        self._next_prune_mono_s = now_mono_s + PRUNE_INTERVAL_S
        rules = self.identity.current.rules
        self.memory.prune(now_mono_s, max(rules.repeat_window_s, 1.0))
        self.memory.prune_passages(now_wall_s, rules.passback_window_s)

    def decide(self, code: DecodedCode, now: Moment, frame_mono_s: float) -> Decision | None:
        """Decide one code with the identity in force (None while the same code is still in view)."""
        identity = self.identity.current  # read once: one code, one identity
        trust = identity.trust

        def check(payload: bytes) -> Credential | Rejection:
            return self._check(payload, trust)

        decision = decide(code, now, frame_mono_s, self.memory, identity.rules, check, self.lists, self._blocked)
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
        self.input_ended = False

    def frame_seen(self, now_mono_s: float, digest: int | None = None) -> None:
        """Count a frame; digest (a frame fingerprint) is given for live cameras only."""
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
