"""[policy.dcc]: table-driven rules, the decision core with a verified DCC, config, display and events."""

from __future__ import annotations

import dataclasses

import pytest

from firmware.core.config import ConfigError, parse_config
from firmware.core.credentials import check_payload, dcc_issue
from firmware.core.credentials.dcc_trust import DscStore, parse_dsc
from firmware.core.credentials.trust import TrustStore
from firmware.core.dcc_rules import DccRules, dcc_reason, fold_name, names_match
from firmware.core.dcc_status import DccStatus
from firmware.core.events import EventFactory
from firmware.core.model import CredentialType, DecodedCode, Moment, Reason, Verdict
from firmware.core.policy import EmptyLists, GateMemory, Rules, decide

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0
H = 3600.0


def _status(**overrides) -> DccStatus:
    base = dict(kind="v", country="VN", issued_at_s=NOW - 10 * DAY, expires_s=NOW + 300 * DAY,
                dsc_not_before_s=NOW - 400 * DAY, dsc_not_after_s=NOW + 400 * DAY, family_name="Nguyễn",
                given_name="Văn An", birth_date="1990-04-30", certificate_id="URN:UVCI:01:VN:X#1",
                target="840539006", product="EU/1/20/1528", dose_number=2, total_doses=2,
                vaccination_date=dcc_issue.day(NOW - 30 * DAY))
    base.update(overrides)
    return DccStatus(**base)


def _test(**overrides) -> DccStatus:
    return _status(**{**dict(kind="t", product=None, dose_number=None, total_doses=None, vaccination_date=None,
                             test_type="LP6464-4", sample_time_s=NOW - 10 * H, test_result="260415000"),
                      **overrides})


def _recovery(**overrides) -> DccStatus:
    return _status(**{**dict(kind="r", product=None, dose_number=None, total_doses=None, vaccination_date=None,
                             first_positive_date="2026-12-01", valid_from="2026-12-12", valid_until="2027-06-01"),
                      **overrides})


ONLY_VACCINATED = DccRules(kinds=frozenset({"vaccination"}))
ONLY_TESTS = DccRules(kinds=frozenset({"test"}))


