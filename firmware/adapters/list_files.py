"""The deny and allow list files: one compact file per list (``core.lists`` format: ``QGL2``
written, ``QGL1`` still read), replaced atomically, a damaged file moved aside; and CSV import
into them."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import tzinfo
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
    SubjectOf,
    decode_list,
    encode_list,
    entry_keys,
    keys_of,
    parse_csv,
)
from firmware.core.numbers import MAX_LIST_VERSION

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

    def _write(self, kind: str, info: ListInfo, salt: bytes, keys: Iterable[int],
               ends: Mapping[int, int] | None = None) -> ListSnapshot:
        keys = keys if isinstance(keys, (set, frozenset)) else set(keys)
        ends = {k: u for k, u in (ends or {}).items() if k not in keys}
        data, info = encode_list(info, salt, keys, ends)
        try:
            write_atomic(self.path(kind), data, mode=0o640)
        except OSError as err:
            raise StoreError(f"cannot write list file {self.path(kind)} ({err.strerror}); check the disk") from err
        return ListSnapshot(info, salt, keys, ends)

    def replace(self, kind: str, ids: Iterable[str], *, updated_s: float, source: str,
                version: int | None = None, current: ListSnapshot | None = None,
                ends: Mapping[str, int] | None = None) -> ListSnapshot:
        """Replace a whole list atomically with a new salt. The version must go up.

        Args:
            version: the new version; default: the current one plus 1.
            current: the list now in force (default: read from disk).
            ends: the ``until`` (Unix seconds) of the entries of ``ids`` that end
                (``core.lists.entry_keys``; ids and ends may also be normalised UTF-8 bytes).

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
            if new_version > MAX_LIST_VERSION:
                raise ValueError(f"version {new_version} is above the largest allowed, {MAX_LIST_VERSION}")
            salt = os.urandom(SALT_BYTES)
            keys, timed = entry_keys(ids, ends, salt)
            return self._write(kind, ListInfo(kind, new_version, updated_s, 0, source), salt, keys, timed)

    def apply_delta(self, kind: str, *, add: Iterable[str], remove: Iterable[str], updated_s: float,
                    source: str, version: int | None = None, base_version: int | None = None,
                    current: ListSnapshot | None = None, ends: Mapping[str, int] | None = None) -> ListSnapshot:
        """Add and remove ids, keeping the salt; writes a new version atomically.

        An added entry takes the end given in ``ends`` (Unix seconds), or none: adding an entry
        that is already there sets its end anew (so a quarantine can be shortened or made
        permanent).

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
            if new_version > MAX_LIST_VERSION:
                raise ValueError(f"version {new_version} is above the largest allowed, {MAX_LIST_VERSION}")
            salt, form = current.salt, current.info.id_form  # a list keeps the id form it was made in
            keys, timed = set(current.keys), dict(current.ends)
            added, added_timed = entry_keys(list(add), ends, salt, form)
            keys.difference_update(added_timed)
            keys.update(added)
            for key in added:
                timed.pop(key, None)
            timed.update(added_timed)
            gone = keys_of(remove, salt, form)
            keys.difference_update(gone)
            for key in gone:
                timed.pop(key, None)
            return self._write(kind, ListInfo(kind, new_version, updated_s, 0, source, id_form=form), salt, keys,
                               timed)

    def _load_or_empty(self, kind: str) -> ListSnapshot:
        try:
            return self.load(kind)
        except StoreError:
            return ListSnapshot.empty(kind)


def open_lists(directory: Path, alarms: Any = None, subject_of: SubjectOf | None = None) -> tuple[ListStore,
                                                                                                  MemoryLists]:
    """Open the list store and load both lists into memory. A damaged file is quarantined,
    an alarm ``lists_damaged`` raised, and the list counts as unavailable (``MemoryLists.damaged``)
    until a valid one is installed, also after a restart (the quarantined copy marks it).

    Args:
        subject_of: the person's subject at this venue, so lookups match subjects too.

    Raises:
        StoreError: the lists directory cannot be created.
    """
    store = ListStore(directory)
    snaps: dict[str, ListSnapshot] = {}
    damaged = set()
    for kind in KINDS:
        try:
            snaps[kind] = store.load(kind)
            corrupt = store.path(kind).with_name(store.path(kind).name + ".corrupt")
            if snaps[kind].info.version == 0 and corrupt.exists():
                # Moved aside at an earlier start and never replaced: still no list to trust,
                # or a restart would turn a damaged deny list into an empty one.
                log.error("the %s list was damaged (%s) and no valid list replaced it", kind, corrupt)
                if alarms is not None:
                    alarms.set("lists_damaged", f"{kind} list file was damaged ({corrupt}); install a new one")
                damaged.add(kind)
        except StoreError as err:
            moved = store.quarantine(kind)
            log.error("%s; moved to %s, the %s list is empty and stale until a new one is loaded",
                      err, moved, kind)
            if alarms is not None:
                alarms.set("lists_damaged", f"{kind} list file was damaged and moved to {moved}")
            snaps[kind] = ListSnapshot.empty(kind)
            damaged.add(kind)
    lists = MemoryLists(snaps["deny"], snaps["allow"], subject_of=subject_of)
    lists.damaged = damaged
    return store, lists


def import_csv_file(store: ListStore, kind: str, path: str | Path, *, now_s: float, skip_bad_rows: bool = False,
                    version: int | None = None, tz: tzinfo | None = None) -> tuple[ListSnapshot | None, CsvResult]:
    """Parse a CSV file and replace the list with it, unless rows are broken (see module doc).

    Args:
        tz: the zone of the dates in an ``until`` column (an ``until`` already past is a broken row).

    Returns:
        The new snapshot (None when refused) and the parse result with its report.

    Raises:
        StoreError: the CSV cannot be opened or the list cannot be written.
        ValueError: version not above the current one.
    """
    p = Path(path)
    try:
        with open(p, "rb", buffering=1024 * 1024) as f:
            result = parse_csv(f, tz=tz, now_s=now_s)
    except OSError as err:
        raise StoreError(f"cannot read {p} ({err.strerror})") from err
    if result.bad_rows and not skip_bad_rows:
        return None, result
    snap = store.replace(kind, result.ids, updated_s=now_s, source=f"csv:{p.name}", version=version,
                         ends=result.ends)
    return snap, result
