"""The trusted public keys of a device, by kid. Pure and immutable.

Built from key objects (or PEM bytes) by the caller; ``firmware.adapters.keystore`` reads
them from a directory. Several keys may share a kid: every one of them is tried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from firmware.core.cose import kid_for


def check_public_key(key: Any) -> str | None:
    """Return None if key is a supported public key (Ed25519, ECDSA P-256), else the problem."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return None
        return f"EC curve {key.curve.name} is not supported; use P-256 (prime256v1) or Ed25519"
    return f"{type(key).__name__.lstrip('_')} keys are not supported; use Ed25519 or ECDSA P-256"


def public_key_from_pem(data: bytes) -> Any:
    """Parse a SubjectPublicKeyInfo PEM and return the key.

    Raises:
        ValueError: not a public key PEM, or a key type that is not supported; the
            message says what to do.
    """
    if b"PRIVATE KEY" in data:
        raise ValueError("this is a PRIVATE key; trust only the public key "
                         "(`qrgate keys export PRIVFILE` prints it)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not a SubjectPublicKeyInfo PEM ({err}); expected "
                         "'-----BEGIN PUBLIC KEY-----' as written by `qrgate keys new` or "
                         "`openssl pkey -pubout`") from err
    problem = check_public_key(key)
    if problem:
        raise ValueError(problem)
    return key


class TrustStore:
    """An immutable map from kid (bytes) to the trusted public keys with that kid.

    Usage: ``TrustStore.from_keys([key1, key2])`` then ``store.keys_for(kid)``, which is
    the ``keys_for_kid`` callable ``firmware.core.cose.verify1`` wants.
    """

    __slots__ = ("_by_kid",)

    def __init__(self, by_kid: Mapping[bytes, Sequence[Any]] | None = None) -> None:
        self._by_kid: dict[bytes, tuple[Any, ...]] = {
            bytes(kid): tuple(keys) for kid, keys in (by_kid or {}).items() if keys}

    @classmethod
    def from_keys(cls, keys: Iterable[Any]) -> TrustStore:
        """Build a store from public keys, each under its own ``kid_for``. Duplicates collapse.

        Raises:
            ValueError: a key type that is not supported.
        """
        by_kid: dict[bytes, list[Any]] = {}
        seen: set[bytes] = set()
        for key in keys:
            problem = check_public_key(key)
            if problem:
                raise ValueError(problem)
            der = key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
            if der in seen:
                continue
            seen.add(der)
            by_kid.setdefault(kid_for(key), []).append(key)
        return cls(by_kid)

    @classmethod
    def from_pems(cls, pems: Iterable[bytes]) -> TrustStore:
        """Build a store from SubjectPublicKeyInfo PEM texts.

        Raises:
            ValueError: one of them is not a supported public key PEM.
        """
        return cls.from_keys(public_key_from_pem(p) for p in pems)

    def merged(self, other: TrustStore) -> TrustStore:
        """Return a store with the keys of both (for key rotation overlap)."""
        return TrustStore.from_keys([*self.all_keys(), *other.all_keys()])

    def keys_for(self, kid: bytes) -> tuple[Any, ...]:
        """Return the trusted keys with this kid (empty tuple if none)."""
        return self._by_kid.get(bytes(kid), ())

    __call__ = keys_for

    def kids(self) -> list[bytes]:
        """Return every kid, sorted."""
        return sorted(self._by_kid)

    def all_keys(self) -> list[Any]:
        """Return every key, in kid order."""
        return [key for kid in self.kids() for key in self._by_kid[kid]]

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._by_kid.values())

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, (bytes, bytearray)) and bytes(kid) in self._by_kid

    def __repr__(self) -> str:
        return f"TrustStore({', '.join(k.hex() for k in self.kids())})"
