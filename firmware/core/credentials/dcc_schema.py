"""A compact check of the DCC payload (claim -260/1) against the DCC JSON schema 1.3.x. Pure.

Written for qrgate from the published constraints, for the fields the gate reads
and those the schema requires; it is not the EU's schema file. What it enforces:

- top level: ``ver`` (``N.N.N``, major version 1), ``nam``, ``dob``, and exactly one
  of ``v``, ``t``, ``r``, an array holding exactly one entry (the specification
  allows one entry per certificate; the schema alone would allow more);
- ``nam``: ``fnt`` required, ``fnt``/``gnt`` match ``^[A-Z<]*$``, every name at
  most 80 characters;
- ``dob``: ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` (years 1900-2099) or empty, a real date;
- vaccination: ``tg vp mp ma dn sd dt co is ci`` required, ``dn`` and ``sd``
  integers 1-9, ``dt`` a date;
- test: ``tg tt sc tr co is ci`` required, ``nm ma tc`` optional, ``sc`` an RFC 3339
  date-time (kept as Unix seconds);
- recovery: ``tg fr co is df du ci`` required, ``fr df du`` dates;
- every text field a string; ``is``, ``ci``, ``tc``, names at most 80 characters,
  value-set codes (``tg vp mp ma tt tr co nm``) at most 80; unknown keys are ignored
  (a participant may extend the object), as the schema allows.

Failures raise ``SchemaError`` with the path of the first broken field, never its value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from firmware.core.dcc_status import KINDS

MAX_TEXT_CHARS = 80
_VERSION = re.compile(r"^1\.[0-9]+\.[0-9]+$")
_STD_NAME = re.compile(r"^[A-Z<]*$")
_DOB = re.compile(r"^(?:((?:19|20)[0-9]{2})(?:-([0-9]{2})(?:-([0-9]{2}))?)?)?$")
_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_DATE_TIME = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
                        r"([Zz]|[+-][0-9]{2}:?[0-9]{2})$")

REQUIRED = {
    "v": ("tg", "vp", "mp", "ma", "dn", "sd", "dt", "co", "is", "ci"),
    "t": ("tg", "tt", "sc", "tr", "co", "is", "ci"),
    "r": ("tg", "fr", "co", "is", "df", "du", "ci"),
}
OPTIONAL = {"v": (), "t": ("nm", "ma", "tc", "dr"), "r": ()}
DATE_FIELDS = {"dt", "fr", "df", "du"}
DATE_TIME_FIELDS = {"sc", "dr"}
DOSE_FIELDS = {"dn", "sd"}


class SchemaError(ValueError):
    """The DCC payload breaks the schema. The message names the field, never its value."""


def _text(value: Any, path: str, limit: int = MAX_TEXT_CHARS, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"{path} must be a string")
    if len(value) > limit:
        raise SchemaError(f"{path} is longer than {limit} characters")
    if pattern is not None and not pattern.match(value):
        raise SchemaError(f"{path} does not match the schema's pattern")
    return value


def check_date(value: Any, path: str) -> dt.date:
    """Return the date of a ``YYYY-MM-DD`` string.

    Raises:
        SchemaError: not a string of that form, or not a real date.
    """
    match = _DATE.match(_text(value, path))
    if not match:
        raise SchemaError(f"{path} must be a date YYYY-MM-DD")
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError as err:
        raise SchemaError(f"{path} is not a real date") from err


def check_date_time(value: Any, path: str) -> float:
    """Return the Unix seconds of an RFC 3339 date-time string.

    Raises:
        SchemaError: not a string of that form, or not a real time.
    """
    match = _DATE_TIME.match(_text(value, path))
    if not match:
        raise SchemaError(f"{path} must be an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    zone = match.group(8)
    try:
        offset = dt.timedelta(0)
        if zone not in ("Z", "z"):
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            if zone[0] == "-":
                offset = -offset
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone(offset))
    except ValueError as err:
        raise SchemaError(f"{path} is not a real time") from err
    return moment.timestamp() + (float(fraction) if fraction else 0.0)


def _dob(value: Any) -> str:
    text = _text(value, "dob", 10)
    match = _DOB.match(text)
    if not match:
        raise SchemaError("dob must be YYYY, YYYY-MM or YYYY-MM-DD (1900-2099) or empty")
    year, month, day = match.groups()
    if month is not None:
        try:
            dt.date(int(year), int(month), int(day) if day else 1)
        except ValueError as err:
            raise SchemaError("dob is not a real date") from err
    return text


def _names(nam: Any) -> None:
    if not isinstance(nam, Mapping):
        raise SchemaError("nam must be an object")
    if "fnt" not in nam:
        raise SchemaError("nam.fnt is required")
    for key in ("fn", "gn"):
        if key in nam:
            _text(nam[key], f"nam.{key}")
    for key in ("fnt", "gnt"):
        if key in nam:
            _text(nam[key], f"nam.{key}", pattern=_STD_NAME)


def _entry(kind: str, entry: Any) -> None:
    path = f"{kind}[0]"
    if not isinstance(entry, Mapping):
        raise SchemaError(f"{path} must be an object")
    for key in REQUIRED[kind]:
        if key not in entry:
            raise SchemaError(f"{path}.{key} is required")
    for key in REQUIRED[kind] + OPTIONAL[kind]:
        if key not in entry:
            continue
        value = entry[key]
        where = f"{path}.{key}"
        if key in DOSE_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 9:
                raise SchemaError(f"{where} must be an integer from 1 to 9")
        elif key in DATE_FIELDS:
            check_date(value, where)
        elif key in DATE_TIME_FIELDS:
            check_date_time(value, where)
        else:
            _text(value, where)


def validate(hcert: Any) -> str:
    """Check a decoded DCC payload against the schema and return its kind (``v``, ``t`` or ``r``).

    Raises:
        SchemaError: the first problem found.
    """
    if not isinstance(hcert, Mapping):
        raise SchemaError("the certificate must be an object")
    if any(not isinstance(key, str) for key in hcert):
        raise SchemaError("the certificate's keys must be strings")
    for key in ("ver", "nam", "dob"):
        if key not in hcert:
            raise SchemaError(f"{key} is required")
    _text(hcert["ver"], "ver", 16, _VERSION)
    _names(hcert["nam"])
    _dob(hcert["dob"])
    present = [kind for kind in KINDS if kind in hcert]
    if len(present) != 1:
        raise SchemaError(f"exactly one of v, t, r is required ({len(present)} present)")
    kind = present[0]
    entries = hcert[kind]
    if not isinstance(entries, (list, tuple)) or len(entries) != 1:
        raise SchemaError(f"{kind} must be an array with exactly one entry")
    _entry(kind, entries[0])
    return kind
