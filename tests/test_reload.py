"""`reload` (SIGHUP or the signed MQTT command): lists are re-read in place; a changed, valid
config restarts the daemon cleanly (exit 75); an invalid one changes nothing."""

from __future__ import annotations

import threading
import time

import pytest

from firmware.app.builder import EX_RESTART
from firmware.core.device_state import DeviceState
from firmware.core.model import Reason
from tests.field_support import build_app, write_site


@pytest.fixture
def app(tmp_path):
    config, _ = write_site(tmp_path)
    gate = build_app(config)
    gate.stop_event = threading.Event()
    yield gate, config
    gate.close()


def test_reload_reads_list_files_changed_on_disk(app):
    gate, _ = app
    assert not gate.lists.lists.is_denied("P-9")
    gate.lists.store.replace("deny", ["P-9"], updated_s=time.time(), source="test")
    assert not gate.lists.lists.is_denied("P-9")  # on disk only, until a reload
    data, error = gate.monitor.reload()
    assert error is None
    assert gate.lists.lists.is_denied("P-9")
    assert data["lists"]["deny"] >= 1 and data["config"] == "unchanged"
    assert not gate.stop_event.is_set() and gate.exit_status == 0


def test_reload_with_an_invalid_config_changes_nothing_and_says_why(app):
    gate, config = app
    config.write_text(config.read_text().replace("relay_pulse_ms = 100", "relay_pulse_ms = -5"))
    data, error = gate.monitor.reload()
    assert "gpio.relay_pulse_ms = -5 is below the minimum" in error
    assert not gate.stop_event.is_set() and gate.exit_status == 0
    assert "lists" in data  # the other hooks still ran


def test_reload_with_a_changed_valid_config_stops_for_a_clean_restart(app):
    gate, config = app
    config.write_text(config.read_text().replace("relay_pulse_ms = 100", "relay_pulse_ms = 250"))
    data, error = gate.monitor.reload()
    assert error is None and data["config"] == "restarting"
    assert gate.stop_event.is_set() and gate.exit_status == EX_RESTART


def test_a_quarantined_outbox_keeps_the_gate_closed_until_moved_away_and_reloaded(tmp_path):
    config, _ = write_site(tmp_path)
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "outbox.sqlite.corrupt-20261126T000000Z").write_bytes(b"\0" * 4096)
    gate = build_app(config)
    try:
        assert gate.monitor.tick() is DeviceState.STORAGE_ALARM
        assert gate.service.gatekeeper.blocked is Reason.FAIL_CLOSED
        (state / "outbox.sqlite.corrupt-20261126T000000Z").rename(tmp_path / "recovered.sqlite")
        assert gate.monitor.tick() is DeviceState.STORAGE_ALARM  # nothing changes before a reload
        data, error = gate.monitor.reload()
        assert error is None and data["outbox_quarantined"] == []
        assert gate.monitor.tick() is DeviceState.READY
        assert gate.service.gatekeeper.blocked is None
    finally:
        gate.close()
