"""The decision core: one decoded code in, one Decision (or nothing) out.

Pure: no I/O and no clock reads. Time comes in as a ``Moment``; what the gate
remembers (codes in view, recent grants, who is inside) comes in as a read-only
``MemoryView`` and the caller records the outcome afterwards with
``GateMemory.remember``.

Order of checks for one code (first failure wins):

1. the same payload seen within ``repeat_window_s`` (the window slides while the
   code stays in view): no decision at all, so one code held up opens once;
2. parse and verify (``unknown_format``, ``malformed``, ``bad_signature``, ``unknown_issuer``);
   the result names the credential type in the event even when the gate is blocked;
3. the gate is blocked (lockdown, not provisioned, storage full...): denied with that reason;
4. CCCD without ``accept_unsigned_id``: ``unsigned_not_allowed``;
5. deny list: ``denied`` (the holder's id or its subject at this venue, or ``pass:<cti hex>``
   for one revoked pass; an entry with an end counts until it, by the trusted wall time, and
   always while the wall clock is not trusted);
6. a ``QG1:`` pass without ``exp`` under ``require_expiry`` (the default): ``no_expiry``;
   time checks, only for credentials that carry times: untrusted wall clock gives
   ``clock_unsynced``; ``now < nbf - skew`` gives ``not_yet_valid``; ``now >= exp + skew``
   gives ``expired`` (RFC 8392: not accepted on or after ``exp``); a health declaration
   older than ``health_declaration_max_age_h`` (or missing) gives ``no_health_declaration``;
   6b. an EU Digital COVID Certificate (``HC1:``): its signer's validity and the
   ``[policy.dcc]`` rules, with the ``dcc_*`` reasons (``firmware.core.dcc_rules``);
   with ``require_second_credential``, a DCC that passes everything up to step 7 is
   denied with ``dcc_identity_required`` and remembered; the next credential (CCCD card
   or pass) within ``second_credential_window_s`` must carry the same name (folded), else
   ``dcc_identity_mismatch``; a matching CCCD card is then accepted even without
   ``accept_unsigned_id`` and goes on through steps 5 to 10;
7. allow list in employees-only mode: ``not_allowed``;
8. the same person granted within ``repeat_window_s``: ``repeat``;
9. anti-passback: a second passage the same way within ``passback_window_s``:
   ``hard`` denies with ``passback``, ``soft`` grants with reason ``passback`` (flagged);
10. otherwise granted with ``ok``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from firmware.core import masking
from firmware.core.dcc_rules import DccRules, dcc_reason, names_match
from firmware.core.model import Credential, CredentialType, Decision, DecodedCode, Moment, Reason, Rejection, Verdict


@dataclass(frozen=True)
class Rules:
    """The policy settings the core needs, in core units (seconds).

    Attributes:
        direction: ``in`` or ``out``, the way this gate lets people through.
        repeat_window_s: see module docstring, steps 1 and 8.
        passback: ``off``, ``soft`` or ``hard``.
        passback_window_s: how long a passage blocks a second one the same way.
        accept_unsigned_id: accept the CCCD card for identity-only check-in.
        health_declaration_max_age_s: 0 means not required.
        require_expiry: refuse ``QG1:`` passes without ``exp`` (they would never expire).
        allow_list_required: employees-only mode.
        clock_skew_s: tolerance on nbf and exp.
        dcc: the ``[policy.dcc]`` rules for EU Digital COVID Certificates (step 6b).
        cccd_id_digits: how many trailing digits of a CCCD id the display shows (0-3).
    """

    direction: str = "in"
    repeat_window_s: float = 5.0
    passback: str = "off"
    passback_window_s: float = 3600.0
    accept_unsigned_id: bool = False
    health_declaration_max_age_s: float = 0.0
    require_expiry: bool = True
    allow_list_required: bool = False
    clock_skew_s: float = 0.0
    dcc: DccRules = field(default_factory=DccRules)
    cccd_id_digits: int = 0


class Lists(Protocol):
    """Deny and allow lists, looked up in O(1).

    ``now_s`` is the decision's wall time (Unix seconds), or None when the wall clock is not
    trusted: entries that end (``until``) count on the deny list and not on the allow list then.
    """

    def is_denied(self, subject: str, now_s: float | None = None) -> bool:
        """True if the person is on the deny (quarantine) list at now_s."""
        ...

    def is_allowed(self, subject: str, now_s: float | None = None) -> bool:
        """True if the person is on the allow (employees) list at now_s."""
        ...


class EmptyLists:
    """Lists with nobody on them."""

    def is_denied(self, subject: str, now_s: float | None = None) -> bool:
        return False

    def is_allowed(self, subject: str, now_s: float | None = None) -> bool:
        return False


class MemoryView(Protocol):
    """What the core may read of the gate's memory."""

    def last_seen_mono(self, code_sha256: str) -> float | None:
        """Monotonic time this exact payload was last in view, or None."""
        ...

    def last_grant_mono(self, subject_key: str) -> float | None:
        """Monotonic time this person was last granted here, or None."""
        ...

    def last_passage(self, subject_key: str) -> tuple[str, float] | None:
        """(direction, wall seconds) of this person's last recorded passage, or None."""
        ...

    def pending_dcc(self) -> tuple[str, float] | None:
        """(holder's name, monotonic time) of a DCC waiting for a second credential, or None."""
        ...


