"""Operator side of remote commands: sign one command, send it, wait for the gate's answer.

Used by ``qrgate cmd send`` (and ``read_dashboard_press`` by ``qrgate cmd bridge``). Opens its own short-lived MQTT connection (paho 2.x,
MQTT 5), subscribes to ``<prefix>/<device_id>/response/<name>`` first, then publishes
the signed envelope on ``<prefix>/<device_id>/cmd/<name>`` (QoS 1, never retained, with
a v5 message expiry equal to the envelope's validity) and waits for the response whose
``transaction`` matches.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from firmware.core.cose import kid_for
from firmware.core.remote_command import MAX_VALIDITY_S, sign_command
from provisioning.mqtt_request import Target, request

log = logging.getLogger(__name__)


def build_envelope(private_key: Any, *, device_id: str, command: str, args: dict[str, Any], ttl_s: float,
                   venue_id: str, prefix: str, now_wall_s: float | None = None,
                   transaction: str | None = None) -> tuple[bytes, str]:
    """Sign a command valid for ttl_s (at most 30 s) from now for the gate device_id of venue_id
    (empty: not provisioned) under the topic prefix. Returns (envelope, transaction).

    Raises:
        ValueError: ttl_s out of range.
    """
    if not 0 < ttl_s <= MAX_VALIDITY_S:
        raise ValueError(f"--ttl-s {ttl_s} must be above 0 and at most {MAX_VALIDITY_S:.0f} s")
    now = time.time() if now_wall_s is None else now_wall_s
    tx = transaction or f"qrgate-cli-{secrets.token_hex(6)}"
    envelope = sign_command(private_key, kid_for(private_key.public_key()).hex(), device_id=device_id,
                            command=command, args=args, nonce=secrets.token_urlsafe(18), issued_at=round(now, 3),
                            expires_at=round(now + ttl_s, 3), transaction=tx, venue_id=venue_id, prefix=prefix)
    return envelope, tx


def send_command(target: Target, command: str, envelope: bytes, transaction: str, *, ttl_s: float,
                 timeout_s: float) -> dict[str, Any] | None:
    """Publish one envelope and wait for its response.

    Returns:
        The response JSON object, or None if none arrived within timeout_s.

    Raises:
        PublishError: the broker cannot be reached or refused the connection/publish.
    """
    base = target.base
    return request(target.broker, request_topic=f"{base}/cmd/{command}", response_topic=f"{base}/response/{command}",
                   payload=envelope, transaction=transaction, timeout_s=timeout_s, what="the command",
                   client_id_prefix="qrgate-cmd-", expiry_s=max(1, int(ttl_s)),
                   refused_hint="; check credentials and TLS options")


DASHBOARD_COMMANDS = ("open", "mode", "rebirth")
_DEVICE_ID = re.compile(r"^[a-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class DashboardPress:
    """A dashboard press the bridge will sign: which gate, which command, its arguments."""

    device_id: str
    command: str
    args: dict[str, Any]


def read_dashboard_press(prefix: str, topic: str, payload: bytes, retained: bool,
                         allowed: tuple[str, ...], gates: tuple[str, ...]) -> DashboardPress | str:
    """Turn a message on ``<prefix>/<device_id>/dashboard/<name>`` into a press to sign. Pure.

    Home Assistant's button sends ``PRESS`` (``open``, ``rebirth``); its select sends the
    option (``mode``: ``normal``, ``lockdown`` or ``free_passage``).

    Returns:
        The press, or the reason it is ignored (a retained message, another topic, a gate not
        in gates, a command not in allowed, a payload that is not what the dashboard sends).
    """
    from firmware.core.device_state import Mode

    if retained:
        return "retained: a retained press is never forwarded; clear it"
    parts = topic.split("/")
    base = prefix.split("/")
    if len(parts) != len(base) + 3 or parts[:len(base)] != base or parts[len(base) + 1] != "dashboard":
        return f"not a dashboard topic: {topic}"
    device_id, command = parts[len(base)], parts[len(base) + 2]
    if not _DEVICE_ID.match(device_id):
        return f"{device_id!r} is not a device id"
    if device_id not in gates:
        # Anyone who can write some gate's dashboard topic must not get a signed command for
        # a gate whose owner never enabled the bridge.
        return f"gate {device_id!r} is not bridged (bridged: {', '.join(gates)}); add it with --gate"
    if command not in allowed:
        return f"{command!r} is not forwarded (allowed: {', '.join(allowed)})"
    text = payload[:64].decode("utf-8", "replace").strip() if len(payload) <= 64 else ""
    if command == "mode":
        try:
            return DashboardPress(device_id, command, {"mode": Mode.parse(text).value})
        except ValueError:
            return f"mode {text!r} is not normal, lockdown or free_passage"
    if text != "PRESS":
        return f"{command} expects the payload PRESS"
    return DashboardPress(device_id, command, {})
