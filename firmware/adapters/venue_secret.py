"""The per-venue HMAC secret that keys the hashed person ids in events (privacy.subject = hmac)."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from firmware.adapters.atomic_files import write_atomic
from firmware.core.errors import StoreError

log = logging.getLogger(__name__)

SECRET_BYTES = 32


def load_or_create_secret(path: Path, on_damaged: Callable[[str], None] | None = None) -> bytes:
    """Read the per-venue HMAC secret, creating a random one (mode 0600) if missing.

    The file is written atomically, so a crash never leaves half a secret. A damaged file
    (not 32 bytes of hex) is moved aside as ``<name>.corrupt-<unix time>`` and replaced by a
    new secret, so the gate keeps working; hashed subjects then differ from the old ones,
    which ``on_damaged`` (an alarm) reports.

    Raises:
        StoreError: the file cannot be read, moved aside or created.
    """
    try:
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) == SECRET_BYTES:
            return secret
        problem = f"holds {len(secret)} bytes instead of {SECRET_BYTES}"
    except FileNotFoundError:
        problem = ""
    except ValueError as err:
        problem = f"is not hex ({err})"
    except OSError as err:
        raise StoreError(f"venue secret {path} cannot be read ({err.strerror}); check its owner and "
                         "permissions") from err
    try:
        if problem:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            message = (f"venue secret {path} {problem}; moved to {aside} and a new secret started: "
                       "hashed subjects from now on differ from earlier ones")
            log.error("%s", message)
            if on_damaged is not None:
                on_damaged(message)
        secret = secrets.token_bytes(SECRET_BYTES)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, secret.hex().encode() + b"\n", mode=0o600)
    except OSError as err:
        raise StoreError(f"cannot create venue secret {path} ({err.strerror}); check that the "
                         "state directory is writable") from err
    return secret
