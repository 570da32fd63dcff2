"""The CCCD chip ID card QR: valid cards, and rows that must be refused as malformed."""

from __future__ import annotations

import unicodedata

import pytest

from firmware.core.credentials import TrustStore, cccd, check_payload
from firmware.core.model import Credential, CredentialType, Reason, Rejection

VALID = "001099012345|123456789|Nguyễn Văn An|01011999|Nam|Số 1 Tràng Tiền, Hoàn Kiếm, Hà Nội|15082021"
TRUST = TrustStore()


def row(**changes: str) -> bytes:
    names = ["id", "old", "name", "birth", "gender", "address", "issued"]
    fields = dict(zip(names, VALID.split("|"), strict=True))
    fields.update(changes)
    return "|".join(fields[n] for n in names).encode("utf-8")


@pytest.mark.parametrize("payload, subject, name", [
    (VALID.encode(), "001099012345", "Nguyễn Văn An"),
    (row(old=""), "001099012345", "Nguyễn Văn An"),
    (row(id="079300012345", birth="29022000", gender="Nữ", name="Trần Thị Mai"), "079300012345", "Trần Thị Mai"),
    (row(id="096201000001", birth="31122001", issued="01012022"), "096201000001", "Nguyễn Văn An"),
    (row(name="H'Hen Niê", id="066199000001", gender="Nữ"), "066199000001", "H'Hen Niê"),
    (row(gender="NAM"), "001099012345", "Nguyễn Văn An"),
    (unicodedata.normalize("NFD", VALID).encode(), "001099012345", "Nguyễn Văn An"),
], ids=["full", "no-old-id", "female-2000s-leap-day", "2001", "ethnic-name", "upper-gender", "nfd"])
def test_valid_cards_give_an_unsigned_identity_credential(payload, subject, name):
    result = check_payload(payload, TRUST)
    assert result == Credential(type=CredentialType.CCCD, subject=subject, name=name, signed=False)


@pytest.mark.parametrize("payload, why", [
    (row(id="001099012345") + b"|extra", "8 fields"),
    (b"001099012345|123456789|Nguyen", "3 fields"),
    (row(id="00109901234X"), "id not digits (not detected as CCCD) handled below"),
    (row(old="12345678"), "old id 8 digits"),
    (row(old="1234567890"), "old id 10 digits"),
    (row(name=""), "empty name"),
    (row(name=" Nguyễn Văn An"), "leading space"),
    (row(name="Nguyễn  Văn An"), "double space"),
    (row(name="Nguyễn V4n An"), "digit in name"),
    (row(name="N" * 101), "name too long"),
    (row(birth="32011999"), "day 32"),
    (row(birth="29021999"), "not a leap year"),
    (row(birth="0101199"), "7-digit date"),
    (row(birth="01131999"), "month 13"),
    (row(gender="Male"), "gender word"),
    (row(gender=""), "no gender"),
    (row(address=""), "empty address"),
    (row(address="Hà Nội\nX"), "control character"),
    (row(issued="01012015"), "issued before 2016"),
    (row(issued="31121998", birth="01011999"), "issued before birth"),
    (row(id="003099012345"), "unknown province 003"),
    (row(id="001199012345"), "female digit with Nam"),
    (row(id="001098012345"), "birth year 98 vs 1999"),
    (row(id="001299012345"), "century 2000s vs 1999"),
    (b"001099012345|" + "Nguyễn".encode("utf-16"), "not UTF-8"),
    (b"001099012345|" + b"x" * 2000, "too long"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_rows_are_refused(payload, why):
    result = check_payload(payload, TRUST)
    assert isinstance(result, Rejection), why
    if cccd.detect(payload):
        assert (result.type, result.reason) == (CredentialType.CCCD, Reason.MALFORMED), why
        assert "Nguy" not in result.detail and "123456789" not in result.detail  # no personal data
    else:
        assert result.reason is Reason.UNKNOWN_FORMAT


@pytest.mark.parametrize("payload", [b"12345678901|x", b"0010990123456|x", b"001099012345", b"https://a|b"])
def test_non_cccd_texts_are_unknown_format(payload):
    assert check_payload(payload, TRUST).reason is Reason.UNKNOWN_FORMAT


def test_encode_parse_round_trip():
    card = cccd.parse(VALID.encode())
    assert cccd.encode(card) == VALID.encode()
    assert card.birth == (1999, 1, 1) and card.issued == (2021, 8, 15) and card.gender == "male"