@pytest.mark.parametrize(("status", "rules", "reason"), [
    (_status(), DccRules(), None),
    (_status(dose_number=3, total_doses=2), DccRules(), None),                          # booster
    (_status(dose_number=1, total_doses=2), DccRules(), Reason.DCC_INCOMPLETE),
    (_status(dose_number=1, total_doses=1, product="EU/1/20/1525"), DccRules(), None),  # Janssen 1/1
    (_status(vaccination_date=dcc_issue.day(NOW - 13 * DAY)), DccRules(), Reason.DCC_TOO_RECENT),
    (_status(vaccination_date=dcc_issue.day(NOW - 14 * DAY)), DccRules(), None),
    (_status(vaccination_date=dcc_issue.day(NOW + 2 * DAY)), DccRules(), Reason.DCC_TOO_RECENT),
    (_status(vaccination_date=dcc_issue.day(NOW - 300 * DAY)), DccRules(max_days_after_last_dose=270),
     Reason.DCC_VACCINATION_TOO_OLD),
    (_status(vaccination_date=dcc_issue.day(NOW - 3000 * DAY)), DccRules(), None),       # 0 = no limit
    (_status(product="CoronaVac"), DccRules(), Reason.DCC_PRODUCT_NOT_ACCEPTED),
    (_status(product="BBIBP-CorV"), DccRules(), None),
    (_status(product="Abdala"), DccRules(), None),
    (_status(target="12345"), DccRules(), Reason.DCC_KIND_NOT_ACCEPTED),
    (_test(), DccRules(), None),
    (_test(), ONLY_VACCINATED, Reason.DCC_NOT_VACCINATED),
    (_recovery(), ONLY_VACCINATED, Reason.DCC_NOT_VACCINATED),
    (_status(), ONLY_TESTS, Reason.DCC_KIND_NOT_ACCEPTED),
    (_test(sample_time_s=NOW - 73 * H), DccRules(), Reason.DCC_TEST_TOO_OLD),
    (_test(sample_time_s=NOW - 71 * H), DccRules(), None),
    (_test(test_type="LP217198-3", sample_time_s=NOW - 25 * H), DccRules(), Reason.DCC_TEST_TOO_OLD),
    (_test(test_type="LP217198-3", sample_time_s=NOW - 23 * H), DccRules(), None),
    (_test(test_type="LP217198-3"), DccRules(max_test_age_s={"pcr": 72 * H}), Reason.DCC_TEST_TYPE_NOT_ACCEPTED),
    (_test(test_type="X-1"), DccRules(), Reason.DCC_TEST_TYPE_NOT_ACCEPTED),
    (_test(test_result="260373001"), DccRules(), Reason.DCC_TEST_POSITIVE),
    (_test(sample_time_s=NOW + H), DccRules(), Reason.NOT_YET_VALID),
    (_recovery(), DccRules(), None),
    (_recovery(valid_until="2027-01-14"), DccRules(), Reason.DCC_RECOVERY_EXPIRED),
    (_recovery(valid_until="2027-01-15"), DccRules(), None),
    (_recovery(valid_from="2027-01-16"), DccRules(), Reason.NOT_YET_VALID),
    (_status(expires_s=NOW), DccRules(), Reason.EXPIRED),
    (_status(issued_at_s=NOW + 60), DccRules(), Reason.NOT_YET_VALID),
    (_status(dsc_not_after_s=NOW - 1), DccRules(), Reason.DCC_SIGNER_NOT_VALID),
    (_status(trust_list_installed_s=NOW - 8 * DAY), DccRules(max_trust_list_age_s=7 * DAY),
     Reason.DCC_TRUST_LIST_STALE),
    (_status(trust_list_installed_s=NOW - 6 * DAY), DccRules(max_trust_list_age_s=7 * DAY), None),
])
def test_dcc_rules(status, rules, reason):
    assert dcc_reason(status, NOW, rules) is reason


@pytest.fixture(scope="module")
def signer():
    ca = dcc_issue.new_ca(not_before_s=NOW - 400 * DAY, not_after_s=NOW + 3000 * DAY)
    return dcc_issue.new_dsc(ca, not_before_s=NOW - 365 * DAY, not_after_s=NOW + 365 * DAY, kinds=("v", "t"))


DEFAULT_RULES = Rules()


def _decide(signer, hcert, *, rules=DEFAULT_RULES, trusted=True, wall_s=NOW):
    code = DecodedCode(signer.sign(hcert, iat_s=NOW - DAY, exp_s=NOW + 200 * DAY).encode())
    store = DscStore([parse_dsc(signer.der)])
    return decide(code, Moment(100.0, wall_s, trusted), 99.9, GateMemory(), rules,
                  lambda p: check_payload(p, TrustStore(), dcc_trust=store), EmptyLists())


def test_a_complete_vaccination_is_granted_with_a_masked_name_and_birth_year(signer):
    hcert = dcc_issue.vaccination("Nguyễn", "Văn An", "1990-04-30", date=dcc_issue.day(NOW - 30 * DAY))
    decision = _decide(signer, hcert)
    assert decision is not None and decision.verdict is Verdict.GRANTED and decision.reason is Reason.OK
    assert decision.credential_type is CredentialType.DCC
    assert decision.display == "Nguyễn Văn *** 1990"
    assert decision.subject == "URN:UVCI:01:VN:QRGATE0001#A"


