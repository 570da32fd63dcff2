"""The config schema: validation collects every problem; every key is documented."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from firmware.adapters.config_file import load_config
from firmware.core.config import (
    SECTIONS,
    SUBSECTIONS,
    Config,
    ConfigError,
    masked_dump,
    parse_config,
    render_template,
    to_toml,
)


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_defaults_are_valid():
    cfg = parse_config({"camera": {"source": "picamera2"}})
    assert cfg.gpio.relay_active_high is False and cfg.decoder.backend == "zxing"


def test_every_key_has_a_description_and_an_example():
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{name}.{f.name} has no description"
            assert "example" in f.metadata, f"{name}.{f.name} has no example"


def test_template_lists_every_key_and_uncommented_parses():
    template = render_template()
    uncommented = "\n".join(
        line[2:].split("    # example")[0] if line.startswith("# ") else
        ("" if line.startswith("#") else line)
        for line in template.splitlines())
    data = tomllib.loads(uncommented)
    for name, cls in SECTIONS.items():
        assert set(data[name]) == {f.name for f in dataclasses.fields(cls)} | set(SUBSECTIONS.get(name, {}))
        for sub, (_attr, sub_cls) in SUBSECTIONS.get(name, {}).items():
            assert set(data[name][sub]) == {f.name for f in dataclasses.fields(sub_cls)}
    parse_config(data)


def test_to_toml_round_trips():
    cfg = parse_config({"device": {"id": "gate-9", "venue_id": "v-ĐÀ-NẴNG"}, "gpio": {"relay_pin": "GPIO5"}})
    again = parse_config(tomllib.loads(to_toml(cfg)))
    assert dataclasses.replace(again, path="") == dataclasses.replace(cfg, path="")
    assert again.gpio.relay_pin == 5 and again.device.venue_id == "v-ĐÀ-NẴNG"


def test_all_problems_are_reported_at_once_with_key_value_and_fix():
    problems = problems_of({
        "device": {"id": "Gate 1", "direction": "up", "colour": "red"},
        "gpio": {"relay_pin": 40, "green_led_pin": "pin seven", "buzzer_pin": 22, "red_led_pin": 22},
        "policy": {"repeat_window_s": -1, "passback": "maybe", "accept_unsigned_id": "yes"},
        "camera": {"source": "webcam", "fps": "fast"},
        "mqtt": {"prefix": "qrgate/#"},
        "extra": {},
    })
    text = "\n".join(problems)
    for needle in ["device.id = 'Gate 1'", "device.direction = 'up' is not one of 'in', 'out'",
                   "device.colour is not a known setting", "gpio.relay_pin = 40 is not a header GPIO",
                   "gpio.green_led_pin = 'pin seven' is not a pin", "gpio.buzzer_pin 22 is also used by gpio.red_led_pin",
                   "policy.repeat_window_s = -1 is below the minimum", "policy.passback = 'maybe'",
                   "policy.accept_unsigned_id = 'yes' must be true or false", "camera.source = 'webcam'",
                   "camera.fps = 'fast' must be a number", "mqtt.prefix", "[extra] is not a known section"]:
        assert needle in text, needle


def test_venues_is_not_a_device_id():
    assert any("'venues' is reserved" in p for p in problems_of({"device": {"id": "venues"}}))


def test_optional_pins_may_be_minus_one_but_required_ones_not():
    assert parse_config({"gpio": {"fire_alarm_pin": -1, "status_led_pin": -1}}).gpio.fire_alarm_pin == -1
    assert any("gpio.relay_pin = -1" in p for p in problems_of({"gpio": {"relay_pin": -1}}))


def test_missing_tls_files_are_reported_when_a_broker_is_set(tmp_path):
    problems = problems_of({"mqtt": {"host": "broker.lan", "ca_file": str(tmp_path / "ca.pem"),
                                     "cert_file": str(tmp_path / "c.pem")}})
    assert any("mqtt.ca_file" in p for p in problems)
    assert any("cert_file and mqtt.key_file go together" in p for p in problems)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    path = tmp_path / "q.toml"
    path.write_text('[camera]\nsource = "dir:imgs"\n[device]\nstate_dir = "state"\n')
    cfg = load_config(path)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.issuers_dir == tmp_path / "issuers"


def test_masked_dump_hides_secrets():
    cfg = Config()
    cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, password_file="/etc/qrgate/pw"))
    assert masked_dump(cfg)["mqtt"]["password_file"] == "***"
