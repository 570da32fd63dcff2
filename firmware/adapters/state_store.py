"""The gate's small state in tinydb, written atomically (adapter: tinydb, file I/O).

The state is a few kilobytes: the provisioning record, used provisioning nonces and
list versions. tinydb's own JSONStorage rewrites its file in place, so a crash or a
power cut mid-write leaves broken JSON. ``AtomicJSONStorage`` instead writes a
temporary file in the same directory, fsyncs it, renames it over the state file with
``os.replace`` and fsyncs the directory; a second copy of the last good document is
kept beside it as ``<name>.bak`` (written first, so one of the two is always whole).

At start a state file that cannot be read as a JSON object (empty, truncated, garbage,
NUL-filled after a power cut) is moved aside as ``<name>.corrupt-<unix time>`` and the
``state_corrupt`` alarm is raised either way. When the ``.bak`` copy is whole, the state
is recovered from it (the provisioning record and the used nonces: the copy is written
just before the file, so it holds the last or the one-before-last commit); otherwise the
gate starts unprovisioned (fail closed) with a fresh state, keeping what nonces the copy
still gives, so a code that was already used cannot be replayed after the loss. The
daemon does not crash and does not restart in a loop.

One owner: the daemon (or a CLI tool while the daemon is stopped); not thread-safe,
callers serialise access with ``StateStore.lock``.

Usage::

    store = StateStore(state_dir / "state.json")
    if store.quarantined: ...               # alarm: corrupted state was moved aside
    record = store.get("provisioning")
    with store.batch():                     # one atomic write for several changes
        store.put("provisioning", {...})
        store.add_nonce("ab12...", expires_s=...)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from firmware.adapters.atomic_files import fsync_dir, write_atomic
from firmware.core.errors import StoreError

log = logging.getLogger(__name__)

KV_TABLE = "kv"
NONCE_TABLE = "nonces"
ALARM_KEY = "alarm"
MAX_STATE_BYTES = 4 * 1024 * 1024


def parse_state(raw: bytes) -> dict[str, Any] | None:
    """Return the state document in raw bytes, or None if it is not a JSON object of tables."""
    if not raw.strip(b" \t\r\n"):
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return None
    return data


def peek_value(path: str | Path, key: str) -> Any:
    """Read one value of a state file without opening it as a store (tools beside the daemon).

    The file is only read: a damaged file falls back to its ``.bak`` copy, as the daemon does
    at its next start; nothing is moved or written. Returns None when neither holds the key.
    """
    p = Path(path)
    for candidate in (p, p.with_name(p.name + ".bak")):
        try:
            raw = candidate.read_bytes()
        except OSError:
            continue
        data = parse_state(raw)
        if data is None:
            continue
        for doc in data.get(KV_TABLE, {}).values():
            if isinstance(doc, dict) and doc.get("key") == key:
                return copy.deepcopy(doc.get("value"))
        return None
    return None


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


class AtomicJSONStorage(Storage):
    """A tinydb Storage that replaces its file atomically and keeps the last good copy.

    The storage holds the committed document in memory (it is the file's only writer),
    so reads never touch the disk after the first. Inside ``batch()`` writes stay in
    memory and are committed once at the end, or dropped if the block raises.

    Args:
        path: the state file. Its directory must exist.
        initial: the document to start from (None: read the file, which must be valid
            or absent; ``StateStore`` checks and quarantines it first).

    Raises:
        StoreError: the file exists but is not a valid state document.
    """

    def __init__(self, path: str | Path, initial: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.bak_path = self.path.with_name(self.path.name + ".bak")
        if initial is not None:
            self._committed: dict[str, Any] | None = copy.deepcopy(initial)
        elif self.path.exists():
            data = parse_state(self.path.read_bytes())
            if data is None:
                raise StoreError(f"state file {self.path} is not a valid state document")
            self._committed = data
        else:
            self._committed = None
        self._pending: dict[str, Any] | None = None
        self._depth = 0

    def read(self) -> dict[str, Any] | None:
        current = self._pending if self._depth else self._committed
        return copy.deepcopy(current) if current is not None else None

    def write(self, data: dict[str, Any]) -> None:
        if self._depth:
            self._pending = copy.deepcopy(data)
            return
        self._commit(data)

    def _commit(self, data: dict[str, Any]) -> None:
        raw = _encode(data)
        if len(raw) > MAX_STATE_BYTES:
            raise StoreError(f"state would grow to {len(raw)} bytes (limit {MAX_STATE_BYTES}); "
                             "this is a bug: the state holds small records only")
        try:
            # The copy goes first: at every moment one of the two files holds a whole document.
            write_atomic(self.bak_path, raw, mode=0o600)
            write_atomic(self.path, raw, mode=0o600)
        except OSError as err:
            raise StoreError(f"cannot write state file {self.path} ({err.strerror}); check that "
                             f"{self.path.parent} is writable and the disk is not full") from err
        self._committed = copy.deepcopy(data)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes into one atomic commit; nothing is written if the block raises."""
        if self._depth == 0:
            self._pending = copy.deepcopy(self._committed) if self._committed is not None else None
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._pending = None
            raise
        self._depth -= 1
        if self._depth == 0:
            pending, self._pending = self._pending, None
            if pending is not None and pending != self._committed:
                self._commit(pending)

    def close(self) -> None:
        """Nothing to release: every commit is already on disk."""


class StateStore:
    """Key/value records and used nonces in one atomically written tinydb file.

    Args:
        path: the state file (``<state_dir>/state.json``). Its directory is created.

    Attributes:
        quarantined: where a corrupted state file was moved at start, or None. While
            set, the gate is in alarm (``state_corrupt``); it clears when the gate is
            provisioned again (``clear_alarm``).
        lock: serialises access between the scan loop and the MQTT thread.

    Raises:
        StoreError: the directory cannot be created or written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.quarantined: Path | None = None
        self.recovered = False  # the corrupt file's records came back from the .bak copy
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the state directory {self.path.parent} ({err.strerror})") from err
        initial = self._check_at_start()
        self._storage: AtomicJSONStorage | None = None

        def factory() -> AtomicJSONStorage:
            self._storage = AtomicJSONStorage(self.path, initial=initial)
            return self._storage

        self._db = TinyDB(storage=factory)
        if initial is not None and self.quarantined is not None:
            self._storage_or_fail().write(initial)  # a fresh, valid file in place of the bad one

    def _check_at_start(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise StoreError(f"cannot read state file {self.path} ({err.strerror}); check its permissions") from err
        if parse_state(raw) is not None:
            return None
        stamp = int(os.stat(self.path).st_mtime)
        dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while dest.exists():
            n += 1
            dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.path, dest)
            fsync_dir(self.path.parent)
        except OSError as err:
            raise StoreError(f"state file {self.path} is corrupt and cannot be moved aside "
                             f"({err.strerror}); remove it by hand") from err
        self.quarantined = dest
        salvaged: dict[str, Any] = {}
        bak = self.path.with_name(self.path.name + ".bak")
        old = None
        try:
            old = parse_state(bak.read_bytes()) if bak.exists() else None
        except OSError as err:
            log.error("state copy %s cannot be read (%s)", bak, err.strerror)
        kv: dict[str, Any] = {}
        if old is not None:
            if isinstance(old.get(NONCE_TABLE), dict):
                salvaged[NONCE_TABLE] = old[NONCE_TABLE]
            if isinstance(old.get(KV_TABLE), dict):
                kv = {doc_id: doc for doc_id, doc in old[KV_TABLE].items()
                      if isinstance(doc, dict) and doc.get("key") != ALARM_KEY}
        self.recovered = bool(kv)
        if self.recovered:
            log.error("state file %s was corrupt (%d bytes); moved to %s; recovered %d record(s) and %d used "
                      "nonce(s) from the last good copy %s", self.path, len(raw), dest.name, len(kv),
                      len(salvaged.get(NONCE_TABLE, {})), bak.name)
        else:
            log.error("state file %s was corrupt (%d bytes); moved to %s; the gate stays unprovisioned "
                      "until it is provisioned again (%d used nonce(s) kept from the last good copy)",
                      self.path, len(raw), dest.name, len(salvaged.get(NONCE_TABLE, {})))
        if kv:
            # recovered: the alarm is raised for this start (``recovered``), not kept in the state
            salvaged[KV_TABLE] = kv
        else:
            alarm = {"state_corrupt": dest.name, "bytes": len(raw)}
            salvaged[KV_TABLE] = {"1": {"key": ALARM_KEY, "value": alarm}}
        return salvaged

    def _storage_or_fail(self) -> AtomicJSONStorage:
        assert self._storage is not None
        return self._storage

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make every change inside the block one atomic write (or none if it raises)."""
        with self.lock, self._storage_or_fail().batch():
            yield

    def get(self, key: str) -> Any:
        """Return the value stored under key, or None."""
        with self.lock:
            doc = self._db.table(KV_TABLE).get(Query().key == key)
            return copy.deepcopy(doc["value"]) if doc else None

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under key (committed at once unless in a batch).

        Raises:
            StoreError: the state file cannot be written.
        """
        with self.lock:
            self._db.table(KV_TABLE).upsert({"key": key, "value": value}, Query().key == key)

    def delete(self, key: str) -> None:
        """Remove key (no error if absent)."""
        with self.lock:
            self._db.table(KV_TABLE).remove(Query().key == key)

    def nonce_used(self, nonce_hex: str) -> bool:
        """True if this provisioning nonce was already used."""
        with self.lock:
            return self._db.table(NONCE_TABLE).contains(Query().nonce == nonce_hex)

    def add_nonce(self, nonce_hex: str, expires_s: float, now_s: float | None = None) -> None:
        """Record a used nonce until expires_s; nonces past their expiry are pruned.

        Expired nonces can go: their code is refused as expired anyway.
        """
        with self.lock:
            table = self._db.table(NONCE_TABLE)
            if now_s is not None:
                table.remove(Query().expires_s < now_s - 86400.0)
            table.insert({"nonce": nonce_hex, "expires_s": float(expires_s)})

    def alarm(self) -> dict[str, Any] | None:
        """The corrupted-state alarm, kept in the state until cleared (survives restarts)."""
        return self.get(ALARM_KEY)

    def clear_alarm(self) -> None:
        """Clear the corrupted-state alarm (after the gate was provisioned again)."""
        self.quarantined = None
        self.delete(ALARM_KEY)

    def close(self) -> None:
        """Close the database. Safe to call twice."""
        with self.lock:
            self._db.close()