@pytest.mark.parametrize(("hcert", "reason"), [
    (dcc_issue.vaccination("A", "B", "1990", date=dcc_issue.day(NOW - 30 * DAY), dose=1), Reason.DCC_INCOMPLETE),
    (dcc_issue.covid_test("A", "B", "1990", sampled=dcc_issue.moment(NOW - 80 * H)), Reason.DCC_TEST_TOO_OLD),
])
def test_the_decision_core_applies_the_dcc_rules(signer, hcert, reason):
    decision = _decide(signer, hcert)
    assert decision is not None and decision.verdict is Verdict.DENIED and decision.reason is reason


def test_an_untrusted_clock_refuses_a_dcc(signer):
    hcert = dcc_issue.vaccination("A", "B", "1990", date=dcc_issue.day(NOW - 30 * DAY))
    decision = _decide(signer, hcert, trusted=False)
    assert decision is not None and decision.reason is Reason.CLOCK_UNSYNCED


def test_the_rules_come_from_policy_dcc_in_the_config(signer):
    from firmware.app.builder import rules_from

    cfg = parse_config({"camera": {"source": "picamera2"}, "policy": {"dcc": {
        "kinds": ["vaccination"], "min_days_after_last_dose": 7, "max_test_age_h": {"pcr": 48}}}})
    rules = rules_from(cfg)
    assert rules.dcc.kinds == frozenset({"vaccination"}) and rules.dcc.min_days_after_last_dose == 7
    assert rules.dcc.max_test_age_s == {"pcr": 48 * H}
    hcert = dcc_issue.covid_test("A", "B", "1990", sampled=dcc_issue.moment(NOW - H))
    decision = _decide(signer, hcert, rules=rules)
    assert decision is not None and decision.reason is Reason.DCC_NOT_VACCINATED


def test_policy_dcc_defaults_are_the_issue_defaults():
    d = parse_config({"camera": {"source": "picamera2"}}).policy_dcc
    assert d.kinds == ("vaccination", "recovery", "test") and d.min_days_after_last_dose == 14
    assert d.max_days_after_last_dose == 0 and d.max_test_age_h == {"pcr": 72.0, "rapid_antigen": 24.0}
    assert set(d.products) == {"EU/1/21/1529", "Sputnik-V", "BBIBP-CorV", "Hayat-Vax", "EU/1/20/1528",
                               "EU/1/20/1507", "EU/1/20/1525", "Abdala"}


@pytest.mark.parametrize(("dcc", "needle"), [
    ({"kinds": ["vaccine"]}, "policy.dcc.kinds"),
    ({"kinds": "vaccination"}, "policy.dcc.kinds"),
    ({"min_days_after_last_dose": -1}, "policy.dcc.min_days_after_last_dose"),
    ({"max_test_age_h": {"pcr": -1}}, "policy.dcc.max_test_age_h"),
    ({"max_test_age_h": {"lamp": 5}}, "policy.dcc.max_test_age_h"),
    ({"products": [1]}, "policy.dcc.products"),
    ({"unknown": 1}, "policy.dcc.unknown"),
])
def test_bad_policy_dcc_settings_are_config_errors(dcc, needle):
    with pytest.raises(ConfigError) as info:
        parse_config({"camera": {"source": "picamera2"}, "policy": {"dcc": dcc}})
    assert any(needle in p for p in info.value.problems)


def test_a_dcc_subject_is_never_published_raw(signer):
    hcert = dcc_issue.vaccination("A", "B", "1990", date=dcc_issue.day(NOW - 30 * DAY))
    decision = _decide(signer, hcert)
    assert decision is not None
    raw = EventFactory.fixed(device_id="g", venue_id="v", direction="in", boot_id="boot", subject_mode="raw", secret=b"s" * 32).build(decision, NOW, True)
    assert raw.subject is not None and raw.subject != decision.subject and len(raw.subject) == 32
    none = EventFactory.fixed(device_id="g", venue_id="v", direction="in", boot_id="boot", subject_mode="none", secret=b"s" * 32).build(decision, NOW, True)
    assert none.subject is None


