"""Device keys for tests: each test device id gets a fixed Ed25519 key, so stand-in gates can
sign their scan events and stores can register them (issue 10: the collector stores only
events that verify with the key registered for their device)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.core.event_signature import public_key_text, seal

# The device ids the history tests publish for; RunningCollector registers all of them.
TEST_DEVICES = ("gate-0", "gate-1", "gate-2", "gate-3", "gate-9", "bus-3-gate-2")


def device_key(device: str) -> Ed25519PrivateKey:
    """The test key of a device id (derived from the id: never use this outside tests)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"qrgate-test-device:" + device.encode()).digest())


def public_text(device: str) -> str:
    return public_key_text(device_key(device).public_key())


def signed(device: str, event: dict | bytes) -> bytes:
    """The payload a gate publishes: the compact event JSON sealed with the device's key."""
    body = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False,
                                                             separators=(",", ":")).encode()
    return seal(body, device_key(device))


def register(store, devices=TEST_DEVICES) -> None:
    """Register the test keys of ``devices`` in a history store."""
    for device in devices:
        store.register_device(device, public_text(device), "test", 0)


def write_public_pem(device: str, path: Path) -> Path:
    path.write_bytes(device_key(device).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path
