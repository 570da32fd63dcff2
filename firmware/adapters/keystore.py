"""Reads trusted public keys from a directory of PEM files into a TrustStore (adapter: file I/O).

Every ``*.pem`` file in the directory must hold one SubjectPublicKeyInfo public key
(Ed25519 or ECDSA P-256). ``qrgate keys trust`` writes them as ``<kid>.pem``, but any
name works: the kid is always computed from the key itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.core.cose import ALG_NAMES, alg_for, kid_for
from firmware.core.credentials.trust import TrustStore, public_key_from_pem
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

MAX_PEM_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeyFile:
    """One PEM file of a trust directory.

    Attributes:
        path: the file.
        key: the public key, or None when the file is bad.
        kid_hex: its kid, hex ("" when bad).
        alg: ``"EdDSA"`` or ``"ES256"`` ("" when bad).
        problem: why the file cannot be used (None when good), with the fix.
    """

    path: Path
    key: Any = None
    kid_hex: str = ""
    alg: str = ""
    problem: str | None = None


def read_key_file(path: Path) -> KeyFile:
    """Read one public key PEM file. Never raises for bad content; the problem is in the result."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as err:
        return KeyFile(path, problem=f"{path}: cannot be read ({err.strerror}); check its permissions")
    if len(data) > MAX_PEM_BYTES:
        return KeyFile(path, problem=f"{path}: larger than {MAX_PEM_BYTES} bytes, not a public key PEM; "
                       "remove it")
    try:
        key = public_key_from_pem(data)
    except ValueError as err:
        return KeyFile(path, problem=f"{path}: {err}; fix or remove the file")
    return KeyFile(path, key=key, kid_hex=kid_for(key).hex(), alg=ALG_NAMES[alg_for(key)])


def list_key_files(directory: str | Path) -> list[KeyFile]:
    """Read every ``*.pem`` in directory, sorted by name. A missing directory gives []."""
    root = Path(directory)
    if not root.is_dir():
        return []
    return [read_key_file(p) for p in sorted(root.glob("*.pem")) if p.is_file()]


def read_trust_dir(directory: str | Path) -> tuple[TrustStore, list[str]]:
    """Build a TrustStore from the good key files of a directory and list the problems.

    Returns:
        The store of every good key, and one line per bad file (or for a missing
        directory), each naming the file and the fix.
    """
    root = Path(directory)
    if not root.is_dir():
        return TrustStore(), [f"trust directory {root} does not exist; add a key with "
                              "`qrgate keys trust PUBFILE --config CONFIG`"]
    files = list_key_files(root)
    problems = [f.problem for f in files if f.problem]
    store = TrustStore.from_keys(f.key for f in files if f.key is not None)
    log.debug("trust directory %s: %d key(s), %d problem(s)", root, len(store), len(problems))
    return store, problems


def load_trust_dir(directory: str | Path, *, missing_ok: bool = False) -> TrustStore:
    """Load a trust directory, refusing any bad file.

    Args:
        directory: the directory of ``*.pem`` public keys.
        missing_ok: a missing directory gives an empty store instead of an error.

    Raises:
        ConfigError: a bad PEM file (every one is listed, with the file and the fix),
            or a missing directory unless missing_ok.
    """
    root = Path(directory)
    if missing_ok and not root.exists():
        return TrustStore()
    store, problems = read_trust_dir(root)
    if problems:
        raise ConfigError(problems)
    return store
