"""The opt-in arm64 check (issue 18): cheap checks only; `sudo make arm64-check` is the real one.

Here: the script parses, `make arm64-check` exists but `make test` does not run it, and the
installer's Raspberry Pi archive handling (`--skip-pi-archive`) on an apt that, like plain
Debian, has no candidate for python3-picamera2 and python3-lgpio, on an arm machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "arm64-check.sh"
INSTALLER = REPO / "systemd" / "install.sh"
PI_ARCHIVE = ("python3-lgpio", "python3-picamera2")


def test_script_parses_and_is_executable():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_make_has_the_target_and_make_test_does_not_run_it():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^arm64-check:\n\tscripts/arm64-check\.sh$", makefile, re.M)
    test_rule = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert test_rule is not None and "arm64" not in test_rule.group(0)


def _debian_arm64_tools(tmp_path: Path) -> Path:
    """A PATH dir where `uname -m` says aarch64 and apt-cache answers like plain Debian:
    nothing for the two Raspberry Pi archive packages, the machine's answer for the rest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_uname, real_apt_cache = shutil.which("uname"), shutil.which("apt-cache")
    (bin_dir / "uname").write_text(f'#!/bin/sh\n[ "$1" = -m ] && {{ echo aarch64; exit 0; }}\nexec {real_uname} "$@"\n')
    pi = "|".join(PI_ARCHIVE)
    fallback = f'exec {real_apt_cache} "$@"' if real_apt_cache else "exit 0"
    (bin_dir / "apt-cache").write_text(f'#!/bin/sh\ncase "$2" in {pi}) exit 0 ;; esac\n{fallback}\n')
    for tool in ("uname", "apt-cache"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def _install(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{_debian_arm64_tools(tmp_path)}:/usr/sbin:/usr/bin:/sbin:/bin", "ROOT": str(tmp_path / "root"),
           "QRGATE_SKIP_USER": "1", "QRGATE_SKIP_PIP": "1", "QRGATE_PYTHON": sys.executable}
    return subprocess.run(["sh", str(INSTALLER), *args], capture_output=True, text=True, env=env, timeout=120)


def test_installer_on_arm_without_the_pi_archive_stops_and_names_the_way_out(tmp_path):
    result = _install(tmp_path)
    assert result.returncode == 1
    assert "python3-lgpio python3-picamera2: no apt candidate" in result.stderr
    assert "--skip-pi-archive" in result.stderr and "Raspberry Pi OS" in result.stderr
    assert not (tmp_path / "root" / "etc" / "qrgate").exists()  # stopped before writing anything


def test_installer_with_skip_pi_archive_says_what_it_skipped_and_installs_the_rest(tmp_path):
    result = _install(tmp_path, "--skip-pi-archive")
    assert result.returncode == 0, result.stderr
    for pkg in PI_ARCHIVE:
        assert f"skipping {pkg}: no apt candidate (apt-cache policy), it comes from the Raspberry Pi archive" \
            in result.stdout
    assert "no camera (picamera2) and no lgpio pins" in result.stdout
    root = tmp_path / "root"
    assert "include-system-site-packages = true" in (root / "opt/qrgate/venv/pyvenv.cfg").read_text()
    assert (root / "etc/qrgate/qrgate.toml").is_file()
    assert (root / "etc/systemd/system/qrgate.service").read_bytes() == (REPO / "systemd/qrgate.service").read_bytes()
