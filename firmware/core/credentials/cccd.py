"""The QR on Vietnam's chip citizen ID card (CCCD): unsigned, identity only.

Pure. Layout (7 fields, UTF-8, pipe-separated)::

    12-digit id|old 9-digit id or empty|full name|ddmmyyyy birth|gender|address|ddmmyyyy issued

Anything that starts with 12 digits and a pipe is taken as a CCCD attempt and then
validated strictly; a failure is ``malformed``. The 12-digit number is checked
against the rules of the numbering (Circular 07/2016/TT-BCA, kept by 59/2021): a
known province code, then a gender-and-century digit and the last two digits of the
birth year, which must agree with the birth date and gender fields. The card
carries no signature, so it proves identity at most, never a right to enter.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from firmware.core.model import Credential, CredentialType, Reason, Rejection

MAX_PAYLOAD_BYTES = 1024
MAX_NAME_CHARS = 100
MAX_ADDRESS_CHARS = 300
FIRST_ISSUE_YEAR = 2016  # CCCD cards exist since 2016

_DETECT = re.compile(rb"^[0-9]{12}\|")
_ID = re.compile(r"^[0-9]{12}$")
_OLD_ID = re.compile(r"^(?:[0-9]{9})?$")
_DATE = re.compile(r"^([0-9]{2})([0-9]{2})([0-9]{4})$")

# Province codes of the 63 provinces at the time numbers were allocated; merged provinces keep theirs.
PROVINCE_CODES = frozenset({
    "001", "002", "004", "006", "008", "010", "011", "012", "014", "015", "017", "019", "020",
    "022", "024", "025", "026", "027", "030", "031", "033", "034", "035", "036", "037", "038",
    "040", "042", "044", "045", "046", "048", "049", "051", "052", "054", "056", "058", "060",
    "062", "064", "066", "067", "068", "070", "072", "074", "075", "077", "079", "080", "082",
    "083", "084", "086", "087", "089", "091", "092", "093", "094", "095", "096",
})
GENDERS = {"nam": "male", "nữ": "female"}
# Gender-and-century digit: even male, odd female; pairs map to centuries from 1900.
CENTURY_START = {0: 1900, 1: 1900, 2: 2000, 3: 2000, 4: 2100, 5: 2100, 6: 2200, 7: 2200, 8: 2300, 9: 2300}


@dataclass(frozen=True)
class CccdCard:
    """The fields of a valid CCCD QR.

    Attributes:
        id_number: the 12-digit personal identification number.
        old_id: the old 9-digit CMND number, or "".
        name: full name, NFC.
        birth: (year, month, day).
        gender: ``"male"`` or ``"female"``.
        address: place of residence, NFC.
        issued: (year, month, day).
    """

    id_number: str
    old_id: str
    name: str
    birth: tuple[int, int, int]
    gender: str
    address: str
    issued: tuple[int, int, int]


class CccdError(ValueError):
    """A CCCD-looking payload failed validation. The message names the field, never its value."""


def detect(payload: bytes) -> bool:
    """True if the payload looks like a CCCD QR (12 digits, then a pipe)."""
    return bool(_DETECT.match(payload))


def _date(text: str, field: str) -> tuple[int, int, int]:
    match = _DATE.match(text)
    if not match:
        raise CccdError(f"{field} must be ddmmyyyy")
    day, month, year = (int(g) for g in match.groups())
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month) or year < 1900:
        raise CccdError(f"{field} is not a real date")
    return year, month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _plain_text(value: str, field: str, limit: int) -> str:
    if not value or value != value.strip() or "  " in value:
        raise CccdError(f"{field} is empty or has stray spaces")
    if len(value) > limit:
        raise CccdError(f"{field} is longer than {limit} characters")
    if any(unicodedata.category(ch)[0] == "C" for ch in value):
        raise CccdError(f"{field} contains control characters")
    return value


def parse(payload: bytes) -> CccdCard:
    """Parse and strictly validate a CCCD QR.

    Raises:
        CccdError: the payload is not a valid CCCD QR (the message names the field).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CccdError(f"longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CccdError("not valid UTF-8") from err
    text = unicodedata.normalize("NFC", text)
    fields = text.split("|")
    if len(fields) != 7:
        raise CccdError(f"{len(fields)} fields, 7 expected")
    id_number, old_id, name, birth_text, gender_text, address, issued_text = fields
    if not _ID.match(id_number):
        raise CccdError("id must be 12 digits")
    if id_number[:3] not in PROVINCE_CODES:
        raise CccdError("id does not start with a province code")
    if not _OLD_ID.match(old_id):
        raise CccdError("old id must be 9 digits or empty")
    name = _plain_text(name, "name", MAX_NAME_CHARS)
    if not all(unicodedata.category(ch)[0] in "LM" or ch in " '-." for ch in name) \
            or not any(ch.isalpha() for ch in name):
        raise CccdError("name must be letters and spaces")
    birth = _date(birth_text, "birth date")
    issued = _date(issued_text, "issue date")
    gender = GENDERS.get(gender_text.casefold())
    if gender is None:
        raise CccdError("gender must be Nam or Nữ")
    address = _plain_text(address, "address", MAX_ADDRESS_CHARS)
    code = int(id_number[3])
    if CENTURY_START[code] + int(id_number[4:6]) != birth[0]:
        raise CccdError("id does not match the birth year")
    if (code % 2 == 0) != (gender == "male"):
        raise CccdError("id does not match the gender")
    if issued < birth or issued[0] < FIRST_ISSUE_YEAR:
        raise CccdError("issue date is before the birth date or before 2016")
    return CccdCard(id_number, old_id, name, birth, gender, address, issued)


def check(payload: bytes) -> Credential | Rejection:
    """Return an unsigned identity Credential for a valid CCCD QR, else a Rejection. Never raises."""
    if not detect(payload):
        return Rejection(CredentialType.UNKNOWN, Reason.UNKNOWN_FORMAT, "not a CCCD QR")
    try:
        card = parse(payload)
    except CccdError as err:
        return Rejection(CredentialType.CCCD, Reason.MALFORMED, f"CCCD: {err}")
    return Credential(type=CredentialType.CCCD, subject=card.id_number, name=card.name, signed=False)


def encode(card: CccdCard) -> bytes:
    """Return the QR payload for a card (the inverse of ``parse``; tests and the demo use it)."""
    def date(ymd: tuple[int, int, int]) -> str:
        return f"{ymd[2]:02d}{ymd[1]:02d}{ymd[0]:04d}"

    gender = "Nam" if card.gender == "male" else "Nữ"
    fields = [card.id_number, card.old_id, card.name, date(card.birth), gender, card.address, date(card.issued)]
    return unicodedata.normalize("NFC", "|".join(fields)).encode("utf-8")
