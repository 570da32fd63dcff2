"""What the gate runs with, read from disk: the config file plus the stored provisioning record.

Every tool that takes ``--config`` (``config check``, ``pass check``, ``keys list``) and the
daemon's start line use ``load_effective`` or, in the daemon, the same pure
``firmware.core.effective.effective_config`` with the record its state store holds. The state
file is only read here, never written or moved: a tool may run beside the daemon.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from firmware.adapters.config_file import load_config
from firmware.adapters.state_store import peek_value
from firmware.core.config import Config
from firmware.core.effective import EffectiveConfig, effective_config

STATE_FILE = "state.json"
PROVISIONING_KEY = "provisioning"


def file_keys(path: str | Path) -> frozenset[str]:
    """The ``section.key`` names a TOML config file sets (empty if it cannot be read)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return frozenset()
    return frozenset(f"{section}.{key}" for section, values in data.items() if isinstance(values, dict)
                     for key in values)


def state_file(cfg: Config) -> Path:
    """The gate's state file (``<state_dir>/state.json``)."""
    return cfg.state_dir / STATE_FILE


def effective_from(cfg: Config) -> EffectiveConfig:
    """The effective configuration of a parsed config: its file plus the stored record."""
    record = peek_value(state_file(cfg), PROVISIONING_KEY)
    return effective_config(cfg, record if isinstance(record, dict) else None,
                            file_keys(cfg.path) if cfg.path else ())


def load_effective(config_path: str | Path) -> EffectiveConfig:
    """Read the config file and the gate's stored provisioning record.

    Raises:
        ConfigError: the config file is missing or invalid.
    """
    return effective_from(load_config(config_path))


def source_lines(eff: EffectiveConfig) -> list[str]:
    """One line per reported setting: key, value and where it came from (the record with its file)."""
    where = {"provisioning record": f"provisioning record ({state_file(eff.file_cfg)})",
             "config file": f"config file ({eff.file_cfg.path or '-'})"}
    return [f"  {key:<17} {value:<28} {where.get(source, source)}" for key, value, source in eff.describe()]
