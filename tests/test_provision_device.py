"""`qrgate provision device`: config written or updated, changes shown, bad input refused."""

from __future__ import annotations

import json
import tomllib

import pytest

from firmware.adapters.config_file import load_config
from firmware.adapters.state_store import StateStore
from firmware.cli import main
from firmware.features.provisioning import PROVISIONING_KEY
from provisioning.device_config import list_profiles, load_profile

VENUE = {"schema": "qrgate.venue/1", "venue_id": "v-0123456789ab", "name": "Bến xe Nước Ngầm"}


@pytest.fixture
def venue(tmp_path):
    path = tmp_path / "venue.json"
    path.write_text(json.dumps(VENUE, ensure_ascii=False), encoding="utf-8")
    return path


def test_every_shipped_profile_is_a_valid_distinct_pin_set():
    names = [name for name, _ in list_profiles()]
    assert "qrgate-default" in names and "waveshare-rpi-relay-board" in names
    for name in names:
        gpio = load_profile(name)
        pins = [v for k, v in gpio.items() if k.endswith("_pin") and v != -1]
        assert len(pins) == len(set(pins)), name
        assert all(0 <= p <= 27 for p in pins), name


def test_new_config_is_written_with_the_venue_and_profile_and_changes_are_listed(tmp_path, venue, capsys):
    config = tmp_path / "etc" / "qrgate.toml"
    rc = main(["provision", "device", "--config", str(config), "--device-id", "bxnn-gate-1", "--venue", str(venue),
               "--direction", "out", "--broker", "mqtt.lan:8883", "--pins", "waveshare-rpi-relay-board"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert "device.venue_id: (unset) -> 'v-0123456789ab'" in out
    assert "gpio.relay_pin: (unset) -> 26" in out
    cfg = load_config(config)
    assert (cfg.device.venue_id, cfg.gpio.relay_pin, cfg.mqtt.port) == ("v-0123456789ab", 26, 8883)
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    assert data["device"] == {"id": "bxnn-gate-1", "direction": "out", "venue_id": "v-0123456789ab"}
    assert data["mqtt"] == {"host": "mqtt.lan", "port": 8883}
    assert data["gpio"]["relay_pin"] == 26 and data["gpio"]["relay_active_high"] is False


def test_update_keeps_other_settings_and_reports_only_what_changed(tmp_path, venue, capsys):
    config = tmp_path / "qrgate.toml"
    config.write_text('[device]\nid = "g1"\ndirection = "in"\nstate_dir = "/var/lib/qrgate"\n'
                      '[policy]\nrepeat_window_s = 3.0\n')
    assert main(["provision", "device", "--config", str(config), "--device-id", "g1", "--venue", str(venue),
                 "--direction", "in"]) == 0
    assert capsys.readouterr().out.splitlines() == ["device.venue_id: (unset) -> 'v-0123456789ab'"]
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    assert data["policy"] == {"repeat_window_s": 3.0}
    assert data["device"]["state_dir"] == "/var/lib/qrgate"
    assert main(["provision", "device", "--config", str(config), "--device-id", "g1", "--venue", str(venue),
                 "--direction", "in"]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_two_roles_on_one_pin_and_an_unknown_venue_are_refused_together(tmp_path, capsys):
    config = tmp_path / "qrgate.toml"
    config.write_text('[gpio]\nfire_alarm_pin = 26\n')
    before = config.read_text()
    rc = main(["provision", "device", "--config", str(config), "--device-id", "g1",
               "--venue", str(tmp_path / "missing.json"), "--direction", "in",
               "--pins", "waveshare-rpi-relay-board"])
    assert rc == 78
    err = capsys.readouterr().err
    assert "missing.json does not exist" in err
    assert "26 is also used by gpio.fire_alarm_pin" in err or "is also used by gpio.relay_pin" in err
    assert config.read_text() == before, "nothing is written when anything is wrong"


def test_unknown_profile_lists_the_shipped_ones(tmp_path, venue, capsys):
    rc = main(["provision", "device", "--config", str(tmp_path / "c.toml"), "--device-id", "g1", "--venue",
               str(venue), "--direction", "in", "--pins", "acme-hat"])
    assert rc == 78
    assert "qrgate-default" in capsys.readouterr().err
    assert not (tmp_path / "c.toml").exists()


def test_a_qr_provisioning_record_in_the_state_follows_the_new_venue(tmp_path, venue, capsys):
    state_dir = tmp_path / "state"
    config = tmp_path / "qrgate.toml"
    config.write_text(f'[device]\nid = "g1"\nstate_dir = "{state_dir}"\n')
    store = StateStore(state_dir / "state.json")
    store.put(PROVISIONING_KEY, {"venue_id": "v-aaaaaaaaaaaa", "venue_name": "Old", "direction": "in",
                                 "broker": "", "issuer_keys_der_hex": [], "nonce": "00"})
    store.close()
    assert main(["provision", "device", "--config", str(config), "--device-id", "g1", "--venue", str(venue),
                 "--direction", "out"]) == 0
    assert "state provisioning record: venue v-aaaaaaaaaaaa -> v-0123456789ab" in capsys.readouterr().out
    record = StateStore(state_dir / "state.json").get(PROVISIONING_KEY)
    assert (record["venue_id"], record["direction"], record["venue_name"]) == ("v-0123456789ab", "out",
                                                                              "Bến xe Nước Ngầm")


def test_refuses_to_change_the_state_of_a_running_daemon(tmp_path, venue, capsys):
    from firmware.adapters.process import hold_state_lock

    state_dir = tmp_path / "state"
    config = tmp_path / "qrgate.toml"
    config.write_text(f'[device]\nid = "g1"\nstate_dir = "{state_dir}"\n')
    StateStore(state_dir / "state.json").put(PROVISIONING_KEY, {"venue_id": "v-aaaaaaaaaaaa", "direction": "in"})
    lock = hold_state_lock(state_dir)
    try:
        rc = main(["provision", "device", "--config", str(config), "--device-id", "g1", "--venue", str(venue),
                   "--direction", "out"])
    finally:
        lock.close()
    assert rc == 1
    assert "daemon is running" in capsys.readouterr().err
    assert "venue_id" not in tomllib.loads(config.read_text()).get("device", {})


def test_a_second_gate_on_one_machine_gets_its_own_runtime_dir(tmp_path, capsys):
    config = tmp_path / "gate-2.toml"
    assert main(["provision", "device", "--config", str(config), "--device-id", "gate-2", "--state-dir",
                 "state-2"]) == 0
    assert "device.runtime_dir stays /run/qrgate" in capsys.readouterr().err
    assert main(["provision", "device", "--config", str(config), "--device-id", "gate-2", "--state-dir",
                 "state-2", "--runtime-dir", "run-2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["device.runtime_dir: (unset) -> 'run-2'"]
    assert "runtime_dir stays" not in captured.err
    assert load_config(config).resolve(load_config(config).device.runtime_dir, "run") == tmp_path / "run-2"
