"""Issue qrgate passes (``QG1:``) and render them as QR images.

The pass format is defined in ``firmware.core.credentials.qg1``; this module adds the
issuer's side: times from the caller's clock, a random token id, and QR images
made with segno (always a full QR, error level M, border 4).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.core.credentials import qg1
from firmware.core.errors import QrGateError

log = logging.getLogger(__name__)

DAY_S = 86400
QR_ERROR = "m"
QR_BORDER = 4
PNG_SCALE = 10
SVG_SCALE = 4
CTI_BYTES = 16


class PassError(QrGateError, ValueError):
    """The pass cannot be issued as asked (bad time, empty field, window upside down)."""


@dataclass(frozen=True)
class Validity:
    """A pass's validity window, Unix seconds."""

    not_before_s: int
    expires_s: int


def parse_time(text: str, what: str) -> int:
    """Parse a time given on the command line into Unix seconds.

    Accepts Unix seconds (``1767225600``), a date (``2026-12-31``, midnight UTC) or an
    ISO 8601 date-time (``2026-12-31T18:00:00+07:00``; without an offset it is UTC).

    Raises:
        PassError: the text is none of these; the message names the option.
    """
    text = text.strip()
    if re.fullmatch(r"[0-9]{1,12}", text):
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise PassError(f"{what} {text!r} is not a time; use Unix seconds, 2026-12-31 or "
                        "2026-12-31T18:00:00+07:00") from err
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp())


def validity(now_s: float, *, valid_days: float | None = None, not_before: str | None = None,
             expires: str | None = None) -> Validity:
    """Work out the window: ``valid_days`` from now, or explicit ``not_before``/``expires``.

    Raises:
        PassError: both ways given, a bad time, or expiry not after the start.
    """
    if valid_days is not None and (not_before or expires):
        raise PassError("give either --valid-days or --not-before/--expires, not both")
    start = parse_time(not_before, "--not-before") if not_before else int(now_s)
    if expires:
        end = parse_time(expires, "--expires")
    else:
        days = 365.0 if valid_days is None else valid_days
        if days <= 0:
            raise PassError(f"--valid-days {days} must be more than 0")
        end = start + int(days * DAY_S)
    if end <= start:
        raise PassError("--expires must be after --not-before (or now)")
    return Validity(start, end)


def issue(private_key: Any, *, sub: str, name: str, phone: str, now_s: float, window: Validity,
          iss: str | None = None, health_declared_s: int | None = None, cti: bytes | None = None,
          compress: bool | str = "auto") -> str:
    """Sign a pass and return its text ``QG1:...``.

    Args:
        private_key: the issuer's Ed25519 or P-256 private key.
        sub, name, phone: the person id and the holder's name and phone.
        now_s: issue time (``iat``), Unix seconds.
        window: ``nbf`` and ``exp``.
        iss: issuer name, optional.
        health_declared_s: time of the latest health declaration (``hd``), optional.
        cti: token id; default 16 random bytes.
        compress: True to zlib the message, False not to, ``"auto"`` when that makes it shorter.

    Raises:
        PassError: an empty sub or name.
    """
    for option, value in (("--sub", sub), ("--name", name)):
        if not value or not value.strip():
            raise PassError(f"{option} must not be empty")
    claims = qg1.build_claims(sub=sub.strip(), name=name.strip(), phone=phone.strip() or None,
                              iss=iss, iat_s=int(now_s), nbf_s=window.not_before_s,
                              exp_s=window.expires_s, cti=cti if cti is not None else os.urandom(CTI_BYTES),
                              hd_s=health_declared_s)
    return qg1.encode(claims, private_key, compress=compress)


def make_qr(text: str) -> Any:
    """Return the segno QR for a pass text: always a full QR (never Micro QR), error level M."""
    import segno

    return segno.make_qr(text, error=QR_ERROR, boost_error=False)


def save_png(text: str, path: str | Path) -> None:
    """Write the pass as a PNG for print (scale 10, border 4)."""
    make_qr(text).save(str(path), kind="png", scale=PNG_SCALE, border=QR_BORDER)


def save_svg(text: str, path: str | Path) -> None:
    """Write the pass as an SVG for print shops (border 4)."""
    make_qr(text).save(str(path), kind="svg", scale=SVG_SCALE, border=QR_BORDER)
