"""Test helpers for a gate site on disk and the `qrgate` command as a child process.

``write_config`` writes ``<tmp>/qrgate.toml`` from keyword overrides over a minimal gate
(state and runtime dirs under tmp, ``dir:`` replay of ``<tmp>/images``, mock GPIO,
issuers in ``<tmp>/issuers``); it writes only the file, never the folders, so a test
decides which of them exist. ``trust_new_key`` makes a key pair and trusts its public
half in a folder; ``valid_pass`` and ``write_pass_images`` make passes and scenes of them.
``qrgate``, ``run_gate`` and ``start_gate`` run the real CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from provisioning import keys, passes


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
    raise TypeError(f"no TOML form for {value!r} in a test config")


def config_sections(tmp_path: Path, *, images: Path | None = None,
                    **sections: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The config as {section: {key: value}}: the defaults with sections merged over them.

    A key whose value is None is left out; a section given as None is left out whole.
    """
    merged: dict[str, dict[str, Any]] = {
        "device": {"id": "test-gate", "state_dir": tmp_path / "state", "runtime_dir": tmp_path / "run"},
        "camera": {"source": f"dir:{images or tmp_path / 'images'}"},
        "gpio": {"pin_factory": "mock"},
        "keys": {"issuers_dir": tmp_path / "issuers"},
    }
    for name, values in sections.items():
        if values is None:
            merged.pop(name, None)
            continue
        merged[name] = {**merged.get(name, {}), **values}
    return {name: {k: v for k, v in values.items() if v is not None} for name, values in merged.items()}


def write_config(tmp_path: Path, *, images: Path | None = None, **sections: dict[str, Any] | None) -> Path:
    """Write ``tmp_path/qrgate.toml`` (see ``config_sections``) and return its path.

    Example: ``write_config(tmp, device={"id": "g-1"}, mqtt={"host": broker.host, "port": broker.port})``.
    """
    lines: list[str] = []
    for name, values in config_sections(tmp_path, images=images, **sections).items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    config = tmp_path / "qrgate.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


def trust_new_key(tmp_path: Path, key_name: str, folder: str, *, as_name: str | None = None,
                  force: bool = False) -> keys.NewKey:
    """Make ``tmp_path/<key_name>.pem`` and copy its public key into ``tmp_path/<folder>``.

    Args:
        as_name: the file name in folder (default: the public key's own name).
    """
    made = keys.new_keypair(tmp_path / f"{key_name}.pem", force=force)
    trusted = tmp_path / folder
    trusted.mkdir(exist_ok=True)
    (trusted / (as_name or made.public_path.name)).write_bytes(made.public_path.read_bytes())
    return made


def valid_pass(private: Any, sub: str, *, name: str = "NGUYỄN VĂN A", phone: str = "0912345678",
               days: float = 1.0, start_offset_s: float = 0.0) -> str:
    """A signed ``QG1:`` pass for sub, valid for days from now + start_offset_s."""
    start = time.time() + start_offset_s
    return passes.issue(private, sub=sub, name=name, phone=phone, now_s=start,
                        window=passes.validity(start, valid_days=days))


def write_pass_images(folder: Path, private: Any, count: int, *, size: int = 400, name: str = "{i:03d}.png",
                      prefix: str = "EMP") -> Path:
    """Fill folder (created) with count scenes, each a valid pass for ``<prefix>-<i>``."""
    from device.synthetic import write_code_png

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_code_png(folder / name.format(i=i), valid_pass(private, f"{prefix}-{i}", name="NGUYEN VAN A",
                                                             phone="0900000000"),
                       width=size, height=size, seed=i)
    return folder


def qrgate_argv(*args: str) -> list[str]:
    """The command line that runs ``qrgate`` with this interpreter."""
    return [sys.executable, "-m", "firmware.cli", *args]


def qrgate(*args: str, env: dict | None = None, timeout_s: float = 90.0) -> subprocess.CompletedProcess:
    """Run ``qrgate args`` to its end; text output captured."""
    return subprocess.run(qrgate_argv(*args), capture_output=True, text=True, timeout=timeout_s, env=env)


def run_gate(config: Path, *extra: str,
             timeout_s: float = 90.0) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``qrgate run --exit-at-end --print-events`` on config: the result and the printed events."""
    result = qrgate("run", "--config", str(config), "--exit-at-end", "--print-events", *extra,
                    timeout_s=timeout_s)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def start_gate(config: Path, *extra: str, **popen: Any) -> subprocess.Popen:
    """Start ``qrgate run --config config extra...`` in the background; the caller stops it.

    popen: ``subprocess.Popen`` options (stdout and stderr default to DEVNULL).
    """
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(qrgate_argv("run", "--config", str(config), *extra), **popen)
