"""The health office's escrow keys in PEM files (``privacy.escrow_key`` on gates; the private half
for ``qrgate history trace --reveal``).

X25519 keys: the public key as SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``), the
private key as PKCS#8 PEM, as ``qrgate keys escrow-new`` and ``openssl genpkey -algorithm x25519``
write them. Every problem is a ``ConfigError`` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from firmware.core.errors import ConfigError

MAX_KEY_FILE_BYTES = 64 * 1024
_MAKE_ONE = "make a pair with `qrgate keys escrow-new --out health-office.pem`"


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()[:MAX_KEY_FILE_BYTES + 1]
    except FileNotFoundError as err:
        raise ConfigError(f"{what} {path} does not exist; {_MAKE_ONE}") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{what} {path} is a directory, not a key file") from err
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read ({err.strerror}); check its permissions") from err
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{what} {path} is over {MAX_KEY_FILE_BYTES} bytes: not a key file")
    return data


def load_escrow_public_key(path: Path, what: str = "privacy.escrow_key") -> X25519PublicKey:
    """Read the health office's X25519 public key.

    Raises:
        ConfigError: missing, unreadable, not PEM, or not an X25519 public key.
    """
    data = _read(path, what)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        hint = " (this is the PRIVATE key: give the gate only the .pub.pem)" if b"PRIVATE KEY" in data else ""
        raise ConfigError(f"{what} {path} is not a PEM public key{hint}; {_MAKE_ONE}") from err
    if not isinstance(key, X25519PublicKey):
        raise ConfigError(f"{what} {path} holds a {type(key).__name__.lstrip('_')}, not an X25519 public key; "
                          f"{_MAKE_ONE}")
    return key


def load_escrow_private_key(path: Path, what: str = "--escrow-key") -> X25519PrivateKey:
    """Read the health office's X25519 private key (PKCS#8 PEM, unencrypted).

    Raises:
        ConfigError: missing, unreadable, not PEM, encrypted, or not an X25519 private key.
    """
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as err:
        raise ConfigError(f"{what} {path} is encrypted; decrypt it to a 0600 file first "
                          "(`openssl pkey -in KEY -out PLAIN`)") from err
    except ValueError as err:
        hint = " (this is the PUBLIC key: --escrow-key needs the private one)" if b"PUBLIC KEY" in data else ""
        raise ConfigError(f"{what} {path} is not a PEM private key{hint}") from err
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{what} {path} holds a {type(key).__name__.lstrip('_')}, not an X25519 private key")
    return key
