"""Masked names, phone numbers and ID numbers: what may be shown, logged and published. Pure.

``display("NGUYỄN ĐÌNH HÙNG", "0966323123") == "NGUYỄN ĐÌNH *** 0966 323 ***"``.
Text is NFC-normalised so Vietnamese written with combining marks (as some
keyboards and phones produce) masks and compares the same as precomposed text, and
stripped of control, zero-width and bidi characters (``firmware.core.text``), which could
make a guard's screen show a name in another order than it was written. A CCCD display
shows no digit of the id unless ``privacy.cccd_id_digits`` asks for some.
"""

from __future__ import annotations

import unicodedata

from firmware.core.model import Credential, CredentialType
from firmware.core.text import strip_invisible

MASK = "***"


def _words(text: str | None) -> list[str]:
    if not text:
        return []
    words = (strip_invisible(w) for w in unicodedata.normalize("NFC", text).split())  # tabs still split
    return [w for w in words if w]


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


def mask_id(id_number: str | None, shown: int = 3) -> str:
    """Show only the last ``shown`` characters of an ID number (at most 3):
    ``"001099012345" -> "***345"``; with ``shown=0`` just ``"***"``."""
    if not id_number:
        return ""
    text = strip_invisible(unicodedata.normalize("NFC", id_number)).strip()
    shown = max(0, min(3, shown))
    return MASK + text[-shown:] if shown and len(text) > shown else MASK


def display(name: str | None, phone: str | None) -> str:
    """Masked name and phone joined by a space: ``"NGUYỄN ĐÌNH *** 0966 323 ***"``."""
    return " ".join(part for part in (mask_name(name), mask_phone(phone)) if part)


def display_cccd(name: str | None, id_number: str | None, id_digits: int = 0) -> str:
    """Masked name and ID card number: ``"NGUYỄN VĂN *** ***"``; with ``id_digits=3``
    ``"NGUYỄN VĂN *** ***345"`` (the tail of a 12-digit citizen id narrows it a lot)."""
    return " ".join(part for part in (mask_name(name), mask_id(id_number, id_digits)) if part)


def display_dcc(name: str | None, birth_year: str | None) -> str:
    """Masked name and birth year of a COVID certificate's holder: ``"Nguyễn Văn *** 1990"``."""
    return " ".join(part for part in (mask_name(name), birth_year or "") if part)


def display_credential(credential: Credential, cccd_id_digits: int = 0) -> str:
    """The masked display for any credential (CCCD: the name, and the id's last
    ``cccd_id_digits`` digits only if configured; a pass the phone; a COVID certificate the
    birth year, never its identifier)."""
    if credential.type is CredentialType.CCCD:
        return display_cccd(credential.name, credential.subject, cccd_id_digits)
    if credential.type is CredentialType.DCC:
        return display_dcc(credential.name, credential.dcc.birth_year if credential.dcc else None)
    shown = display(credential.name, credential.phone)
    return shown or mask_id(credential.subject)
