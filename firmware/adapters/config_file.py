"""Reading the config file: TOML from disk into the validated ``Config`` (``firmware.core.config``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from firmware.core.config import Config, parse_config
from firmware.core.errors import ConfigError


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a TOML config file.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or has invalid settings.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(f"config file {p} does not exist; create it with `qrgate config template "
                          f"> {p}` or pass --config") from err
    except OSError as err:
        raise ConfigError(f"config file {p} cannot be read ({err.strerror}); check its permissions") from err
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {p} is not valid TOML: {err}") from err
    return parse_config(data, str(p.resolve()))
