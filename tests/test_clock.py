"""The system clock's guard: a wall clock below its high-water mark, or unsynced when required, is untrusted."""

from __future__ import annotations

import time

from firmware.adapters.clock import SystemClock


def test_wall_clock_below_the_saved_high_water_mark_is_not_trusted(tmp_path):
    mark = tmp_path / "hw"
    mark.write_text(f"{time.time() + 3600:.3f}\n")  # the last run saw a time an hour ahead of now
    assert SystemClock(mark).wall_trusted() is False


def test_wall_clock_at_or_above_the_mark_is_trusted_and_raises_the_mark(tmp_path):
    mark = tmp_path / "hw"
    mark.write_text("1000.0\n")
    clock = SystemClock(mark)
    assert clock.wall_trusted() is True
    clock.save()
    assert float(mark.read_text()) >= time.time() - 60


def test_unreadable_mark_starts_from_zero(tmp_path):
    mark = tmp_path / "hw"
    mark.write_bytes(b"\x00\x00garbage")
    assert SystemClock(mark).wall_trusted() is True


def test_sync_required_waits_for_the_timesync_flag(tmp_path):
    flag = tmp_path / "synchronized"
    clock = SystemClock(tmp_path / "hw", require_synced=True, synced_flag=flag)
    assert clock.wall_trusted() is False
    flag.touch()
    assert clock.wall_trusted() is True
