"""Reading the config file: TOML from disk into the validated ``Config`` (``firmware.core.config``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from firmware.core.config import Config, parse_config
from firmware.core.errors import ConfigError

# A real config is a few KiB; a bigger file is a mistake or hostile.
MAX_CONFIG_BYTES = 1024 * 1024


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
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is {len(raw)} bytes, over the {MAX_CONFIG_BYTES} allowed; "
                          "is it the right file?")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {p} is not valid TOML: {err}") from err
    except RecursionError as err:
        # tomllib recurses once per nesting level: a deeply nested value must still be a config error.
        raise ConfigError(f"config file {p} nests arrays or tables too deeply; "
                          "no setting needs more than a table of lists") from err
    return parse_config(data, str(p.resolve()))
