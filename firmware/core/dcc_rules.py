"""The ``[policy.dcc]`` rules: does a verified EU Digital COVID Certificate open the gate? Pure.

Order of checks (first failure wins), after the signature, schema and key usage
were checked by the plugin and the wall clock was found trusted:

0. the trust list is older than ``max_trust_list_age_h`` (when not 0, and its install
   time is known): ``dcc_trust_list_stale``;
1. times (``firmware.core.credentials.dcc.check_times``): ``iat`` in the future
   ``not_yet_valid``; on or after ``exp`` ``expired``; the signer certificate not
   valid now, or ``iat`` outside its validity, ``dcc_signer_not_valid``;
2. the disease is COVID-19 (``tg`` 840539006), else ``dcc_kind_not_accepted``;
3. the kind is admitted, else ``dcc_not_vaccinated`` when vaccination is admitted
   (a test or recovery shown where only those vaccinated may enter), otherwise
   ``dcc_kind_not_accepted``;
4. vaccination: product in ``products`` (``dcc_product_not_accepted``); complete,
   ``dn >= sd`` (``dcc_incomplete``); at least ``min_days_after_last_dose`` days
   after ``dt`` (``dcc_too_recent``); at most ``max_days_after_last_dose`` when
   that is not 0 (``dcc_vaccination_too_old``);
5. test: a type with a maximum age (``dcc_test_type_not_accepted``); result "not
   detected" (``dcc_test_positive``); sampled no later than now
   (``not_yet_valid``) and no longer ago than the type's maximum (``dcc_test_too_old``);
6. recovery: today within ``df``..``du`` (``not_yet_valid`` before, ``dcc_recovery_expired`` after).

Days are counted between UTC calendar dates (the certificate's dates carry no zone).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from firmware.core.config import DccPolicyConfig
from firmware.core.credentials.dcc import check_times
from firmware.core.dcc_status import KIND_NAMES, KIND_TEST, KIND_VACCINATION, VN_2022_VACCINE_PRODUCTS, DccStatus
from firmware.core.model import Reason

COVID19 = "840539006"
NOT_DETECTED = "260415000"
TEST_TYPES = {"LP6464-4": "pcr", "LP217198-3": "rapid_antigen"}


@dataclass(frozen=True)
class DccRules:
    """The DCC rules in core units.

    Attributes:
        kinds: admitted kinds, by name (``vaccination``, ``recovery``, ``test``).
        min_days_after_last_dose, max_days_after_last_dose: see module docstring (0 = no maximum).
        products: accepted vaccination ``mp`` codes.
        max_test_age_s: by test type (``pcr``, ``rapid_antigen``); a type not listed is refused.
        max_trust_list_age_s: 0 = a trust list never goes stale.
        require_second_credential: a DCC alone does not open; a CCCD card or pass with the same
            name must follow within second_credential_window_s (see ``firmware.core.policy``).
    """

    kinds: frozenset[str] = frozenset({"vaccination", "recovery", "test"})
    min_days_after_last_dose: int = 14
    max_days_after_last_dose: int = 0
    products: frozenset[str] = frozenset(VN_2022_VACCINE_PRODUCTS)
    max_test_age_s: Mapping[str, float] = field(
        default_factory=lambda: {"pcr": 72 * 3600.0, "rapid_antigen": 24 * 3600.0})
    max_trust_list_age_s: float = 0.0
    require_second_credential: bool = False
    second_credential_window_s: float = 10.0


def _utc_date(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).date()


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def dcc_reason(status: DccStatus, now_s: float, rules: DccRules, skew_s: float = 0.0) -> Reason | None:
    """Return why this certificate does not open the gate now, or None if it does.

    Args:
        status: what the verified certificate says.
        now_s: trusted wall time, Unix seconds.
        rules: the venue's DCC rules.
        skew_s: tolerance on the certificate's and signer's times.
    """
    installed = status.trust_list_installed_s
    if rules.max_trust_list_age_s and installed is not None and now_s - installed > rules.max_trust_list_age_s:
        return Reason.DCC_TRUST_LIST_STALE
    timing = check_times(status, now_s, skew_s)
    if timing is not None:
        return timing
    if status.target != COVID19:
        return Reason.DCC_KIND_NOT_ACCEPTED
    if status.kind_name not in rules.kinds:
        return Reason.DCC_NOT_VACCINATED if "vaccination" in rules.kinds else Reason.DCC_KIND_NOT_ACCEPTED
    today = _utc_date(now_s)
    if status.kind == KIND_VACCINATION:
        if status.product not in rules.products:
            return Reason.DCC_PRODUCT_NOT_ACCEPTED
        if (status.dose_number or 0) < (status.total_doses or 1):
            return Reason.DCC_INCOMPLETE
        dose_date = _date(status.vaccination_date)
        if dose_date is None:
            return Reason.MALFORMED
        days = (today - dose_date).days
        if days < rules.min_days_after_last_dose:
            return Reason.DCC_TOO_RECENT
        if rules.max_days_after_last_dose and days > rules.max_days_after_last_dose:
            return Reason.DCC_VACCINATION_TOO_OLD
        return None
    if status.kind == KIND_TEST:
        test_type = TEST_TYPES.get(status.test_type or "")
        max_age_s = rules.max_test_age_s.get(test_type) if test_type else None
        if max_age_s is None:
            return Reason.DCC_TEST_TYPE_NOT_ACCEPTED
        if status.test_result != NOT_DETECTED:
            return Reason.DCC_TEST_POSITIVE
        sampled = status.sample_time_s
        if sampled is None:
            return Reason.MALFORMED
        if sampled > now_s + skew_s:
            return Reason.NOT_YET_VALID
        if now_s - sampled > max_age_s + skew_s:
            return Reason.DCC_TEST_TOO_OLD
        return None
    valid_from, valid_until = _date(status.valid_from), _date(status.valid_until)
    if valid_from is None or valid_until is None:
        return Reason.MALFORMED
    if today < valid_from:
        return Reason.NOT_YET_VALID
    if today > valid_until:
        return Reason.DCC_RECOVERY_EXPIRED
    return None


def rules_from_config(kinds: tuple[str, ...], min_days: int, max_days: int, products: tuple[str, ...],
                      max_test_age_h: Mapping[str, float], max_trust_list_age_h: float = 0.0,
                      require_second_credential: bool = False, second_credential_window_s: float = 10.0) -> DccRules:
    """Build DccRules from the ``[policy.dcc]`` settings (hours become seconds)."""
    return DccRules(kinds=frozenset(kinds), min_days_after_last_dose=min_days, max_days_after_last_dose=max_days,
                    products=frozenset(products),
                    max_test_age_s={name: hours * 3600.0 for name, hours in max_test_age_h.items()},
                    max_trust_list_age_s=max_trust_list_age_h * 3600.0,
                    require_second_credential=require_second_credential,
                    second_credential_window_s=second_credential_window_s)


def describe(status: DccStatus) -> str:
    """A one-line summary without personal data, e.g. ``vaccination 2/2 EU/1/20/1528 (VN)``."""
    if status.kind == KIND_VACCINATION:
        what = f"{status.dose_number}/{status.total_doses} {status.product}"
    elif status.kind == KIND_TEST:
        what = f"{TEST_TYPES.get(status.test_type or '', status.test_type)}"
    else:
        what = f"{status.valid_from}..{status.valid_until}"
    return f"{KIND_NAMES[status.kind]} {what} ({status.country or '?'})"


def fold_name(name: str | None) -> str:
    """A name folded for comparison: no diacritics (Đ -> D), upper case, words sorted.

    ``fold_name("Nguyễn Văn An") == fold_name("AN NGUYEN VAN") == "AN NGUYEN VAN"``. The
    DCC's standardised ``<`` and ``-`` count as spaces.
    """
    import unicodedata

    text = (name or "").replace("Đ", "D").replace("đ", "d").replace("<", " ").replace("-", " ")
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(sorted(plain.upper().split()))


def names_match(dcc_name: str | None, other_name: str | None) -> bool:
    """True if a DCC holder's name and another credential's name are the same person's name.

    For the optional second-credential check (see README, "DCC identity"): folded with
    ``fold_name``, so diacritics, case and word order do not matter; an empty name never matches.
    """
    folded = fold_name(dcc_name)
    return bool(folded) and folded == fold_name(other_name)


def dcc_rules_from(section: DccPolicyConfig) -> DccRules:
    """The core's DccRules from the ``[policy.dcc]`` section of the config."""
    d = section
    return rules_from_config(d.kinds, d.min_days_after_last_dose, d.max_days_after_last_dose, d.products,
                             d.max_test_age_h, d.max_trust_list_age_h, d.require_second_credential,
                             d.second_credential_window_s)
