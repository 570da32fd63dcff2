"""Adapters for local event storage: the venue secret and the JSON-lines event log.

``JsonlEventLog`` is the simplest durable ``EventSink``: one JSON line per event,
fsynced before ``append`` returns, with ``seq`` recovered from the file at start.
The MQTT outbox (``firmware.outbox``) is the production sink.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

from firmware.errors import StoreError
from firmware.events import new_event_id
from firmware.model import ScanEvent

log = logging.getLogger(__name__)


def load_or_create_secret(path: Path) -> bytes:
    """Read the per-venue HMAC secret, creating a random one (mode 0600) if missing.

    Raises:
        StoreError: the file cannot be read or created.
    """
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        raise StoreError(f"venue secret {path} is unreadable ({err}); fix or delete it "
                         "(a new one changes every hashed subject)") from err
    secret = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except FileExistsError:
        return load_or_create_secret(path)
    except OSError as err:
        raise StoreError(f"cannot create venue secret {path} ({err.strerror}); check that the "
                         "state directory is writable") from err
    return secret


class JsonlEventLog:
    """EventSink writing one JSON line per event to ``events.jsonl``, fsynced per append.

    ``seq`` continues from the last complete line; a torn last line (crash mid-write)
    is ignored and overwritten. Thread-safe only for one writer (the scan loop).

    Args:
        path: the events file.
        random_bytes: source of randomness for event ids (``os.urandom``).
        wall: wall clock for event ids.
    """

    def __init__(self, path: Path, random_bytes=os.urandom, wall=time.time) -> None:
        self.path = path
        self._random = random_bytes
        self._wall = wall
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._seq, good_len = self._recover()
            self._fh = open(path, "ab")
            if good_len is not None:
                self._fh.truncate(good_len)
        except OSError as err:
            raise StoreError(f"cannot open events file {path} ({err.strerror}); check the state directory") from err

    def _recover(self) -> tuple[int, int | None]:
        if not self.path.exists():
            return 0, None
        data = self.path.read_bytes()
        last_seq, good_len = 0, 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                last_seq = max(last_seq, int(json.loads(line)["seq"]))
            except (ValueError, KeyError, TypeError):
                log.warning("skipping an unreadable line in %s", self.path)
            good_len += len(line)
        return last_seq, (good_len if good_len != len(data) else None)

    def append(self, event: ScanEvent) -> ScanEvent:
        """Store the event (fsync) and return it with event_id and seq."""
        stored = replace(event, seq=self._seq + 1,
                         event_id=event.event_id or new_event_id(self._wall(), self._random(10)))
        line = json.dumps(stored.to_json_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self._fh.write(line.encode("utf-8"))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as err:
            raise StoreError(f"cannot write events file {self.path} ({err.strerror})") from err
        self._seq += 1
        return stored

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
