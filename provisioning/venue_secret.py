"""The venue's HMAC secret on the technician's side: made once per venue, installed on each gate.

Gates with ``privacy.subject = "hmac"`` hash person ids with a secret. It must be the
venue's, not the gate's: every gate of a venue then gives one person one ``subject``, so
``qrgate history query --person-id`` finds the person's scans at every gate, and an entry
can be paired with its exit. ``qrgate provision venue`` writes ``<venue_id>.secret`` (0600,
64 hex digits) beside the venue record, once; ``qrgate provision device`` copies it to the
gate's ``privacy.hmac_secret_file`` (default ``<state_dir>/venue-secret``), 0600. A
provisioning QR never carries it: a photo of the code would give the secret away.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from firmware.adapters.atomic_files import write_atomic
from firmware.core.errors import ConfigError

SECRET_BYTES = 32


def secret_path(venue_id: str, out_dir: str | Path) -> Path:
    """Where ``provision venue`` keeps a venue's secret."""
    return Path(out_dir) / f"{venue_id}.secret"


def read_secret(path: str | Path) -> bytes:
    """Read a secret file (hex).

    Raises:
        ConfigError: missing, unreadable, or not 32 bytes of hex.
    """
    try:
        secret = bytes.fromhex(Path(path).read_text(encoding="utf-8").strip())
    except (OSError, ValueError) as err:
        raise ConfigError(f"venue secret {path} cannot be read as hex ({err}); use the VENUE_ID.secret file "
                          "`qrgate provision venue` wrote") from err
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"venue secret {path} holds {len(secret)} bytes, not {SECRET_BYTES}")
    return secret


def write_venue_secret(venue_id: str, out_dir: str | Path) -> Path:
    """Make the venue's secret beside its record unless it exists (it never changes). Returns its path."""
    path = secret_path(venue_id, out_dir)
    if path.exists():
        read_secret(path)  # a damaged secret is reported, never silently replaced
        return path
    write_atomic(path, secrets.token_bytes(SECRET_BYTES).hex().encode("ascii") + b"\n", mode=0o600)
    return path


def install_secret(source: str | Path, dest: Path) -> bool:
    """Copy a venue secret to a gate's secret file (0600). Returns True if the file changed.

    Raises:
        ConfigError: the source is not a venue secret.
    """
    secret = read_secret(source)
    try:
        if bytes.fromhex(dest.read_text(encoding="utf-8").strip()) == secret:
            return False
    except (OSError, ValueError):
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, secret.hex().encode("ascii") + b"\n", mode=0o600)
    return True
