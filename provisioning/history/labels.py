"""Words a person reads for the codes in scan events: decisions, reasons, directions.

The history page and the back office show these; the exports keep the codes (and may add
the words beside them). A granted exit is "Cho ra", not "Cho vào". A code without a label
(a newer gate) is shown as it is, never hidden.
"""

from __future__ import annotations

REASONS: dict[str, dict[str, str]] = {
    "vi": {
        "ok": "Hợp lệ", "unknown_format": "Mã không nhận dạng được", "bad_signature": "Chữ ký không hợp lệ",
        "unknown_issuer": "Đơn vị cấp mã không được tin cậy", "expired": "Mã đã hết hạn",
        "not_yet_valid": "Mã chưa đến hạn dùng", "clock_unsynced": "Đồng hồ thiết bị chưa đồng bộ",
        "denied": "Có trong danh sách cấm", "not_allowed": "Không có trong danh sách được phép",
        "repeat": "Quét lặp lại", "passback": "Đã vào mà chưa ra (chống dùng lại)",
        "unsigned_not_allowed": "Không nhận thẻ không có chữ ký (CCCD)",
        "no_health_declaration": "Chưa khai báo y tế", "no_expiry": "Mã không có hạn dùng",
        "malformed": "Mã bị hỏng", "storage_full": "Bộ nhớ thiết bị đầy", "not_provisioned": "Thiết bị chưa cài đặt",
        "lockdown": "Đang khoá cổng", "free_passage": "Mở cổng tự do", "fail_closed": "Thiết bị lỗi, cổng đóng",
        "lists_stale": "Danh sách quá cũ", "lists_unavailable": "Không đọc được danh sách cấm", "remote_open": "Mở từ xa", "not_passed": "Không đi qua cổng",
        "replayed": "Mã cài đặt đã dùng", "wrong_device": "Mã cài đặt cho thiết bị khác",
        "already_provisioned": "Thiết bị đã được cài đặt",
        "dcc_key_usage": "Chứng nhận COVID: khoá không dùng cho loại này",
        "dcc_signer_not_valid": "Chứng nhận COVID: người ký hết hiệu lực",
        "dcc_trust_list_stale": "Chứng nhận COVID: danh sách tin cậy quá cũ",
        "dcc_kind_not_accepted": "Chứng nhận COVID: loại không được nhận",
        "dcc_not_vaccinated": "Chứng nhận COVID: chưa tiêm", "dcc_incomplete": "Chứng nhận COVID: chưa tiêm đủ",
        "dcc_too_recent": "Chứng nhận COVID: mũi tiêm quá gần",
        "dcc_vaccination_too_old": "Chứng nhận COVID: mũi tiêm quá lâu",
        "dcc_product_not_accepted": "Chứng nhận COVID: vắc-xin không được nhận",
        "dcc_test_too_old": "Chứng nhận COVID: xét nghiệm quá lâu",
        "dcc_test_type_not_accepted": "Chứng nhận COVID: loại xét nghiệm không được nhận",
        "dcc_test_positive": "Chứng nhận COVID: xét nghiệm dương tính",
        "dcc_recovery_expired": "Chứng nhận COVID: khỏi bệnh đã quá hạn",
        "dcc_identity_required": "Chứng nhận COVID: cần thêm giấy tờ tuỳ thân",
        "dcc_identity_mismatch": "Chứng nhận COVID: giấy tờ không cùng người",
    },
    "en": {
        "ok": "Valid", "unknown_format": "Unknown code", "bad_signature": "Bad signature",
        "unknown_issuer": "Issuer not trusted", "expired": "Expired", "not_yet_valid": "Not yet valid",
        "clock_unsynced": "Gate clock not synchronised", "denied": "On the deny list",
        "not_allowed": "Not on the allow list", "repeat": "Repeated scan", "passback": "Passback",
        "unsigned_not_allowed": "Unsigned card not accepted (CCCD)",
        "no_health_declaration": "No health declaration", "no_expiry": "Pass without expiry",
        "malformed": "Damaged code", "storage_full": "Gate storage full", "not_provisioned": "Gate not provisioned",
        "lockdown": "Lockdown", "free_passage": "Free passage", "fail_closed": "Gate fault, closed",
        "lists_stale": "Lists too old", "lists_unavailable": "Deny list unreadable", "remote_open": "Opened remotely", "not_passed": "Did not pass",
        "replayed": "Provisioning code already used", "wrong_device": "Provisioning code for another gate",
        "already_provisioned": "Gate already provisioned",
    },
}

# Decision words by direction: a granted exit lets the person out.
DECISIONS: dict[str, dict[tuple[str, str], str]] = {
    "vi": {("granted", "in"): "Cho vào", ("granted", "out"): "Cho ra", ("denied", "in"): "Từ chối vào",
           ("denied", "out"): "Từ chối ra", ("not_passed", "in"): "Không vào", ("not_passed", "out"): "Không ra",
           ("provisioned", ""): "Đã cài đặt thiết bị"},
    "en": {("granted", "in"): "Let in", ("granted", "out"): "Let out", ("denied", "in"): "Refused entry",
           ("denied", "out"): "Refused exit", ("not_passed", "in"): "Did not enter",
           ("not_passed", "out"): "Did not leave", ("provisioned", ""): "Gate provisioned"},
}


def reason_label(reason: str, lang: str) -> str:
    """The words for a reason code (the code itself when it has none)."""
    words = REASONS.get(lang, REASONS["en"]).get(reason) or REASONS["en"].get(reason)
    if words is None and reason.startswith("dcc_") and lang == "en":
        words = "COVID certificate: " + reason[4:].replace("_", " ")
    return words or reason


def decision_label(decision: str, direction: str, lang: str) -> str:
    """The words for a decision at a gate of this direction ("Cho ra" for a granted exit)."""
    table = DECISIONS.get(lang, DECISIONS["en"])
    return table.get((decision, direction)) or table.get((decision, "")) or decision
