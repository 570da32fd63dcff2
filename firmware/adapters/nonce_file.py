"""The remote-command nonce cache on disk (``<state_dir>/command-nonces.json``, 0600).

Replay protection must survive a restart: the cache is written atomically and fsynced
before a command is acted on (``firmware.features.remote_control``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from firmware.adapters.atomic_files import write_atomic
from firmware.core.remote_command import NonceCache

log = logging.getLogger(__name__)

NONCE_FILE = "command-nonces.json"


def load_nonces(path: Path) -> NonceCache:
    """The persisted nonce cache; a damaged file gives an empty cache and a warning.

    An empty cache after damage only matters for commands still inside their (at most
    30 s) validity window.
    """
    try:
        return NonceCache.from_json(path.read_text())
    except FileNotFoundError:
        return NonceCache()
    except (OSError, ValueError) as err:
        log.warning("command nonce cache %s is unreadable (%s); starting empty", path, err)
        return NonceCache()


def save_nonces(path: Path, cache: NonceCache) -> None:
    """Write the nonce cache atomically and durably (before the command is acted on)."""
    write_atomic(path, cache.to_json().encode("utf-8"), mode=0o600)


class NonceFile:
    """The NonceStore port on one file.

    Args:
        path: the cache file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> NonceCache:
        return load_nonces(self.path)

    def save(self, cache: NonceCache) -> None:
        save_nonces(self.path, cache)
