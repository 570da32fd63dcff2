"""The decision table of the pure core: (code, memory, rules, now) -> decision."""

from __future__ import annotations

import pytest

from firmware.core.model import Credential, CredentialType, DecodedCode, Moment, Reason, Rejection, Verdict
from firmware.core.policy import EmptyLists, GateMemory, Rules, decide, subject_key

WALL = 1_800_000_000.0
PASS = Credential(type=CredentialType.QG1, subject="P-001", name="NGUYỄN ĐÌNH HÙNG", phone="0966323123",
                  issued_at_s=WALL - 3600, not_before_s=WALL - 3600, expires_s=WALL + 3600, signed=True)
CCCD = Credential(type=CredentialType.CCCD, subject="001099012345", name="TRẦN THỊ MAI")


class SetLists:
    def __init__(self, denied=(), allowed=()) -> None:
        self.denied, self.allowed = set(denied), set(allowed)

    def is_denied(self, subject: str, now_s: float | None = None) -> bool:
        return subject in self.denied

    def is_allowed(self, subject: str, now_s: float | None = None) -> bool:
        return subject in self.allowed


def checker(result):
    return lambda payload: result


DEFAULT_RULES = Rules()


def run(result, *, rules=DEFAULT_RULES, lists=None, memory=None, now=None, blocked=None, payload=b"X"):
    now = now or Moment(mono_s=100.0, wall_s=WALL, wall_trusted=True)
    return decide(DecodedCode(payload), now, now.mono_s - 0.01, memory or GateMemory(), rules,
                  checker(result), lists or EmptyLists(), blocked)


@pytest.mark.parametrize(
    ("result", "rules", "lists", "now", "want"),
    [
        (PASS, Rules(), None, None, (Verdict.GRANTED, Reason.OK)),
        (Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT), Rules(), None, None,
         (Verdict.DENIED, Reason.UNKNOWN_FORMAT)),
        (Rejection(CredentialType.QG1, Reason.BAD_SIGNATURE), Rules(), None, None,
         (Verdict.DENIED, Reason.BAD_SIGNATURE)),
        (Rejection(CredentialType.QG1, Reason.UNKNOWN_ISSUER), Rules(), None, None,
         (Verdict.DENIED, Reason.UNKNOWN_ISSUER)),
        (PASS, Rules(), SetLists(denied={"P-001"}), None, (Verdict.DENIED, Reason.DENIED)),
        (PASS, Rules(allow_list_required=True), SetLists(), None, (Verdict.DENIED, Reason.NOT_ALLOWED)),
        (PASS, Rules(allow_list_required=True), SetLists(allowed={"P-001"}), None, (Verdict.GRANTED, Reason.OK)),
        # deny list wins over the allow list
        (PASS, Rules(allow_list_required=True), SetLists(denied={"P-001"}, allowed={"P-001"}), None,
         (Verdict.DENIED, Reason.DENIED)),
        # validity window (C2): exp-1 s ok, exp refused, exp+1 refused, nbf-1 refused, nbf ok
        (PASS, Rules(), None, Moment(100.0, WALL + 3599, True), (Verdict.GRANTED, Reason.OK)),
        (PASS, Rules(), None, Moment(100.0, WALL + 3600, True), (Verdict.DENIED, Reason.EXPIRED)),
        (PASS, Rules(), None, Moment(100.0, WALL + 3601, True), (Verdict.DENIED, Reason.EXPIRED)),
        (PASS, Rules(), None, Moment(100.0, WALL - 3601, True), (Verdict.DENIED, Reason.NOT_YET_VALID)),
        (PASS, Rules(), None, Moment(100.0, WALL - 3600, True), (Verdict.GRANTED, Reason.OK)),
        (PASS, Rules(clock_skew_s=30), None, Moment(100.0, WALL + 3620, True), (Verdict.GRANTED, Reason.OK)),
        (PASS, Rules(clock_skew_s=30), None, Moment(100.0, WALL + 3630, True), (Verdict.DENIED, Reason.EXPIRED)),
        # an untrusted clock fails closed for time-dependent passes only
        (PASS, Rules(), None, Moment(100.0, WALL, False), (Verdict.DENIED, Reason.CLOCK_UNSYNCED)),
        (PASS, Rules(), None, Moment(100.0, 0.0, False), (Verdict.DENIED, Reason.CLOCK_UNSYNCED)),
        (CCCD, Rules(accept_unsigned_id=True), None, Moment(100.0, 0.0, False), (Verdict.GRANTED, Reason.OK)),
        (CCCD, Rules(), None, None, (Verdict.DENIED, Reason.UNSIGNED_NOT_ALLOWED)),
        (CCCD, Rules(accept_unsigned_id=True), SetLists(denied={"001099012345"}), None,
         (Verdict.DENIED, Reason.DENIED)),
        # a pass without exp would open for ever: refused unless require_expiry is off
        (Credential(**{**PASS.__dict__, "expires_s": None}), Rules(), None, None,
         (Verdict.DENIED, Reason.NO_EXPIRY)),
        (Credential(**{**PASS.__dict__, "expires_s": None, "not_before_s": None}), Rules(), None,
         Moment(100.0, 0.0, False), (Verdict.DENIED, Reason.NO_EXPIRY)),
        (Credential(**{**PASS.__dict__, "expires_s": None}), Rules(require_expiry=False), None, None,
         (Verdict.GRANTED, Reason.OK)),
        (Credential(**{**PASS.__dict__, "expires_s": None}), Rules(), SetLists(denied={"P-001"}), None,
         (Verdict.DENIED, Reason.DENIED)),
        # health declaration
        (PASS, Rules(health_declaration_max_age_s=86400), None, None,
         (Verdict.DENIED, Reason.NO_HEALTH_DECLARATION)),
        (Credential(**{**PASS.__dict__, "health_declared_s": WALL - 3600}), Rules(health_declaration_max_age_s=86400),
         None, None, (Verdict.GRANTED, Reason.OK)),
        (Credential(**{**PASS.__dict__, "health_declared_s": WALL - 90000}), Rules(health_declaration_max_age_s=86400),
         None, None, (Verdict.DENIED, Reason.NO_HEALTH_DECLARATION)),
        (Credential(**{**PASS.__dict__, "health_declared_s": WALL + 7200}), Rules(health_declaration_max_age_s=86400),
         None, None, (Verdict.DENIED, Reason.NO_HEALTH_DECLARATION)),
    ],
)
def test_decision_table(result, rules, lists, now, want):
    decision = run(result, rules=rules, lists=lists, now=now)
    assert decision is not None
    assert (decision.verdict, decision.reason) == want


