"""The house tooling as tests: ruff over the tree, mypy --strict over the pure core and the ports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The pure core, the ports, the features and the composition root (HOUSE_STYLE section 1).
STRICT_TYPED = [
    "firmware/core", "firmware/ports.py", "firmware/alarms.py", "firmware/features", "firmware/app",
    "firmware/adapters/atomic_files.py",
    # the back office's pure parts: its config, the one-time code rules, the SMS port, the .mo compiler
    "backoffice/config.py", "backoffice/people/otp.py", "backoffice/sms.py", "backoffice/locale_compile.py",
]


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} is missing from the venv; run `make test` (it installs '.[test]')"
    return str(path)


def test_ruff_finds_nothing():
    result = subprocess.run([tool("ruff"), "check", "--output-format", "concise", "firmware", "device",
                             "provisioning", "backoffice", "tests"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_and_ports_pass_mypy_strict(tmp_path):
    result = subprocess.run([tool("mypy"), "--cache-dir", str(tmp_path / "cache"), *STRICT_TYPED], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
