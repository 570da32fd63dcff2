"""Masked names, phones and ID numbers."""

from __future__ import annotations

import unicodedata

import pytest

from firmware.core.masking import display, display_cccd, display_credential, mask_id, mask_name, mask_phone
from firmware.core.model import Credential, CredentialType


@pytest.mark.parametrize("name, masked", [
    ("NGUYỄN ĐÌNH HÙNG", "NGUYỄN ĐÌNH ***"),
    ("Trần Thị Mai", "Trần Thị ***"),
    ("Lê Văn", "Lê ***"),
    ("HÙNG", "H***"),
    ("Ánh", "Á***"),
    ("  NGUYỄN   ĐÌNH\tHÙNG  ", "NGUYỄN ĐÌNH ***"),
    (unicodedata.normalize("NFD", "NGUYỄN ĐÌNH HÙNG"), "NGUYỄN ĐÌNH ***"),
    (unicodedata.normalize("NFD", "Ánh"), "Á***"),
    ("", ""),
    ("   ", ""),
    (None, ""),
])
def test_mask_name(name, masked):
    assert mask_name(name) == masked
    assert unicodedata.is_normalized("NFC", mask_name(name))


@pytest.mark.parametrize("phone, masked", [
    ("0966323123", "0966 323 ***"),
    ("0966 323 123", "0966 323 ***"),
    ("0966.323.123", "0966 323 ***"),
    ("0966-323-123", "0966 323 ***"),
    ("+84966323123", "0966 323 ***"),
    ("+84 966 323 123", "0966 323 ***"),
    ("84966323123", "0966 323 ***"),
    ("0084966323123", "0966 323 ***"),
    ("02438123456", "0243 8123 ***"),
    ("０９６６３２３１２３", "0966 323 ***"),
    ("113", "***"),
    ("call me", "***"),
    ("", ""),
    (None, ""),
])
def test_mask_phone(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("id_number, masked", [
    ("001099012345", "***345"), ("123", "***"), ("", ""), (None, "")])
def test_mask_id(id_number, masked):
    assert mask_id(id_number) == masked


def test_display_joins_masked_name_and_phone():
    assert display("NGUYỄN ĐÌNH HÙNG", "0966323123") == "NGUYỄN ĐÌNH *** 0966 323 ***"
    assert display("NGUYỄN ĐÌNH HÙNG", None) == "NGUYỄN ĐÌNH ***"
    assert display(None, "0966323123") == "0966 323 ***"
    assert display(None, None) == ""


def test_display_of_credentials():
    card = Credential(type=CredentialType.CCCD, subject="001099012345", name="Nguyễn Văn An")
    assert display_credential(card) == display_cccd("Nguyễn Văn An", "001099012345") == "Nguyễn Văn *** ***"
    assert display_credential(card, 3) == display_cccd("Nguyễn Văn An", "001099012345", 3) == "Nguyễn Văn *** ***345"
    qg = Credential(type=CredentialType.QG1, subject="NV-1", name="NGUYỄN ĐÌNH HÙNG", phone="0966323123")
    assert display_credential(qg) == "NGUYỄN ĐÌNH *** 0966 323 ***"
    assert display_credential(Credential(type=CredentialType.QG1, subject="NV-0042")) == "***042"


def test_the_full_number_and_given_name_never_appear():
    shown = display("NGUYỄN ĐÌNH HÙNG", "+84 966 323 123")
    assert "HÙNG" not in shown and "123" not in shown.replace("323", "")


def test_issue10_a_cccd_display_shows_no_digit_of_the_id_unless_configured():
    card = Credential(type=CredentialType.CCCD, subject="001099012345", name="Nguyễn Văn An")
    assert not any(ch.isdigit() for ch in display_credential(card))
    assert display_credential(card, 2) == "Nguyễn Văn *** ***45"


@pytest.mark.parametrize("name", ["NGUYỄN \u202eNƯH\u202c ĐÌNH", "NGUYỄN\u200b ĐÌNH\u2066 HÙNG\u2069",
                                  "NGUYỄN \x01ĐÌNH HÙNG\u061c"])
def test_issue10_display_names_are_stripped_of_bidi_and_control_characters(name):
    shown = display(name, "0966323123")
    assert shown.isprintable() and not any(ch in shown for ch in "\u202e\u202c\u200b\u2066\u2069\x01\u061c")
    assert shown.startswith("NGUYỄN")
