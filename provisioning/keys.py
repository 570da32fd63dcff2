"""Signing keys for issuers, provisioning authorities and remote commands.

Private keys are PKCS#8 PEM files written 0600; public keys are SubjectPublicKeyInfo
PEM files, so openssl makes and reads both (``openssl genpkey -algorithm ed25519``,
``openssl pkey -in KEY -pubout``). A device trusts a key by holding its public PEM in
the trust directory of the key's role, named ``<kid>.pem``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from firmware.adapters.atomic_files import write_atomic
from firmware.adapters.keystore import KeyFile, list_key_files, read_key_file
from firmware.core.config import Config
from firmware.core.cose import ALG_NAMES, alg_for, kid_for
from firmware.core.credentials.trust import check_public_key, public_key_from_pem
from firmware.core.errors import QrGateError

log = logging.getLogger(__name__)

ROLES = ("issuer", "authority", "command")
ALGS = ("ed25519", "es256")
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFileError(QrGateError, ValueError):
    """A key file is missing, unreadable, of the wrong kind, or would be overwritten."""


@dataclass(frozen=True)
class NewKey:
    """A key pair written by ``new_keypair``."""

    kid_hex: str
    alg: str
    private_path: Path
    public_path: Path


def generate(alg: str = "ed25519") -> Any:
    """Return a new private key: ``ed25519`` (default) or ``es256`` (ECDSA P-256).

    Raises:
        KeyFileError: an unknown alg.
    """
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    raise KeyFileError(f"--alg {alg!r} is not supported; use one of {', '.join(ALGS)}")


def private_pem(key: Any) -> bytes:
    """PKCS#8 PEM of a private key, unencrypted (protect the file, not the key)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Any) -> bytes:
    """SubjectPublicKeyInfo PEM of a public key (or of a private key's public half)."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_path_for(private_path: str | Path) -> Path:
    """Where the public key goes beside a private key: ``issuer.pem`` -> ``issuer.pub.pem``."""
    p = Path(private_path)
    stem = p.name[:-4] if p.name.endswith(".pem") else p.name
    return p.with_name(stem + ".pub.pem")


def new_keypair(out: str | Path, alg: str = "ed25519", *, force: bool = False) -> NewKey:
    """Generate a key pair: private key at out (0600), public key beside it (0644).

    Raises:
        KeyFileError: an unknown alg, or a file that exists (unless force), or a
            directory that cannot be written.
    """
    private_path = Path(out)
    public_path = public_path_for(private_path)
    if not force:
        for p in (private_path, public_path):
            if p.exists():
                raise KeyFileError(f"{p} already exists; choose another --out or pass --force to replace it")
    key = generate(alg)
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(private_path, private_pem(key), mode=0o600)
        write_atomic(public_path, public_pem(key), mode=0o644)
    except OSError as err:
        raise KeyFileError(f"cannot write {private_path} ({err.strerror}); check the directory") from err
    return NewKey(kid_for(key.public_key()).hex(), ALG_NAMES[alg_for(key)], private_path, public_path)


@dataclass(frozen=True)
class NewEscrowKey:
    """An escrow key pair written by ``new_escrow_keypair``."""

    fingerprint: str
    private_path: Path
    public_path: Path


def new_escrow_keypair(out: str | Path, *, force: bool = False) -> NewEscrowKey:
    """Generate the health office's X25519 escrow pair: private key at out (PKCS#8 PEM, 0600), public
    key beside it as NAME.pub.pem (0644), for the gates' ``privacy.escrow_key``.

    Raises:
        KeyFileError: a file that exists (unless force), or a directory that cannot be written.
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from firmware.core.event_signature import fingerprint

    private_path = Path(out)
    public_path = public_path_for(private_path)
    if not force:
        for p in (private_path, public_path):
            if p.exists():
                raise KeyFileError(f"{p} already exists; choose another --out or pass --force to replace it "
                                   "(a replaced private key can no longer open what was sealed to it)")
    key = X25519PrivateKey.generate()
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(private_path, private_pem(key), mode=0o600)
        write_atomic(public_path, public_pem(key), mode=0o644)
    except OSError as err:
        raise KeyFileError(f"cannot write {private_path} ({err.strerror}); check the directory") from err
    return NewEscrowKey(fingerprint(key.public_key()), private_path, public_path)