# A deny-list entry "pass:<cti hex>" refuses one pass (a reissued or lost one), not its holder.
REVOKED_PASS_PREFIX = "pass:"


def display_for(cred: Credential, cccd_id_digits: int = 0) -> str:
    """The masked name and phone of a credential's holder, safe to show and log."""
    return masking.display_credential(cred, cccd_id_digits)


def subject_key(subject: str) -> str:
    """A stable, non-reversible key for a person id (what the gate's memory stores)."""
    return hashlib.sha256(b"qrgate-subject\x00" + subject.encode("utf-8")).hexdigest()[:32]


Checker = Callable[[bytes], "Credential | Rejection"]


def decide(
    code: DecodedCode,
    now: Moment,
    frame_mono_s: float,
    memory: MemoryView,
    rules: Rules,
    check: Checker,
    lists: Lists,
    blocked: Reason | None = None,
) -> Decision | None:
    """Decide one decoded code.

    Args:
        code: the decoded payload.
        now: the moment of decision.
        frame_mono_s: capture time of the frame the code came from.
        memory: the gate's memory (read only).
        rules: the policy.
        check: parses and verifies a payload (``firmware.core.credentials.check_payload``
            bound to the trust store); never raises.
        lists: deny and allow lists.
        blocked: when set, every code is denied with this reason (lockdown, storage
            full, not provisioned...).

    Returns:
        The decision, or None when this payload is still in view from an earlier
        decision (no new event, no feedback).
    """
    sha = code.sha256
    seen = memory.last_seen_mono(sha)
    if seen is not None and now.mono_s - seen < rules.repeat_window_s:
        return None

    def out(verdict: Verdict, reason: Reason, ctype: CredentialType, cred: Credential | None = None) -> Decision:
        return Decision(
            verdict=verdict,
            reason=reason,
            code_sha256=sha,
            credential_type=ctype,
            subject=cred.subject if cred else None,
            display=display_for(cred, rules.cccd_id_digits) if cred else "",
            decided_mono_s=now.mono_s,
            frame_mono_s=frame_mono_s,
            credential=cred,
        )

    result = check(code.payload)
    if isinstance(result, Rejection):
        return out(Verdict.DENIED, blocked or result.reason, result.type)
    cred = result
    if blocked is not None:
        return out(Verdict.DENIED, blocked, cred.type, cred)
    paired = False
    pending = memory.pending_dcc() if rules.dcc.require_second_credential and cred.dcc is None else None
    if pending is not None and 0 <= now.mono_s - pending[1] <= rules.dcc.second_credential_window_s:
        if not names_match(pending[0], cred.name):
            return out(Verdict.DENIED, Reason.DCC_IDENTITY_MISMATCH, cred.type, cred)
        paired = True  # a CCCD card is then used for what it proves: who the DCC's holder is
    if cred.type is CredentialType.CCCD and not rules.accept_unsigned_id and not paired:
        return out(Verdict.DENIED, Reason.UNSIGNED_NOT_ALLOWED, cred.type, cred)
    list_time_s = now.wall_s if now.wall_trusted else None  # an untrusted clock never ends a quarantine
    if lists.is_denied(cred.subject, list_time_s) or (
            cred.token_id is not None and lists.is_denied(REVOKED_PASS_PREFIX + cred.token_id, list_time_s)):
        return out(Verdict.DENIED, Reason.DENIED, cred.type, cred)
    time_reason = _time_reason(cred, now, rules)
    if time_reason is None and cred.dcc is not None:
        time_reason = dcc_reason(cred.dcc, now.wall_s, rules.dcc, rules.clock_skew_s)
    if time_reason is not None:
        return out(Verdict.DENIED, time_reason, cred.type, cred)
    if rules.allow_list_required and not lists.is_allowed(cred.subject, list_time_s):
        return out(Verdict.DENIED, Reason.NOT_ALLOWED, cred.type, cred)
    if cred.dcc is not None and rules.dcc.require_second_credential:
        return out(Verdict.DENIED, Reason.DCC_IDENTITY_REQUIRED, cred.type, cred)
    key = subject_key(cred.subject)
    granted_at = memory.last_grant_mono(key)
    if granted_at is not None and now.mono_s - granted_at < rules.repeat_window_s:
        return out(Verdict.DENIED, Reason.REPEAT, cred.type, cred)
    if rules.passback != "off":
        last = memory.last_passage(key)
        if last is not None and last[0] == rules.direction and 0 <= now.wall_s - last[1] < rules.passback_window_s:
            if rules.passback == "hard":
                return out(Verdict.DENIED, Reason.PASSBACK, cred.type, cred)
            return out(Verdict.GRANTED, Reason.PASSBACK, cred.type, cred)
    return out(Verdict.GRANTED, Reason.OK, cred.type, cred)


