"""The per-venue HMAC secret that keys the hashed person ids in events (privacy.subject = hmac)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from firmware.errors import StoreError

log = logging.getLogger(__name__)


def load_or_create_secret(path: Path) -> bytes:
    """Read the per-venue HMAC secret, creating a random one (mode 0600) if missing.

    Raises:
        StoreError: the file cannot be read or created.
    """
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise StoreError(f"venue secret {path} is unreadable ({err}); fix or delete it "
                         "(a new one changes every hashed subject)") from err
    secret = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except FileExistsError:
        return load_or_create_secret(path)
    except OSError as err:
        raise StoreError(f"cannot create venue secret {path} ({err.strerror}); check that the "
                         "state directory is writable") from err
    return secret
