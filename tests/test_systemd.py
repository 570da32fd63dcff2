"""The systemd unit (systemd-analyze verify), the installer (twice, in a scratch root), safe boot."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device.safe_boot import boot_fragment
from firmware.adapters.config_file import load_config
from firmware.core.config import GpioConfig

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "qrgate.service"
INSTALLER = REPO / "systemd" / "install.sh"


def _unit_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_passes_systemd_analyze_verify_without_any_warning(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing; install it with `sudo apt-get install -y systemd`")
    # verify insists that ExecStart exists: point it at this checkout's qrgate, change nothing else
    exe = Path(sys.executable).with_name("qrgate")
    assert exe.exists(), "the venv has no qrgate script; run `make venv`"
    copy = tmp_path / "qrgate.service"
    copy.write_text(UNIT.read_text().replace("/opt/qrgate/venv/bin/qrgate", str(exe)))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # unknown keys are only warnings with exit 0, so any output is a failure here
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


def test_unit_has_the_documented_settings():
    v = _unit_values()
    expected = {
        "Type": ["notify"], "Restart": ["on-failure"], "RestartPreventExitStatus": ["78"], "User": ["qrgate"],
        "StateDirectory": ["qrgate"], "RuntimeDirectory": ["qrgate"],
        "ConfigurationDirectory": ["qrgate"], "ProtectSystem": ["strict"], "NoNewPrivileges": ["yes"],
        "WorkingDirectory": ["/var/lib/qrgate"], "DevicePolicy": ["closed"], "StartLimitIntervalSec": ["0"],
    }
    for key, value in expected.items():
        assert v.get(key) == value, key
    assert "LG_WD=/run/qrgate" in v["Environment"]
    assert {"char-gpiochip rw", "char-video4linux rw", "char-media rw", "char-dma_heap rw"} <= set(v["DeviceAllow"])
    assert int(v["WatchdogSec"][0]) > 0
    assert "PrivateDevices" not in v  # it would hide the GPIO chip and the camera
    # no hard dependency on the network being up
    assert "network-online.target" not in UNIT.read_text().split("[Service]")[0].replace("#", "")
    assert "Requires" not in v and "BindsTo" not in v


def _install(root: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ROOT": str(root), "QRGATE_SKIP_APT": "1",
           "QRGATE_SKIP_USER": "1", "QRGATE_SKIP_PIP": "1", "QRGATE_PYTHON": sys.executable}
    return subprocess.run(["sh", str(INSTALLER)], capture_output=True, text=True, env=env, timeout=120)


def test_installer_can_run_twice_and_keeps_an_edited_config(tmp_path):
    root = tmp_path / "root"
    first = _install(root)
    assert first.returncode == 0, first.stderr
    venv_cfg = configparser.ConfigParser()
    venv_cfg.read_string("[venv]\n" + (root / "opt/qrgate/venv/pyvenv.cfg").read_text())
    assert venv_cfg["venv"]["include-system-site-packages"] == "true"
    config = root / "etc/qrgate/qrgate.toml"
    text = config.read_text()
    assert "[gpio]" in text and "relay_pin" in text and oct(config.stat().st_mode & 0o777) == "0o640"
    load_config(config)  # the commented template is valid TOML and its defaults a valid config
    assert (root / "etc/systemd/system/qrgate.service").read_text() == UNIT.read_text()
    for sub in ("issuers", "authority", "commands"):
        assert (root / "etc/qrgate" / sub).is_dir()

    config.write_text(text + "\n# edited by the technician\n")
    second = _install(root)
    assert second.returncode == 0, second.stderr
    assert config.read_text().endswith("# edited by the technician\n")
    assert "keeping the existing" in second.stdout
    assert "creating" not in second.stdout and "installing /" not in second.stdout


def _fake_getent(bin_dir: Path, groups: list[str]) -> None:
    """A getent that knows only these groups (the installer asks it which groups exist)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "getent"
    cases = "".join(f'  {g}) echo "{g}:x:99{i}:"; exit 0;;\n' for i, g in enumerate(groups))
    script.write_text(f'#!/bin/sh\n[ "$1" = group ] || exit 2\ncase "$2" in\n{cases}esac\nexit 2\n')
    script.chmod(0o755)


@pytest.mark.parametrize("groups", [[], ["video"], ["gpio", "video"]], ids=["none", "video", "gpio-video"])
def test_unit_and_installer_agree_on_the_groups_that_exist(tmp_path, groups):
    assert "SupplementaryGroups" not in _unit_values(), "the unit names no group that may not exist"
    root = tmp_path / "root"
    _fake_getent(tmp_path / "bin", groups)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "ROOT": str(root), "QRGATE_SKIP_APT": "1",
           "QRGATE_SKIP_USER": "1", "QRGATE_SKIP_PIP": "1", "QRGATE_PYTHON": sys.executable}
    result = subprocess.run(["sh", str(INSTALLER)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    drop_in = (root / "etc/systemd/system/qrgate.service.d/groups.conf").read_text()
    lines = [line for line in drop_in.splitlines() if line.startswith("SupplementaryGroups=")]
    assert lines == ([f"SupplementaryGroups={' '.join(groups)}"] if groups else [])
    # the unit with its drop-in passes systemd-analyze verify
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "install systemd-analyze with `sudo apt-get install -y systemd`"
    exe = Path(sys.executable).with_name("qrgate")
    merged = tmp_path / "qrgate.service"
    merged.write_text(UNIT.read_text().replace("/opt/qrgate/venv/bin/qrgate", str(exe))
                      + "\n" + drop_in.replace("[Service]\n", "[Service]\n", 1))
    verified = subprocess.run([tool, "verify", str(merged)], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
    assert verified.returncode == 0 and verified.stdout.strip() == verified.stderr.strip() == "", verified.stderr


@pytest.mark.parametrize(("active_high", "level"), [(False, "dh"), (True, "dl")])
def test_boot_fragment_holds_the_relay_at_its_off_level(active_high, level):
    gpio = GpioConfig(relay_pin=17, relay_active_high=active_high, green_led_pin=27, red_led_pin=22,
                      buzzer_pin=23, status_led_pin=-1)
    lines = [line for line in boot_fragment(gpio).splitlines() if not line.startswith("#")]
    assert lines == [f"gpio=17=op,{level}", "gpio=27,22,23=op,dl", "dtparam=watchdog=on"]


def test_config_boot_fragment_command_uses_the_configured_pin(tmp_path):
    (tmp_path / "issuers").mkdir()
    config = tmp_path / "qrgate.toml"
    config.write_text('[gpio]\nrelay_pin = "GPIO5"\nrelay_active_high = true\n[camera]\nsource = "dir:."\n')
    out = subprocess.run([sys.executable, "-m", "firmware.cli", "config", "boot-fragment", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "gpio=5=op,dl\n" in out.stdout and "dtparam=watchdog=on\n" in out.stdout


def test_config_check_reports_every_problem_and_exits_78(tmp_path):
    config = tmp_path / "qrgate.toml"
    config.write_text('[gpio]\nrelay_pin = 99\n[camera]\nsource = "dir:nowhere"\n')
    out = subprocess.run([sys.executable, "-m", "firmware.cli", "config", "check", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    assert "gpio.relay_pin = 99" in out.stderr and "camera.source" in out.stderr