def _read(path: str | Path, what: str) -> bytes:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError as err:
        raise KeyFileError(f"{what} {p} does not exist; check the path") from err
    except OSError as err:
        raise KeyFileError(f"{what} {p} cannot be read ({err.strerror}); check its permissions") from err
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{what} {p} is larger than {MAX_KEY_FILE_BYTES} bytes; it is not a PEM key")
    return data


def load_private_key(path: str | Path) -> Any:
    """Read a PEM private key (PKCS#8, or SEC1 for EC) made by qrgate or openssl.

    Raises:
        KeyFileError: missing, unreadable, encrypted, not a private key, or not Ed25519/P-256.
    """
    data = _read(path, "private key")
    if b"PRIVATE KEY" not in data:
        raise KeyFileError(f"{path} is not a private key PEM (no 'PRIVATE KEY' block); pass the private "
                           "key written by `qrgate keys new`, not the .pub.pem")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as err:
        raise KeyFileError(f"{path} is encrypted; decrypt it with `openssl pkey -in {path} -out PLAIN.pem` "
                           "and keep that file 0600") from err
    except ValueError as err:
        raise KeyFileError(f"{path} is not a readable PEM private key ({err}); make one with "
                           "`qrgate keys new --out FILE`") from err
    problem = check_public_key(key.public_key())
    if problem:
        raise KeyFileError(f"{path}: {problem}")
    return key


def load_public_key(path: str | Path) -> Any:
    """Read a SubjectPublicKeyInfo PEM public key.

    Raises:
        KeyFileError: missing, unreadable, a private key, or not Ed25519/P-256.
    """
    data = _read(path, "public key")
    try:
        return public_key_from_pem(data)
    except ValueError as err:
        raise KeyFileError(f"{path}: {err}") from err


def trust_dir(cfg: Config, role: str) -> Path:
    """The trust directory of a role in a device config.

    Raises:
        KeyFileError: an unknown role.
    """
    if role == "issuer":
        return cfg.issuers_dir
    if role == "authority":
        return cfg.authority_dir
    if role == "command":
        return cfg.command_keys_dir
    raise KeyFileError(f"--role {role!r} is unknown; use one of {', '.join(ROLES)}")


def trust(public_path: str | Path, cfg: Config, role: str = "issuer") -> tuple[Path, bool]:
    """Copy a public key into the role's trust directory as ``<kid>.pem``. Idempotent.

    Returns:
        The trusted file and whether it was added (False: the key was already trusted).

    Raises:
        KeyFileError: a bad key file, an unknown role, or an unwritable directory.
    """
    key = load_public_key(public_path)
    kid_hex = kid_for(key).hex()
    directory = trust_dir(cfg, role)
    pem = public_pem(key)
    for existing in list_key_files(directory):
        if existing.key is not None and public_pem(existing.key) == pem:
            return existing.path, False
    dest = directory / f"{kid_hex}.pem"
    if dest.exists():  # same kid, another key: keep both (verification tries every key of a kid)
        n = 2
        while (directory / f"{kid_hex}-{n}.pem").exists():
            n += 1
        dest = directory / f"{kid_hex}-{n}.pem"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, pem, mode=0o644)
    except OSError as err:
        raise KeyFileError(f"cannot write {dest} ({err.strerror}); run as the owner of {directory}") from err
    return dest, True


def untrust(kid_hex: str, cfg: Config, role: str | None = None) -> list[Path]:
    """Remove every key with this kid from the trust directories (of one role, or all).

    Returns:
        The files removed (empty if none matched).

    Raises:
        KeyFileError: an unknown role, or a file that cannot be removed.
    """
    wanted = kid_hex.strip().lower()
    removed = []
    for r in ([role] if role else ROLES):
        for entry in list_key_files(trust_dir(cfg, r)):
            if entry.kid_hex == wanted:
                try:
                    entry.path.unlink()
                except OSError as err:
                    raise KeyFileError(f"cannot remove {entry.path} ({err.strerror})") from err
                removed.append(entry.path)
    return removed


def list_trusted(cfg: Config) -> list[tuple[str, KeyFile]]:
    """Every PEM file in every trust directory, as (role, KeyFile); bad files carry a problem."""
    return [(role, entry) for role in ROLES for entry in list_key_files(trust_dir(cfg, role))]


def describe(path: str | Path) -> KeyFile:
    """Read a public key file for display (never raises for bad content)."""
    return read_key_file(Path(path))
