"""MQTT glue for remote commands and Home Assistant discovery (on the shared ``MqttLink``).

Commands: subscribed to ``<prefix>/<device_id>/cmd/+`` on a clean session (the link
never keeps a session, so the broker cannot queue an ``open`` for a gate that was
offline). Every message goes through ``firmware.remote.CommandVerifier``; the nonce
cache is persisted (atomically, fsynced) before the command is acted on; the answer
goes to ``<prefix>/<device_id>/response/<name>`` (QoS 1, not retained) with
``status``, ``error``, ``detail``, ``data`` and the echoed ``transaction``.

Discovery: one retained device-discovery message on
``<discovery_prefix>/device/<device_id>/config`` (published on every connect, on
``rebirth`` and when Home Assistant announces ``online`` on ``<discovery_prefix>/status``).
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
