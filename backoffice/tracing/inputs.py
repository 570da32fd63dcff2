"""The "Truy vết" form: every field checked, every problem named (in the page's language).

Pure apart from the translations: the current time and the zone are passed in. The limits
are the command's (`qrgate history trace`): a window of at most ``MAX_WINDOW_DAYS`` days,
dwell and overlap settings of at most 7 days, finite numbers only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo

from django.utils.translation import gettext as _

from firmware.core.errors import ConfigError
from provisioning.history.query import day_after, parse_time
from provisioning.history.tracing import (DEFAULT_DWELL_MIN, DEFAULT_MAX_DWELL_H, DEFAULT_MIN_OVERLAP_MIN,
                                          HOUR_MS, MINUTE_MS, TraceRules)

MAX_WINDOW_DAYS = 62  # as `qrgate history trace`
MAX_SETTING_MIN = 7 * 24 * 60
MAX_REASON_CHARS = 300
MIN_REASON_CHARS = 3
# What the stored ids are made of: HMAC hex, CCCD digits, pass subjects, DCC certificate ids
# (URN:UVCI:01:VN:.../...#C). Quotes, brackets, semicolons and spaces are never part of one.
_IDENT = re.compile(r"[0-9A-Za-z:/#._+-]{1,128}")
BY_SUBJECT, BY_PERSON_ID = "subject", "person_id"
EXPORT_FORMATS = ("csv", "xlsx")


@dataclass(frozen=True)
class TraceRequest:
    """One checked trace request.

    Attributes:
        by: ``subject`` (as stored) or ``person_id`` (hashed with each venue's secret).
        case: the subject or the person id (never logged, never shown back).
        since_ms, until_ms: the window ``[since_ms, until_ms)``.
        rules: the dwell and overlap settings.
        venue_id: one venue to trace in, or "" for every venue the person may trace.
        reason: why (the case's file number...), for the audit; whitespace folded.
    """

    by: str
    case: str
    since_ms: int
    until_ms: int
    rules: TraceRules
    venue_id: str
    reason: str


def _number(form: Mapping[str, str], name: str, default: float, label: str, lowest: float, highest: float,
            zero_ok: bool, problems: list[str]) -> float:
    text = (form.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        problems.append(_("%(f)s: “%(v)s” không phải là một số") % {"f": label, "v": text[:20]})
        return default
    in_range = lowest <= value <= highest if zero_ok else lowest < value <= highest
    if not math.isfinite(value) or not in_range:
        template = (_("%(f)s phải từ %(lo)g đến %(hi)g") if zero_ok
                    else _("%(f)s phải lớn hơn %(lo)g và không quá %(hi)g"))
        problems.append(template % {"f": label, "lo": lowest, "hi": highest})
        return default
    return value


def _time(form: Mapping[str, str], name: str, label: str, now_ms: int, tz: tzinfo,
          problems: list[str]) -> int | None:
    text = (form.get(name) or "").strip()
    if not text:
        problems.append(_("Bạn vui lòng nhập thông tin %(f)s") % {"f": label})
        return None
    try:
        ms = parse_time(text, now_ms, tz)
        if name == "until" and len(text) == 10:  # a bare date includes that day
            ms = day_after(ms, tz)
        return ms
    except ConfigError:
        problems.append(_("%(f)s: “%(v)s” không phải là thời gian (ví dụ 2026-07-02 10:21)")
                        % {"f": label, "v": text[:40]})
        return None


def parse_trace_form(form: Mapping[str, str], now_ms: int, tz: tzinfo) -> TraceRequest:
    """Check the submitted form.

    Raises:
        ConfigError: every problem, one line each, in the active language.
    """
    problems: list[str] = []
    by = (form.get("by") or BY_PERSON_ID).strip()
    if by not in (BY_SUBJECT, BY_PERSON_ID):
        problems.append(_("Cách tìm người nhiễm không đúng"))
    case = (form.get("case") or "").strip()
    if not case:
        problems.append(_("Bạn vui lòng nhập thông tin Mã định danh của người nhiễm"))
    elif not _IDENT.fullmatch(case):
        problems.append(_("Mã định danh của người nhiễm chỉ gồm chữ, số và các dấu : / # . _ + - "
                          "(tối đa 128 ký tự)"))
    since_ms = _time(form, "since", _("Thời điểm: từ"), now_ms, tz, problems)
    until_ms = _time(form, "until", _("đến"), now_ms, tz, problems)
    if since_ms is not None and until_ms is not None:
        if until_ms <= since_ms:
            problems.append(_("Thời điểm kết thúc phải sau thời điểm bắt đầu"))
        elif until_ms - since_ms > MAX_WINDOW_DAYS * 86_400_000:
            problems.append(_("Khoảng thời gian truy vết dài quá %(n)d ngày; bạn vui lòng chọn khoảng ngắn hơn")
                            % {"n": MAX_WINDOW_DAYS})
    overlap = _number(form, "min_overlap_min", DEFAULT_MIN_OVERLAP_MIN, _("Thời gian tiếp xúc tối thiểu (phút)"),
                      0, MAX_SETTING_MIN, True, problems)
    dwell = _number(form, "default_dwell_min", DEFAULT_DWELL_MIN, _("Thời gian ở lại mặc định (phút)"),
                    0, MAX_SETTING_MIN, False, problems)
    max_dwell = _number(form, "max_dwell_h", DEFAULT_MAX_DWELL_H, _("Thời gian ở lại tối đa (giờ)"),
                        0, MAX_SETTING_MIN / 60, False, problems)
    raw_reason = form.get("reason") or ""
    reason = " ".join(raw_reason.split())
    if any(ord(ch) < 32 and ch not in "\t\r\n" or ord(ch) == 127 for ch in raw_reason):
        problems.append(_("Lý do truy vết chứa ký tự điều khiển"))
    elif len(reason) < MIN_REASON_CHARS:
        problems.append(_("Bạn vui lòng nhập thông tin Lý do truy vết (ví dụ số hồ sơ ca bệnh)"))
    elif len(reason) > MAX_REASON_CHARS:
        problems.append(_("Lý do truy vết dài quá %(n)d ký tự") % {"n": MAX_REASON_CHARS})
    venue_id = (form.get("venue") or "").strip()
    if venue_id and not re.fullmatch(r"[0-9A-Za-z_-]{1,40}", venue_id):
        problems.append(_("Địa điểm không đúng"))
    rules = None
    try:
        rules = TraceRules(default_dwell_ms=int(dwell * MINUTE_MS), max_dwell_ms=int(max_dwell * HOUR_MS),
                           min_overlap_ms=int(overlap * MINUTE_MS))
    except ValueError:  # a setting that rounds to 0 ms
        problems.append(_("Thời gian ở lại phải dài ít nhất 1 giây"))
    if problems or rules is None or since_ms is None or until_ms is None:
        raise ConfigError(problems)
    return TraceRequest(by, case, since_ms, until_ms, rules, venue_id, reason)


# --------------------------------------------------------------------------- the health office's actions

MIN_QUARANTINE_DAYS, DEFAULT_QUARANTINE_DAYS = 1, 14
MAX_ACTION_REASON_CHARS = 200  # as backoffice.gates.quarantine keeps it


def trace_fields(asked: TraceRequest, shown: Mapping[str, object]) -> dict[str, object]:
    """A checked trace as JSON values, for a sealed trace token (``case_token.seal_trace``).

    Args:
        shown: what the page showed of it (``display``, ``people``, ``visits``...), carried along.
    """
    return {"by": asked.by, "case": asked.case, "since_ms": asked.since_ms, "until_ms": asked.until_ms,
            "default_dwell_ms": asked.rules.default_dwell_ms, "max_dwell_ms": asked.rules.max_dwell_ms,
            "min_overlap_ms": asked.rules.min_overlap_ms, "venue": asked.venue_id, "reason": asked.reason,
            "shown": dict(shown)}


def request_of(fields: Mapping[str, object]) -> TraceRequest:
    """The trace a sealed token holds (the inverse of ``trace_fields``).

    Raises:
        ValueError: a field is missing or of the wrong kind (a token of another version).
    """
    def whole(name: str) -> int:
        value = fields.get(name)
        if type(value) is not int:
            raise ValueError(name)
        return value

    def text(name: str) -> str:
        value = fields.get(name)
        if not isinstance(value, str):
            raise ValueError(name)
        return value

    by = text("by")
    if by not in (BY_SUBJECT, BY_PERSON_ID) or not _IDENT.fullmatch(text("case")):
        raise ValueError("by/case")
    rules = TraceRules(default_dwell_ms=whole("default_dwell_ms"), max_dwell_ms=whole("max_dwell_ms"),
                       min_overlap_ms=whole("min_overlap_ms"))
    if whole("until_ms") <= whole("since_ms"):
        raise ValueError("window")
    return TraceRequest(by, text("case"), whole("since_ms"), whole("until_ms"), rules, text("venue"), text("reason"))


def parse_reason(raw: str | None, max_chars: int = MAX_ACTION_REASON_CHARS) -> tuple[str, str | None]:
    """The reason of a reveal or a quarantine, whitespace folded, and the problem with it (or None)."""
    raw = raw or ""
    reason = " ".join(raw.split())
    if any(ord(ch) < 32 and ch not in "\t\r\n" or ord(ch) == 127 for ch in raw):
        return reason, _("Lý do chứa ký tự điều khiển")
    if len(reason) < MIN_REASON_CHARS:
        return reason, _("Bạn vui lòng nhập thông tin Lý do (ví dụ số hồ sơ ca bệnh)")
    if len(reason) > max_chars:
        return reason, _("Lý do dài quá %(n)d ký tự") % {"n": max_chars}
    return reason, None


def parse_days(raw: str | None, highest: int) -> tuple[int, str | None]:
    """The quarantine's length in whole days (``MIN_QUARANTINE_DAYS`` to highest) and the problem (or None)."""
    text = (raw or "").strip()
    if not text:
        return DEFAULT_QUARANTINE_DAYS, None
    if not re.fullmatch(r"[0-9]{1,3}", text) or not MIN_QUARANTINE_DAYS <= int(text) <= highest:
        return DEFAULT_QUARANTINE_DAYS, (_("Số ngày cách ly phải là một số nguyên từ %(lo)d đến %(hi)d")
                                         % {"lo": MIN_QUARANTINE_DAYS, "hi": highest})
    return int(text), None
