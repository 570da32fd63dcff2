"""Sending a signed list message to a running gate over MQTT and waiting for its answer.

The tool side of ``firmware.list_updates``: publish on ``<prefix>/<device>/lists/<kind>``
(QoS 1, never retained) and wait for the JSON answer with the same transaction on
``<prefix>/<device>/response/lists``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioning.mqtt_request import Broker, request


@dataclass(frozen=True)
class ListTarget:
    """Where the list goes: broker, gate and topic prefix."""

    host: str
    port: int
    device_id: str
    prefix: str = "qrgate"


def send_list(target: ListTarget, kind: str, message: bytes, transaction: str, *,
              timeout_s: float) -> dict[str, Any] | None:
    """Publish one signed list message and wait for the gate's answer.

    Returns:
        The answer (``status``, ``data``, ``error``, ``transaction``), or None if none
        arrived within timeout_s.

    Raises:
        PublishError: the broker cannot be reached, refused us, or did not take the message.
    """
    base = f"{target.prefix}/{target.device_id}"
    return request(Broker(target.host, target.port), request_topic=f"{base}/lists/{kind}",
                   response_topic=f"{base}/response/lists", payload=message, transaction=transaction,
                   timeout_s=timeout_s, what="the list", client_id_prefix="qrgate-list-")
