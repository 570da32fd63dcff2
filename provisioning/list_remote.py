"""Sending a signed list message to a running gate over MQTT and waiting for its answer.

The tool side of ``firmware.features.list_updates``: publish on ``<prefix>/<device>/lists/<kind>``
(QoS 1, never retained) and wait for the JSON answer with the same transaction on
``<prefix>/<device>/response/lists``.
"""

from __future__ import annotations

from typing import Any

from provisioning.mqtt_request import Target, request


def send_list(target: Target, kind: str, message: bytes, transaction: str, *,
              timeout_s: float) -> dict[str, Any] | None:
    """Publish one signed list message and wait for the gate's answer.

    Returns:
        The answer (``status``, ``data``, ``error``, ``transaction``), or None if none
        arrived within timeout_s.

    Raises:
        PublishError: the broker cannot be reached, refused us, or did not take the message.
    """
    base = target.base
    return request(target.broker, request_topic=f"{base}/lists/{kind}",
                   response_topic=f"{base}/response/lists", payload=message, transaction=transaction,
                   timeout_s=timeout_s, what="the list", client_id_prefix="qrgate-list-")
