"""The per-venue HMAC secret: created once, 0600, reused; a damaged file is an error, never silently replaced."""

from __future__ import annotations

import os
import stat

import pytest

from firmware.errors import StoreError
from firmware.venue_secret import load_or_create_secret


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


def test_a_damaged_secret_is_an_error_not_a_new_secret(tmp_path):
    path = tmp_path / "venue-secret"
    path.write_text("not hex\n")
    with pytest.raises(StoreError, match="unreadable"):
        load_or_create_secret(path)
    assert path.read_text() == "not hex\n"