def test_blocked_gate_denies_every_code_with_the_block_reason():
    for result in (PASS, Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT)):
        decision = run(result, blocked=Reason.LOCKDOWN)
        assert (decision.verdict, decision.reason) == (Verdict.DENIED, Reason.LOCKDOWN)


def test_same_code_in_view_gives_one_decision_while_window_slides():
    memory = GateMemory()
    rules = Rules(repeat_window_s=5.0)
    first = run(PASS, rules=rules, memory=memory, now=Moment(100.0, WALL))
    assert first.granted
    memory.remember(first, Moment(100.0, WALL), "in")
    # the code stays in view: every frame within the window is no decision, and the window slides
    for t in (101.0, 104.0, 108.0, 112.5):
        assert run(PASS, rules=rules, memory=memory, now=Moment(t, WALL + t - 100)) is None
        memory.saw(first.code_sha256, t)
    # out of view for longer than the window: decided again, a grant (same person, window passed)
    again = run(PASS, rules=rules, memory=memory, now=Moment(118.0, WALL + 18))
    assert (again.verdict, again.reason) == (Verdict.GRANTED, Reason.OK)


def test_same_person_with_another_code_within_window_is_a_repeat():
    memory = GateMemory()
    rules = Rules(repeat_window_s=5.0)
    first = run(PASS, rules=rules, memory=memory, payload=b"A")
    memory.remember(first, Moment(100.0, WALL), "in")
    second = run(PASS, rules=rules, memory=memory, payload=b"B", now=Moment(102.0, WALL + 2))
    assert (second.verdict, second.reason) == (Verdict.DENIED, Reason.REPEAT)
    third = run(PASS, rules=rules, memory=memory, payload=b"C", now=Moment(106.0, WALL + 6))
    assert third.granted


@pytest.mark.parametrize(("mode", "want"), [("hard", (Verdict.DENIED, Reason.PASSBACK)),
                                            ("soft", (Verdict.GRANTED, Reason.PASSBACK)),
                                            ("off", (Verdict.GRANTED, Reason.OK))])
def test_anti_passback_second_entry_without_exit(mode, want):
    rules = Rules(direction="in", passback=mode, passback_window_s=600, repeat_window_s=1)
    memory = GateMemory(passages={subject_key("P-001"): ("in", WALL - 60)})
    decision = run(PASS, rules=rules, memory=memory)
    assert (decision.verdict, decision.reason) == want


def test_anti_passback_clears_after_exit_or_window():
    rules = Rules(direction="in", passback="hard", passback_window_s=600)
    after_exit = GateMemory(passages={subject_key("P-001"): ("out", WALL - 60)})
    assert run(PASS, rules=rules, memory=after_exit).granted
    long_ago = GateMemory(passages={subject_key("P-001"): ("in", WALL - 601)})
    assert run(PASS, rules=rules, memory=long_ago).granted


def test_memory_reports_passages_for_persistence_and_keeps_no_raw_ids():
    saved = []
    memory = GateMemory(on_passage=lambda *row: saved.append(row))
    decision = run(PASS)
    memory.remember(decision, Moment(100.0, WALL), "in")
    assert saved == [(subject_key("P-001"), "in", WALL)]
    assert "P-001" not in repr(saved)


def test_denials_do_not_record_a_passage():
    saved = []
    memory = GateMemory(on_passage=lambda *row: saved.append(row))
    decision = run(PASS, lists=SetLists(denied={"P-001"}))
    memory.remember(decision, Moment(100.0, WALL), "in")
    assert saved == []