def _time_reason(cred: Credential, now: Moment, rules: Rules) -> Reason | None:
    if rules.require_expiry and cred.type is CredentialType.QG1 and cred.expires_s is None:
        return Reason.NO_EXPIRY  # a leaked pass without exp would open the gate for ever
    needs_health = rules.health_declaration_max_age_s > 0 and cred.type is CredentialType.QG1
    has_times = cred.not_before_s is not None or cred.expires_s is not None or needs_health
    if not has_times:
        return None
    if not now.wall_trusted:
        return Reason.CLOCK_UNSYNCED
    skew = rules.clock_skew_s
    if cred.not_before_s is not None and now.wall_s < cred.not_before_s - skew:
        return Reason.NOT_YET_VALID
    if cred.expires_s is not None and now.wall_s >= cred.expires_s + skew:
        return Reason.EXPIRED
    if needs_health:
        hd = cred.health_declared_s
        if hd is None or now.wall_s - hd > rules.health_declaration_max_age_s or hd > now.wall_s + skew:
            return Reason.NO_HEALTH_DECLARATION
    return None


class GateMemory:
    """The gate's short-term memory: codes in view, recent grants, last passages.

    Not thread-safe: owned by the scan loop. Passages can be loaded from and
    reported to a persistent store (``on_passage``) so anti-passback survives a restart.

    Args:
        passages: initial {subject_key: (direction, wall_s)} from the persistent store.
        on_passage: called with (subject_key, direction, wall_s) after each recorded passage.
    """

    def __init__(
        self,
        passages: dict[str, tuple[str, float]] | None = None,
        on_passage: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self._seen: dict[str, float] = {}
        self._grants: dict[str, float] = {}
        self._passages: dict[str, tuple[str, float]] = dict(passages or {})
        self._on_passage = on_passage
        self._pending_dcc: tuple[str, float] | None = None

    def last_seen_mono(self, code_sha256: str) -> float | None:
        return self._seen.get(code_sha256)

    def last_grant_mono(self, subject_key: str) -> float | None:
        return self._grants.get(subject_key)

    def last_passage(self, subject_key: str) -> tuple[str, float] | None:
        return self._passages.get(subject_key)

    def pending_dcc(self) -> tuple[str, float] | None:
        return self._pending_dcc

    def saw(self, code_sha256: str, now_mono_s: float) -> None:
        """Record that a payload is in view now (keeps the repeat window sliding)."""
        self._seen[code_sha256] = now_mono_s

    def remember(self, decision: Decision, now: Moment, direction: str) -> None:
        """Record a decision's effects: the grant time and, for a grant, the passage; a DCC
        waiting for a second credential, which the next credential consumes."""
        self._seen[decision.code_sha256] = now.mono_s
        cred = decision.credential
        if decision.reason is Reason.DCC_IDENTITY_REQUIRED and cred is not None:
            self._pending_dcc = (cred.name or "", now.mono_s)
        elif cred is not None and cred.dcc is None:
            self._pending_dcc = None
        if decision.granted and decision.subject is not None:
            key = subject_key(decision.subject)
            self._grants[key] = now.mono_s
            self.record_passage(key, direction, now.wall_s)

    def record_passage(self, key: str, direction: str, wall_s: float) -> None:
        """Record a passage and report it to the persistent store."""
        self._passages[key] = (direction, wall_s)
        if self._on_passage:
            self._on_passage(key, direction, wall_s)

    def prune_passages(self, now_wall_s: float, keep_s: float) -> None:
        """Forget passages older than keep_s (wall seconds): they no longer block anyone."""
        cutoff = now_wall_s - keep_s
        self._passages = {k: v for k, v in self._passages.items() if v[1] >= cutoff}

    def forget_passage(self, key: str) -> None:
        """Drop a person's last passage (a grant that was not used)."""
        self._passages.pop(key, None)

    def prune(self, now_mono_s: float, keep_s: float) -> None:
        """Forget codes and grants older than keep_s (bounded memory over days of running)."""
        cutoff = now_mono_s - keep_s
        self._seen = {k: v for k, v in self._seen.items() if v >= cutoff}
        self._grants = {k: v for k, v in self._grants.items() if v >= cutoff}
