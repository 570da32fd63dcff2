"""The per-venue HMAC secret: created once, 0600, reused; a damaged file is an error, never silently replaced."""

from __future__ import annotations

import os
import stat

import pytest

from firmware.adapters.venue_secret import load_or_create_secret
from firmware.core.errors import StoreError


def test_secret_is_created_0600_and_reused(tmp_path):
    path = tmp_path / "state" / "venue-secret"
    old_umask = os.umask(0)
    try:
        first = load_or_create_secret(path)
    finally:
        os.umask(old_umask)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first


@pytest.mark.parametrize("content", [b"not hex\n", b"", b"\x00" * 64, b"abcd\n"])
def test_a_damaged_secret_is_moved_aside_replaced_and_reported(tmp_path, content):
    path = tmp_path / "venue-secret"
    path.write_bytes(content)
    alarms = []
    secret = load_or_create_secret(path, on_damaged=alarms.append)
    assert len(secret) == 32 and load_or_create_secret(path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [aside] = tmp_path.glob("venue-secret.corrupt-*")
    assert aside.read_bytes() == content
    assert len(alarms) == 1 and "moved to" in alarms[0]


def test_an_unreadable_secret_is_an_error(tmp_path):
    path = tmp_path / "venue-secret"
    path.mkdir()
    with pytest.raises(StoreError, match="cannot be read"):
        load_or_create_secret(path)
