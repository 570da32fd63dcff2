"""Deny and allow lists: a compact file per list, replaced atomically, looked up in O(1).

The deny list keeps people under quarantine out; the allow list is the employees-only
list. Each list is one file in ``<state_dir>/lists/`` (``deny.qgl``, ``allow.qgl``):

- line 1: ``QGL1``; line 2: a JSON header ``{kind, version, updated_s, count, salt,
  source, sha256}``; then ``count`` keys of 8 bytes each (little-endian), sorted.
- A key is BLAKE2b-64 of the person id keyed with the list's random salt, so the file
  does not hold readable ids (casual reading; a 12-digit id space can still be searched
  by someone holding the file and the salt). The id is NFC-normalised and trimmed.
- ``version`` only goes up; ``updated_s`` is when the list content was issued (import
  time, or the signed message's ``iat``) and drives the staleness check.
- The file is written to a temporary file, fsynced and renamed over the old one, then
  the directory is fsynced: a reader sees the old or the new list, never a mix.

In memory a list is a Python ``set`` of ints: a lookup hashes the id once (about a
microsecond) and is O(1). A million entries take about 70 MB (36-byte ints plus the
set's table); see README "Provisioning" for measured figures.

Import (``parse_csv``): a CSV whose first column is the person id; an optional header
row (``id``, ``subject``, ``cccd``...) is skipped; blank lines are ignored; other
columns are ignored. Broken rows (empty id, id too long, control characters, bytes that
are not UTF-8, CSV syntax errors) are reported with their line numbers. By default a
file with any broken row is refused and the list is left as it was; ``skip_bad_rows``
imports the good rows and reports the rest.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firmware.adapters.atomic_files import write_atomic
from firmware.core.errors import StoreError
from firmware.core.lists import (
    KINDS,
    SALT_BYTES,
    CsvResult,
    ListInfo,
    ListSnapshot,
    MemoryLists,
    decode_list,
    encode_list,
    keys_of,
    parse_csv,
)

log = logging.getLogger(__name__)


class ListStore:
    """The list files of one gate (``<state_dir>/lists``). One owner: the daemon, or the CLI
    while the daemon is stopped. Thread-safe (one lock).

    Args:
        directory: the lists directory (created if missing).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the lists directory {self.directory} ({err.strerror})") from err

    def path(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"list kind {kind!r} is not deny or allow")
        return self.directory / f"{kind}.qgl"

    def load(self, kind: str) -> ListSnapshot:
        """Read a list (an empty one, version 0, if it was never written).

        Raises:
            StoreError: the file is damaged (the caller decides: quarantine and alarm).
        """
        p = self.path(kind)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return ListSnapshot.empty(kind)
        except OSError as err:
            raise StoreError(f"cannot read list file {p} ({err.strerror})") from err
        snap = decode_list(data, str(p))
        if snap.info.kind != kind:
            raise StoreError(f"list file {p} holds a {snap.info.kind} list, not {kind}")
        return snap

    def quarantine(self, kind: str) -> Path | None:
        """Move a damaged list file aside (``<name>.corrupt``); returns where, or None if absent."""
        p = self.path(kind)
        if not p.exists():
            return None
        dest = p.with_name(p.name + ".corrupt")
        os.replace(p, dest)
        return dest

    def _write(self, kind: str, info: ListInfo, salt: bytes, keys: Iterable[int]) -> ListSnapshot:
        keys = keys if isinstance(keys, (set, frozenset)) else set(keys)
        data, info = encode_list(info, salt, keys)
        try:
            write_atomic(self.path(kind), data, mode=0o640)
        except OSError as err:
            raise StoreError(f"cannot write list file {self.path(kind)} ({err.strerror}); check the disk") from err
        return ListSnapshot(info, salt, keys)

    def replace(self, kind: str, ids: Iterable[str], *, updated_s: float, source: str,
                version: int | None = None, current: ListSnapshot | None = None) -> ListSnapshot:
        """Replace a whole list atomically with a new salt. The version must go up.

        Args:
            version: the new version; default: the current one plus 1.
            current: the list now in force (default: read from disk).

        Raises:
            ValueError: version not above the current one.
            StoreError: the file cannot be written (the old list stays).
        """
        with self._lock:
            current = current or self._load_or_empty(kind)
            new_version = current.info.version + 1 if version is None else int(version)
            if new_version <= current.info.version:
                raise ValueError(f"version {new_version} is not above the current {kind} list version "
                                 f"{current.info.version}")
            salt = os.urandom(SALT_BYTES)
            keys = keys_of(ids, salt)
            return self._write(kind, ListInfo(kind, new_version, updated_s, 0, source), salt, keys)

    def apply_delta(self, kind: str, *, add: Iterable[str], remove: Iterable[str], updated_s: float,
                    source: str, version: int | None = None, base_version: int | None = None,
                    current: ListSnapshot | None = None) -> ListSnapshot:
        """Add and remove ids, keeping the salt; writes a new version atomically.

        Args:
            base_version: if given, must equal the current version (else ValueError).

        Raises:
            ValueError: base or new version does not fit the current list.
            StoreError: the file cannot be written (the old list stays).
        """
        with self._lock:
            current = current or self._load_or_empty(kind)
            if base_version is not None and base_version != current.info.version:
                raise ValueError(f"delta is based on version {base_version} but the {kind} list is at "
                                 f"version {current.info.version}; send the full list")
            new_version = current.info.version + 1 if version is None else int(version)
            if new_version <= current.info.version:
                raise ValueError(f"version {new_version} is not above the current {kind} list version "
                                 f"{current.info.version}")
            salt = current.salt
            keys = set(current.keys)
            keys.update(keys_of(add, salt))
            keys.difference_update(keys_of(remove, salt))
            return self._write(kind, ListInfo(kind, new_version, updated_s, 0, source), salt, keys)

    def _load_or_empty(self, kind: str) -> ListSnapshot:
        try:
            return self.load(kind)
        except StoreError:
            return ListSnapshot.empty(kind)


