"""firmware.adapters.atomic_files: whole-file replacement with an exact mode, and nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from firmware.adapters.atomic_files import fsync_dir, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o027, 0o077, 0o777])
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_mode_is_exact_whatever_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    target = tmp_path / "f.bin"
    write_atomic(target, b"data", mode=mode)
    assert _mode(target) == mode
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("durable", [True, False])
def test_overwrite_replaces_content_and_keeps_the_given_mode(tmp_path, durable):
    target = tmp_path / "secret.pem"
    write_atomic(target, b"first version, longer than the second", mode=0o600, durable=durable)
    inode_before = target.stat().st_ino
    write_atomic(target, b"second", mode=0o600, durable=durable)
    assert target.read_bytes() == b"second"
    assert _mode(target) == 0o600
    assert target.stat().st_ino != inode_before  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.pem"]


def test_overwrite_of_a_looser_file_tightens_it(tmp_path):
    target = tmp_path / "k.pem"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_atomic(target, b"new", mode=0o600)
    assert _mode(target) == 0o600
    assert target.read_bytes() == b"new"


def test_default_mode_is_0644_and_accepts_str_paths(tmp_path, umask):
    umask(0o077)
    write_atomic(str(tmp_path / "status.json"), b"{}")
    assert _mode(tmp_path / "status.json") == 0o644


def test_a_failed_rename_leaves_the_old_state_and_no_temp_file(tmp_path):
    # The target is a directory: the temp file is written, then os.replace fails.
    target = tmp_path / "busy"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")
    fds = _open_fds()
    with pytest.raises(OSError):
        write_atomic(target, b"new", mode=0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    assert (target / "inside").read_bytes() == b"keep"
    assert _open_fds() == fds


def test_parent_that_is_a_file_raises_oserror_and_creates_nothing(tmp_path):
    parent = tmp_path / "plain"
    parent.write_bytes(b"not a directory")
    with pytest.raises(NotADirectoryError):
        write_atomic(parent / "f.json", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
    assert parent.read_bytes() == b"not a directory"


def test_missing_directory_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "absent" / "f.json", b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_stale_temp_file_is_neither_reused_nor_removed(tmp_path):
    # A crashed writer's leftover (world-readable) must not become the new secret file.
    stale = tmp_path / f".key.pem.{os.getpid()}-00000000.tmp"
    stale.write_bytes(b"stale")
    stale.chmod(0o644)
    write_atomic(tmp_path / "key.pem", b"fresh", mode=0o600)
    assert (tmp_path / "key.pem").read_bytes() == b"fresh"
    assert _mode(tmp_path / "key.pem") == 0o600
    assert stale.read_bytes() == b"stale"


def test_fsync_dir_syncs_a_directory_and_raises_for_a_missing_one(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "absent")
