"""The anti-passback store: survives a restart; a damaged file is moved aside (with its WAL) without a crash."""

from __future__ import annotations

import pytest

from firmware.adapters.passback_store import SqlitePassbackStore

NOW = 1_800_000_000.0


def test_passages_survive_a_reopen_and_old_ones_are_dropped(tmp_path):
    store = SqlitePassbackStore(tmp_path / "passback.sqlite", keep_s=3600)
    store.record("k1", "in", NOW - 60)
    store.record("k2", "out", NOW - 7200)
    store.close()
    again = SqlitePassbackStore(tmp_path / "passback.sqlite", keep_s=3600)
    assert again.load(NOW) == {"k1": ("in", NOW - 60)}
    again.forget("k1")
    assert again.load(NOW) == {}
    again.close()


@pytest.mark.parametrize("damage", [b"garbage" * 100, b"\x00" * 4096, b"SQLite format 3\x00" + b"\xff" * 200])
def test_a_damaged_file_is_moved_aside_with_its_wal_and_the_store_starts_empty(tmp_path, damage):
    path = tmp_path / "passback.sqlite"
    path.write_bytes(damage)
    (tmp_path / "passback.sqlite-wal").write_bytes(b"stale wal")
    store = SqlitePassbackStore(path)
    assert store.load(NOW) == {}
    store.record("k1", "in", NOW)
    assert store.load(NOW) == {"k1": ("in", NOW)}
    store.close()
    [aside] = [p for p in tmp_path.glob("passback.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert aside.read_bytes() == damage
    # the stale log went with it (or SQLite dropped it): never beside the fresh file
    wal = tmp_path / "passback.sqlite-wal"
    assert not wal.exists() or b"stale wal" not in wal.read_bytes()
