"""The configuration schema: one TOML file parsed once into frozen dataclasses.

Every field carries a description and an example (``doc`` and ``example`` in its
metadata), so the template, the provisioning tools and the error messages all
come from one place. ``load_config`` collects every problem and raises one
``ConfigError``; the composition root then exits with status 78 (EX_CONFIG).

Sections: [device] [camera] [decoder] [gpio] [policy] [privacy] [keys] [mqtt]
[outbox] [status] [commands] [provisioning] [lists].
"""

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
