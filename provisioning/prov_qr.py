"""Making provisioning codes (``QGP1:``) for headless gates, and their PNG/SVG images.

The technician prints or shows the code to the gate's camera; the gate applies it
(``firmware.features.provisioning``). The code format is in ``firmware.core.prov_code``.
Images are full QR codes (``segno.make_qr``, never Micro QR), error level M, border 4.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.core import prov_code
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_VALID_MINUTES = 60
PNG_SCALE = 8
QR_BORDER = 4


@dataclass(frozen=True)
class MadeCode:
    """A provisioning code and what it says."""

    text: str
    claims: dict[str, Any]


def make_code(authority_key: Any, record: dict[str, Any], *, direction: str, broker: str, now_s: float,
              valid_minutes: float = DEFAULT_VALID_MINUTES, issuer_keys: list[Any] | None = None,
              device_id: str | None = None, nonce: bytes | None = None) -> MadeCode:
    """Sign a provisioning code for a venue record.

    Args:
        authority_key: the provisioning authority's private key.
        record: a venue record (``provisioning.venues.load_venue``).
        direction: ``in`` or ``out``.
        broker: ``host:port`` or empty.
        now_s: issue time (Unix seconds).
        valid_minutes: validity, 1 minute to 24 hours.
        issuer_keys: pass issuer public keys the gate should trust.
        device_id: restrict the code to one gate.
        nonce: 16 bytes (default: random).

    Raises:
        ConfigError: invalid input; every problem is listed.
    """
    if not 1 <= valid_minutes <= prov_code.MAX_VALIDITY_S / 60:
        raise ConfigError(f"--valid-minutes {valid_minutes:g} must be 1 to 1440 (at most 24 h)")
    iat = int(now_s)
    try:
        claims = prov_code.build_claims(
            venue_id=record["venue_id"], venue_name=record["name"], direction=direction, broker=broker,
            nonce=nonce if nonce is not None else os.urandom(prov_code.NONCE_BYTES), iat_s=iat,
            exp_s=iat + int(valid_minutes * 60), issuer_keys=issuer_keys, device_id=device_id)
    except prov_code.ProvisioningClaimsError as err:
        raise ConfigError(str(err).split("; ")) from err
    return MadeCode(prov_code.encode(claims, authority_key), claims)


def make_qr(text: str) -> Any:
    """The segno QR of a provisioning code: full QR, error level M."""
    import segno

    return segno.make_qr(text, error="m", boost_error=False)


def save_png(text: str, path: str | Path) -> None:
    """Write the code as a PNG (8 pixels per module, border 4)."""
    make_qr(text).save(str(path), kind="png", scale=PNG_SCALE, border=QR_BORDER)


def save_svg(text: str, path: str | Path) -> None:
    """Write the code as an SVG (border 4)."""
    make_qr(text).save(str(path), kind="svg", scale=4, border=QR_BORDER)
