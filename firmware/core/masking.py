"""Masked names, phone numbers and ID numbers: what may be shown, logged and published. Pure.

``display("NGUYỄN ĐÌNH HÙNG", "0966323123") == "NGUYỄN ĐÌNH *** 0966 323 ***"``.
Text is NFC-normalised so Vietnamese written with combining marks (as some
keyboards and phones produce) masks and compares the same as precomposed text.
"""

from __future__ import annotations

import unicodedata

from firmware.core.model import Credential, CredentialType

MASK = "***"


def _words(text: str | None) -> list[str]:
    if not text:
        return []
    text = unicodedata.normalize("NFC", text)
    return [w for w in text.split() if w]


def mask_name(name: str | None) -> str:
    """Hide the last word of a name (the given name in Vietnamese order).

    ``"NGUYỄN ĐÌNH HÙNG" -> "NGUYỄN ĐÌNH ***"``; one word keeps its first letter:
    ``"HÙNG" -> "H***"``; empty or None gives ``""``.
    """
    words = _words(name)
    if not words:
        return ""
    if len(words) == 1:
        return words[0][0] + MASK
    return " ".join(words[:-1] + [MASK])


def _national_digits(phone: str) -> str:
    """Digits of a Vietnamese number in national form (+84 / 84 / 0084 become a leading 0)."""
    text = unicodedata.normalize("NFKC", phone).strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if text.startswith("+84"):
        return "0" + digits[2:]
    if text.startswith("0084"):
        return "0" + digits[4:]
    if digits.startswith("84") and len(digits) == 11:
        return "0" + digits[2:]
    return digits


def mask_phone(phone: str | None) -> str:
    """Hide the last three digits of a phone number, grouped for reading.

    ``"0966323123" -> "0966 323 ***"``; ``"+84 966 323 123" -> "0966 323 ***"``.
    Numbers with fewer than 7 digits, or with no digits, give ``"***"``; empty gives ``""``.
    """
    if not phone or not phone.strip():
        return ""
    digits = _national_digits(phone)
    if len(digits) < 7:
        return MASK
    head = digits[:-3]
    return f"{head[:4]} {head[4:]} {MASK}"


def mask_id(id_number: str | None) -> str:
    """Show only the last three characters of an ID number: ``"001099012345" -> "***345"``."""
    if not id_number:
        return ""
    text = unicodedata.normalize("NFC", id_number).strip()
    return MASK + text[-3:] if len(text) > 3 else MASK


def display(name: str | None, phone: str | None) -> str:
    """Masked name and phone joined by a space: ``"NGUYỄN ĐÌNH *** 0966 323 ***"``."""
    return " ".join(part for part in (mask_name(name), mask_phone(phone)) if part)


def display_cccd(name: str | None, id_number: str | None) -> str:
    """Masked name and ID card number: ``"NGUYỄN VĂN *** ***345"``."""
    return " ".join(part for part in (mask_name(name), mask_id(id_number)) if part)


def display_dcc(name: str | None, birth_year: str | None) -> str:
    """Masked name and birth year of a COVID certificate's holder: ``"Nguyễn Văn *** 1990"``."""
    return " ".join(part for part in (mask_name(name), birth_year or "") if part)


def display_credential(credential: Credential) -> str:
    """The masked display for any credential (CCCD shows the id's tail; a pass the phone;
    a COVID certificate the birth year, never its identifier)."""
    if credential.type is CredentialType.CCCD:
        return display_cccd(credential.name, credential.subject)
    if credential.type is CredentialType.DCC:
        return display_dcc(credential.name, credential.dcc.birth_year if credential.dcc else None)
    shown = display(credential.name, credential.phone)
    return shown or mask_id(credential.subject)