@pytest.mark.parametrize(("a", "b", "same"), [
    ("Nguyễn Văn An", "NGUYỄN VĂN AN", True),
    ("Nguyễn Văn An", "NGUYEN VAN AN", True),
    ("Trần Đức", "TRAN DUC", True),
    ("Văn An Nguyễn", "NGUYỄN VĂN AN", True),
    ("Nguyễn Văn An", "NGUYỄN VĂN ANH", False),
    ("", "", False),
])
def test_second_credential_names_are_compared_folded(a, b, same):
    assert names_match(a, b) is same
    assert fold_name("MUSTERFRAU<GOESSINGER") == "GOESSINGER MUSTERFRAU"


def test_status_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _status().kind = "t"  # type: ignore[misc]


PAIRING = Rules(dcc=DccRules(require_second_credential=True, second_credential_window_s=10.0))


def _cccd_code(name: str, id_number: str = "001090012345") -> DecodedCode:
    from firmware.core.credentials import cccd

    card = cccd.CccdCard(id_number, "", name, (1990, 4, 30), "male", "12 Lê Lợi, Quận 1", (2021, 2, 1))
    return DecodedCode(cccd.encode(card))


def _pairing_run(signer, second: DecodedCode | None, *, after_s: float, rules: Rules = PAIRING):
    """A DCC scan, then `second` after_s seconds later, through decide() and one GateMemory."""
    store = DscStore([parse_dsc(signer.der)])

    def check(payload: bytes):
        return check_payload(payload, TrustStore(), dcc_trust=store)

    memory = GateMemory()
    hcert = dcc_issue.vaccination("Nguyễn", "Văn An", "1990-04-30", date=dcc_issue.day(NOW - 30 * DAY))
    dcc_code = DecodedCode(signer.sign(hcert, iat_s=NOW - DAY, exp_s=NOW + 200 * DAY).encode())
    first_at = Moment(100.0, NOW)
    first = decide(dcc_code, first_at, 99.9, memory, rules, check, EmptyLists())
    assert first is not None
    memory.remember(first, first_at, "in")
    if second is None:
        return first, None
    then = Moment(100.0 + after_s, NOW + after_s)
    decision = decide(second, then, then.mono_s, memory, rules, check, EmptyLists())
    assert decision is not None
    memory.remember(decision, then, "in")
    return first, decision


def test_with_a_second_credential_required_a_dcc_alone_does_not_open(signer):
    first, _ = _pairing_run(signer, None, after_s=0)
    assert first.verdict is Verdict.DENIED and first.reason is Reason.DCC_IDENTITY_REQUIRED


def test_a_cccd_card_with_the_same_name_within_the_window_opens(signer):
    _, second = _pairing_run(signer, _cccd_code("NGUYỄN VĂN AN"), after_s=4.0)
    assert second.verdict is Verdict.GRANTED and second.reason is Reason.OK
    assert second.credential_type is CredentialType.CCCD  # accepted without accept_unsigned_id, as identity


def test_a_cccd_card_with_another_name_is_a_mismatch(signer):
    _, second = _pairing_run(signer, _cccd_code("TRẦN VĂN BÌNH"), after_s=4.0)
    assert second.verdict is Verdict.DENIED and second.reason is Reason.DCC_IDENTITY_MISMATCH


def test_a_cccd_card_after_the_window_is_judged_alone(signer):
    _, second = _pairing_run(signer, _cccd_code("NGUYỄN VĂN AN"), after_s=11.0)
    assert second.verdict is Verdict.DENIED and second.reason is Reason.UNSIGNED_NOT_ALLOWED


def test_without_the_setting_a_dcc_opens_by_itself(signer):
    first, second = _pairing_run(signer, _cccd_code("TRẦN VĂN BÌNH"), after_s=4.0, rules=Rules())
    assert first.verdict is Verdict.GRANTED
    assert second.reason is Reason.UNSIGNED_NOT_ALLOWED
