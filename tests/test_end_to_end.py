"""From image files through `qrgate run --exit-at-end` to the events file and whole pin histories."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from device.synthetic import write_blank_png, write_code_png
from firmware.core.credentials import envelope
from provisioning import keys
from tests.daemon_support import qrgate, run_gate, start_gate, trust_new_key, valid_pass, write_config

RELAY, GREEN, RED, BUZZER = "GPIO17", "GPIO27", "GPIO22", "GPIO23"
DENIED_PATTERN = [False] + [True, False] * 3


def site_config(tmp_path: Path, **overrides) -> Path:
    """The end-to-end gate's config; overrides replace whole sections."""
    sections = {
        "device": {"id": "e2e-gate", "venue_id": "v-e2e", "direction": "in"},
        # each scene lasts 1 s, longer than the 0.75 s denial pattern, so patterns never overlap
        "camera": {"fps": 20, "frames_per_image": 20},
        "gpio": {"relay_pulse_ms": 100},
        "policy": {"repeat_window_s": 2.0},
        "privacy": {"subject": "raw"},
    }
    return write_config(tmp_path, **{**sections, **overrides})


@pytest.fixture
def site(tmp_path: Path):
    """A config, a trusted issuer and an images folder."""
    key = trust_new_key(tmp_path, "issuer", "issuers")
    images = tmp_path / "images"
    images.mkdir()
    config = site_config(tmp_path)
    private = keys.load_private_key(key.private_path)
    return tmp_path, config, images, private


def issue(private, sub: str, days: float = 1.0, start_offset_s: float = 0.0) -> str:
    return valid_pass(private, sub, name="NGUYỄN ĐÌNH HÙNG", phone="0966323123", days=days,
                      start_offset_s=start_offset_s)


def run_gate_with_pins(tmp_path: Path, config: Path) -> tuple[subprocess.CompletedProcess, list[dict], dict]:
    pin_log = tmp_path / "pins.json"
    result, printed = run_gate(config, "--pin-log", str(pin_log))
    assert result.returncode == 0, result.stderr
    return result, printed, json.loads(pin_log.read_text())


def test_valid_pass_opens_once_and_everything_is_recorded(site):
    tmp_path, config, images, private = site
    valid = issue(private, "EMP-1")
    message = bytearray(envelope.unwrap("QG1:", valid))
    message[-1] ^= 0x40
    write_code_png(images / "00-valid.png", valid)
    write_blank_png(images / "01-blank.png")
    write_code_png(images / "02-forged.png", envelope.wrap("QG1:", bytes(message)))
    write_code_png(images / "03-expired.png", issue(private, "EMP-2", days=1, start_offset_s=-3 * 86400))
    write_code_png(images / "04-url.png", "https://example.com")

    result, printed, pins = run_gate_with_pins(tmp_path, config)

    from firmware.adapters.outbox import read_events

    stored = read_events(tmp_path / "state" / "outbox.sqlite")
    assert printed == stored
    assert [(e["decision"], e["reason"], e["subject"]) for e in stored] == [
        ("granted", "ok", "EMP-1"),
        ("denied", "bad_signature", None),
        ("denied", "expired", "EMP-2"),
        ("denied", "unknown_format", None),
    ]
    assert [e["seq"] for e in stored] == [1, 2, 3, 4]
    assert len({e["event_id"] for e in stored}) == 4
    for event in stored:
        assert event["device_id"] == "e2e-gate" and event["venue_id"] == "v-e2e" and event["direction"] == "in"
        assert event["ts"].endswith("Z") and event["code"] is None
    assert stored[0]["display"] == "NGUYỄN ĐÌNH *** 0966 323 ***"
    # active-low relay: driven off (HIGH) at start, one pulse, released, and off again at shutdown
    assert pins[RELAY] == [False, True, False, True]
    assert pins[GREEN] == [False, True, False]
    assert pins[RED] == [False] + [True, False] * 9
    assert pins[BUZZER] == [False, True, False] + [True, False] * 9
    assert stored[0]["latency_ms"] < 1000
    # no raw credential in the logs
    assert valid not in result.stderr and "EMP-1" not in result.stderr


def test_restart_continues_seq_and_keeps_anti_passback(site):
    tmp_path, config, images, private = site
    site_config(tmp_path, policy={"repeat_window_s": 2.0, "passback": "hard"})
    write_code_png(images / "00.png", issue(private, "EMP-7"))
    _, first, _ = run_gate_with_pins(tmp_path, config)
    assert [(e["decision"], e["reason"], e["seq"]) for e in first] == [("granted", "ok", 1)]
    # a second entry by the same person without an exit, after a restart: passback
    (images / "00.png").unlink()
    write_code_png(images / "01.png", issue(private, "EMP-7"))
    _, second, pins = run_gate_with_pins(tmp_path, config)
    assert [(e["decision"], e["reason"], e["seq"]) for e in second] == [("denied", "passback", 2)]
    assert pins[RELAY] == [False, True]


def test_broken_config_reports_every_problem_and_exits_78(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("""
[device]
id = "Gate 1"
direction = "sideways"
[gpio]
relay_pin = 27
green_led_pin = 27
relay_pulse_ms = "long"
[camera]
source = "dir:/nonexistent/folder"
[colour]
x = 1
""")
    result = qrgate("run", "--config", str(config))
    assert result.returncode == 78
    for needle in ("device.id", "device.direction = 'sideways'", "gpio.green_led_pin 27 is also used by gpio.relay_pin",
                   "gpio.relay_pulse_ms = 'long'", "/nonexistent/folder", "[colour] is not a known section"):
        assert needle in result.stderr, needle


def test_missing_config_file_says_how_to_make_one(tmp_path):
    result = qrgate("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 78
    assert "does not exist" in result.stderr and "qrgate config template" in result.stderr


def test_config_that_is_not_toml_is_a_config_error(tmp_path):
    config = tmp_path / "x.toml"
    config.write_bytes(b"\x00\xff[device\n")
    result = qrgate("run", "--config", str(config))
    assert result.returncode == 78


def test_demo_runs_end_to_end():
    result = qrgate("demo", "--no-color", "--fps", "30", timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if " granted, " in line]
    assert summary and summary[0].startswith("3 granted, 6 denied, 3 relay pulse(s), 9 events recorded"), summary
    for needle in ("valid pass", "GRANTED", "expired", "bad_signature", "unknown_format",
                   "NGUYỄN ĐÌNH *** 0966 323 ***", "relay ENERGISED", "HC1 COVID, vaccinated",
                   "Đỗ Thị *** 1988", "accept_unsigned_id = true"):
        assert needle in result.stdout


def test_sigterm_mid_pulse_releases_the_relay_first_and_exits_cleanly(site):
    tmp_path, config, images, private = site
    site_config(tmp_path, gpio={"relay_pulse_ms": 30000})
    write_code_png(images / "00.png", issue(private, "EMP-9"))
    pin_log = tmp_path / "pins.json"
    proc = start_gate(config, "--print-events", "--pin-log", str(pin_log), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())  # blocks until the grant is committed and printed
        assert first["decision"] == "granted"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        # released at once, not after the 30 s pulse
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert json.loads(pin_log.read_text())[RELAY] == [False, True, False, True]
