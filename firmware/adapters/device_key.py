"""The gate's own Ed25519 device key (``<state_dir>/device-key.pem``), made at first start.

The private key never leaves the gate: it is written once (PKCS#8 PEM, mode 0600, atomically; its public half
beside it as ``device-key.pub.pem``)
and read at every start; only its public half is published (retained ``<prefix>/<device>/key``)
and put into the ``provisioned`` event. A damaged file is moved aside as
``device-key.pem.corrupt-<unix time>`` and a new key is made, which ``on_damaged`` (an alarm)
reports: the history then quarantines this gate's events until the new key is enrolled again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.adapters.atomic_files import write_atomic
from firmware.core.errors import StoreError

log = logging.getLogger(__name__)

DEVICE_KEY_FILE = "device-key.pem"


def public_path(path: Path) -> Path:
    """Where the public half is written: ``device-key.pub.pem`` beside ``device-key.pem``."""
    return path.with_name(path.name.replace(".pem", "") + ".pub.pem")


def load_or_create_device_key(path: Path, on_damaged: Callable[[str], None] | None = None) -> Ed25519PrivateKey:
    """Read the device key, making a new one (mode 0600) if the file is missing or damaged.

    Raises:
        StoreError: the file cannot be read, moved aside or written.
    """
    problem = ""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, Ed25519PrivateKey):
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # a copy restored with looser rights
            return key
        problem = f"holds a {type(key).__name__}, not an Ed25519 key"
    except FileNotFoundError:
        pass
    except ValueError as err:
        problem = f"is not a PEM private key ({str(err)[:80]})"
    except OSError as err:
        raise StoreError(f"device key {path} cannot be read ({err.strerror}); check its owner and "
                         "permissions") from err
    try:
        if problem:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            message = (f"device key {path} {problem}; moved to {aside} and a new key made: the history "
                       "quarantines this gate's events until the new key is enrolled")
            log.error("%s", message)
            if on_damaged is not None:
                on_damaged(message)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, pem, mode=0o600)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        # the public half beside it, for `qrgate history device add --key`
        write_atomic(public_path(path), public, mode=0o644)
        log.info("made this gate's device key %s", path)
    except OSError as err:
        raise StoreError(f"cannot create the device key {path} ({err.strerror}); check that the "
                         "state directory is writable") from err
    return key