def open_lists(directory: Path, alarms: Any = None) -> tuple[ListStore, MemoryLists]:
    """Open the list store and load both lists into memory. A damaged file is quarantined,
    an alarm ``lists_damaged`` raised, and the list counts as stale (see ``stale``).

    Raises:
        StoreError: the lists directory cannot be created.
    """
    store = ListStore(directory)
    snaps: dict[str, ListSnapshot] = {}
    damaged = set()
    for kind in KINDS:
        try:
            snaps[kind] = store.load(kind)
        except StoreError as err:
            moved = store.quarantine(kind)
            log.error("%s; moved to %s, the %s list is empty and stale until a new one is loaded",
                      err, moved, kind)
            if alarms is not None:
                alarms.set("lists_damaged", f"{kind} list file was damaged and moved to {moved}")
            snaps[kind] = ListSnapshot.empty(kind)
            damaged.add(kind)
    lists = MemoryLists(snaps["deny"], snaps["allow"])
    lists.damaged = damaged
    return store, lists


def import_csv_file(store: ListStore, kind: str, path: str | Path, *, now_s: float, skip_bad_rows: bool = False,
                    version: int | None = None) -> tuple[ListSnapshot | None, CsvResult]:
    """Parse a CSV file and replace the list with it, unless rows are broken (see module doc).

    Returns:
        The new snapshot (None when refused) and the parse result with its report.

    Raises:
        StoreError: the CSV cannot be opened or the list cannot be written.
        ValueError: version not above the current one.
    """
    p = Path(path)
    try:
        with open(p, "rb", buffering=1024 * 1024) as f:
            result = parse_csv(f)
    except OSError as err:
        raise StoreError(f"cannot read {p} ({err.strerror})") from err
    if result.bad_rows and not skip_bad_rows:
        return None, result
    snap = store.replace(kind, result.ids, updated_s=now_s, source=f"csv:{p.name}", version=version)
    return snap, result
