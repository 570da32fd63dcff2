"""The health office's escrow keys in PEM files (``privacy.escrow_key`` on gates; the private half
for ``qrgate history trace --reveal``).

X25519 keys: the public key as SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``), the
private key as PKCS#8 PEM, as ``qrgate keys escrow-new`` and ``openssl genpkey -algorithm x25519``
write them. Every problem is a ``ConfigError`` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
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
        ConfigError: missing, unreadable, not PEM, not an X25519 public key, or a low-order point.
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
    try:
        # A low-order point parses as a key, but every seal to it fails (RFC 9180 aborts on the
        # all-zero shared secret): refuse it here, at start, rather than at each scan or check-in.
        X25519PrivateKey.generate().exchange(key)
    except ValueError as err:
        raise ConfigError(f"{what} {path} is a low-order X25519 point, to which no contact can be sealed; "
                          f"{_MAKE_ONE}") from err
    return key


class EscrowKeyError(ConfigError):
    """A private key that is not the health office's kind of key.

    Attributes:
        kind: how it is wrong, for callers that word it themselves (the back office's page):
            ``too_large``, ``encrypted``, ``public`` (a public key), ``not_pem`` or ``not_x25519``.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def escrow_private_key_from_pem(data: bytes, what: str = "--escrow-key") -> X25519PrivateKey:
    """Parse the health office's X25519 private key (PKCS#8 PEM, unencrypted) from bytes in memory.

    Used for a key file (``load_escrow_private_key``) and for a key uploaded to the back office's
    page, which never writes it to disk. Never raises anything but ``EscrowKeyError`` on hostile
    bytes (an unknown algorithm, a truncated body, an encrypted key...).

    Args:
        data: the PEM bytes.
        what: how the messages name the key (``--escrow-key health-office.pem``).

    Raises:
        EscrowKeyError: too large, encrypted, not PEM, a public key, or not an X25519 private key.
    """
    if len(data) > MAX_KEY_FILE_BYTES:
        raise EscrowKeyError(f"{what} is over {MAX_KEY_FILE_BYTES} bytes: not a key file", "too_large")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as err:
        raise EscrowKeyError(f"{what} is encrypted; decrypt it to a 0600 file first "
                             "(`openssl pkey -in KEY -out PLAIN`)", "encrypted") from err
    except ValueError as err:
        if b"PUBLIC KEY" in data:
            raise EscrowKeyError(f"{what} is not a PEM private key (this is the PUBLIC key: --escrow-key needs "
                                 "the private one)", "public") from err
        raise EscrowKeyError(f"{what} is not a PEM private key", "not_pem") from err
    except UnsupportedAlgorithm as err:  # a PKCS#8 body naming an algorithm the library does not know
        raise EscrowKeyError(f"{what} holds a key of an unknown algorithm, not an X25519 private key",
                             "not_x25519") from err
    if not isinstance(key, X25519PrivateKey):
        raise EscrowKeyError(f"{what} holds a {type(key).__name__.lstrip('_')}, not an X25519 private key",
                             "not_x25519")
    return key


def load_escrow_private_key(path: Path, what: str = "--escrow-key") -> X25519PrivateKey:
    """Read the health office's X25519 private key (PKCS#8 PEM, unencrypted).

    Raises:
        ConfigError: missing, unreadable, not PEM, encrypted, or not an X25519 private key.
    """
    return escrow_private_key_from_pem(_read(path, what), f"{what} {path}")
