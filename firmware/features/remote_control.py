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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.adapters.nonce_file import save_nonces
from firmware.core.remote_command import CommandVerifier, Verdict, response_body

log = logging.getLogger(__name__)


class RemoteCommands:
    """Receives, verifies, acts on and answers remote commands. Runs on the MQTT worker thread.

    Args:
        link: the MqttLink (``subscribe``, ``publish``).
        verifier: the CommandVerifier for this gate.
        nonce_path: where the nonce cache is persisted.
        clock: the Clock port (wall, monotonic, wall_trusted).
        actions: name -> ``action(command) -> (data dict, error or None)``.
    """

    def __init__(self, *, link: Any, verifier: CommandVerifier, nonce_path: Path, clock: Any,
                 actions: dict[str, Callable[[Any], tuple[dict[str, Any], str | None]]]) -> None:
        self.link = link
        self.verifier = verifier
        self.nonce_path = nonce_path
        self.clock = clock
        self.actions = actions
        self.accepted = 0
        self.rejected: dict[str, int] = {}

    def subscribe(self) -> None:
        """Subscribe to ``cmd/+`` (renewed by the link after every reconnect)."""
        self.link.subscribe("cmd/+", self.handle, qos=1)

    def handle(self, topic: str, payload: bytes, retained: bool, props: dict[str, Any]) -> None:
        """One command message (MQTT worker thread)."""
        name = topic.rsplit("/", 1)[-1]
        verdict = self.verifier.verify(name, payload, retained, self.clock.wall(), self.clock.monotonic(),
                                       self.clock.wall_trusted())
        if not verdict.ok:
            assert verdict.reject is not None
            self.rejected[verdict.reject.value] = self.rejected.get(verdict.reject.value, 0) + 1
            log.warning("command %s rejected: %s (%s)", name, verdict.reject.value, verdict.detail)
            self._answer(name, verdict)
            return
        command = verdict.command
        assert command is not None
        try:
            save_nonces(self.nonce_path, self.verifier.nonces)
        except OSError as err:
            # without a durable nonce a restart could accept a replay: refuse instead
            self.verifier.nonces.entries.pop(command.nonce, None)
            log.error("cannot persist the command nonce cache %s (%s); command refused", self.nonce_path, err)
            self._answer(name, verdict, error="storage_error")
            return
        self.accepted += 1
        log.warning("command %s accepted (key %s, transaction %s)", name, command.kid_hex, command.transaction)
        try:
            data, error = self.actions[name](command)
        except Exception as err:  # an action bug must still answer the operator
            log.exception("command %s failed", name)
            data, error = {}, f"failed: {err}"
        self._answer(name, verdict, data, error)

    def _answer(self, name: str, verdict: Verdict, data: dict[str, Any] | None = None,
                error: str | None = None) -> None:
        self.link.publish(f"response/{name}", response_body(verdict, data, error), qos=1, retain=False)
