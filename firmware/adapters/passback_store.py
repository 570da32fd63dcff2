"""SQLite adapter keeping each person's last passage, so anti-passback survives a restart.

Keys are ``policy.subject_key`` hashes, never raw person ids. One small row per person.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from firmware.adapters.atomic_files import move_aside
from firmware.core.errors import StoreError

log = logging.getLogger(__name__)


class SqlitePassbackStore:
    """Last passage per person in ``passback.sqlite`` (WAL, synchronous=NORMAL).

    A crash may lose the last passage or two (NORMAL), which only relaxes anti-passback;
    scan events themselves go to the outbox with full durability.

    Args:
        path: the database file.
        keep_s: passages older than this (wall seconds) are pruned at start.

    Raises:
        StoreError: the file cannot be opened; a corrupt file is moved aside and a new one started.
    """

    def __init__(self, path: Path, keep_s: float = 7 * 86400.0) -> None:
        self.path = path
        self._keep_s = keep_s
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as err:
            try:
                aside = move_aside(path, str(int(time.time())), sidecars=("-wal", "-shm"))
                self._db = self._open(path)
            except (OSError, sqlite3.Error) as again:
                raise StoreError(f"passback store {path} is unreadable ({err}) and cannot be replaced "
                                 f"({again}); move it away by hand") from again
            # anti-passback restarts empty: it can only let a second passage through, never block one
            log.error("passback store %s was unreadable (%s); moved to %s and started empty", path, err, aside.name)
        except OSError as err:
            raise StoreError(f"cannot open passback store {path} ({err}); check the state directory") from err

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS passage (subject_key TEXT PRIMARY KEY, direction TEXT NOT NULL,"
                       " wall_s REAL NOT NULL) WITHOUT ROWID")
            db.execute("SELECT count(*) FROM passage").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def load(self, now_wall_s: float) -> dict[str, tuple[str, float]]:
        """Return {subject_key: (direction, wall_s)}, dropping entries older than keep_s."""
        try:
            self._db.execute("DELETE FROM passage WHERE wall_s < ?", (now_wall_s - self._keep_s,))
            return {k: (d, w) for k, d, w in self._db.execute("SELECT subject_key, direction, wall_s FROM passage")}
        except sqlite3.Error as err:
            raise StoreError(f"cannot read passback store {self.path}: {err}") from err

    def record(self, key: str, direction: str, wall_s: float) -> None:
        """Save one passage. Logs instead of raising: a lost row only relaxes anti-passback."""
        try:
            self._db.execute("INSERT OR REPLACE INTO passage VALUES (?, ?, ?)", (key, direction, wall_s))
        except sqlite3.Error as err:
            log.error("cannot save a passage to %s: %s", self.path, err)

    def forget(self, key: str) -> None:
        """Remove a person's passage (a grant that was not used)."""
        try:
            self._db.execute("DELETE FROM passage WHERE subject_key = ?", (key,))
        except sqlite3.Error as err:
            log.error("cannot remove a passage from %s: %s", self.path, err)

    def close(self) -> None:
        self._db.close()
