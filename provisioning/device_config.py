"""`qrgate provision device`: write or update a gate's TOML config (and its state) for a venue.

The config keeps every setting it already had; the command sets ``device.id``,
``device.venue_id``, ``device.direction``, optionally ``mqtt.host``/``mqtt.port``,
``camera.source``, ``device.state_dir``, ``device.runtime_dir`` and the ``[gpio]`` pins
of a pin profile. The result is validated with the same schema as
the daemon (``firmware.core.config.parse_config``): every problem, such as two roles on one
pin, is reported at once and nothing is written.

Pin profiles are data files: ``device/profiles/<name>.toml`` with a ``[profile]``
table (name, description, check_on_hardware) and a ``[gpio]`` table, or any such file
given by path.

The gate's state (``<state_dir>/state.json``) may hold a provisioning record from a
provisioning QR, which overrides the config's venue. The command updates that record
to the new venue too, so the two never disagree; it refuses while the daemon runs.

Without a venue (``venue_path=None``) the config's venue is kept; a new config has none, so
the gate starts unprovisioned and a provisioning QR brings the venue, direction, broker and
issuer keys. ``for_qr`` (``--for-qr``) removes a venue the config had, for the same end.
"""

from __future__ import annotations

import logging
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import device as _device_pkg  # only for the location of its data files
from firmware.core.config import parse_config
from firmware.core.errors import ConfigError

log = logging.getLogger(__name__)

PROFILES_DIR = Path(_device_pkg.__file__).resolve().parent / "profiles"


@dataclass
class DeviceResult:
    """What ``provision_device`` changed (``section.key: old -> new`` lines)."""

    changes: list[str] = field(default_factory=list)
    config_path: Path | None = None
    waits_for_qr: bool = False  # the config has no venue: the gate starts unprovisioned
    warnings: list[str] = field(default_factory=list)


def list_profiles(directory: Path = PROFILES_DIR) -> list[tuple[str, str]]:
    """(name, description) of every shipped pin profile, sorted by name."""
    out = []
    for p in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
            out.append((p.stem, str(data.get("profile", {}).get("description", ""))))
        except (OSError, tomllib.TOMLDecodeError) as err:
            out.append((p.stem, f"(unreadable: {err})"))
    return out


def load_profile(name_or_path: str, directory: Path = PROFILES_DIR) -> dict[str, Any]:
    """The ``[gpio]`` settings of a pin profile (a shipped name or a TOML file path).

    Raises:
        ConfigError: unknown profile, unreadable file, or no ``[gpio]`` table.
    """
    p = Path(name_or_path)
    if not p.suffix:
        p = directory / f"{name_or_path}.toml"
    if not p.is_file():
        names = ", ".join(n for n, _ in list_profiles(directory))
        raise ConfigError(f"--pins {name_or_path!r} is not a pin profile; use one of: {names} "
                          "(`qrgate provision pins`) or a TOML file with a [gpio] table")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"pin profile {p} cannot be read ({err})") from err
    gpio = data.get("gpio")
    if not isinstance(gpio, dict) or not gpio:
        raise ConfigError(f"pin profile {p} has no [gpio] table")
    return dict(gpio)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    raise ConfigError(f"cannot write {value!r} to the config; only strings, numbers and booleans are used")


def render(data: dict[str, dict[str, Any]]) -> str:
    """TOML text of a two-level config document (sections of scalar settings)."""
    lines = ["# qrgate configuration, written by `qrgate provision device` (settings not shown keep",
             "# their defaults; see `qrgate config template`).", ""]
    for section, values in data.items():
        if not values:
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _diff(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for section, values in new.items():
        for key, value in values.items():
            before = old.get(section, {}).get(key)
            if before != value:
                out.append(f"{section}.{key}: {'(unset)' if before is None else repr(before)} -> {value!r}")
    return out


def provision_device(*, config_path: str | Path, device_id: str, venue_path: str | Path | None,
                     direction: str | None,
                     broker: str | None = None, pins: str | None = None, camera: str | None = None,
                     venue_secret: str | Path | None = None, state_dir: str | None = None,
                     runtime_dir: str | None = None, for_qr: bool = False, dry_run: bool = False,
                     now_s: float | None = None) -> DeviceResult:
    """Write or update a gate's config for a venue; see the module docstring.

    Raises:
        ConfigError: every problem at once (unknown venue, bad broker, bad id, pin clash,
            an unreadable existing config); nothing is written then.
        StoreError: the daemon runs on the state directory, or the state cannot be written.
    """
    from firmware.core.prov_code import parse_broker
    from provisioning.venues import load_venue

    path = Path(config_path)
    problems: list[str] = []
    old: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            old = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"--config {path} exists but is not valid TOML ({err}); fix or move it") from err
    data = {section: dict(values) for section, values in old.items() if isinstance(values, dict)}
    record: dict[str, Any] | None = None
    if venue_path is not None:
        try:
            record = load_venue(venue_path)
        except ConfigError as err:
            problems.extend(err.problems)
        if direction is None:
            problems.append("--direction in|out is required with --venue")
        if for_qr:
            problems.append("--for-qr prepares a gate for a provisioning QR: leave --venue out")
    device = data.setdefault("device", {})
    device["id"] = device_id
    if state_dir is not None:
        device["state_dir"] = state_dir
    if runtime_dir is not None:
        device["runtime_dir"] = runtime_dir
    if direction is not None:
        device["direction"] = direction
    if record is not None:
        device["venue_id"] = record["venue_id"]
    elif for_qr:
        device.pop("venue_id", None)  # prepared for QR provisioning: the code brings the venue
    if broker is not None:
        parsed = parse_broker(broker) if broker else None
        if broker and parsed is None:
            problems.append(f"--broker {broker!r} is not host:port, e.g. mqtt.example.lan:8883")
        elif parsed is not None:
            mqtt = data.setdefault("mqtt", {})
            mqtt["host"], mqtt["port"] = parsed
    if camera is not None:
        data.setdefault("camera", {})["source"] = camera
    if pins:
        try:
            data.setdefault("gpio", {}).update(load_profile(pins))
        except ConfigError as err:
            problems.extend(err.problems)
    try:
        cfg = parse_config(data, str(path.resolve()))
    except ConfigError as err:
        problems.extend(err.problems)
        cfg = None
    if problems:
        raise ConfigError(problems)
    assert cfg is not None
    result = DeviceResult(changes=_diff(old, data), config_path=path, waits_for_qr=not device.get("venue_id"))
    if state_dir is not None and "runtime_dir" not in device:
        result.warnings.append(f"device.runtime_dir stays {cfg.device.runtime_dir}: a second gate on this "
                               "machine needs its own (--runtime-dir DIR), or `qrgate status` mixes them up")
    if "venue_id" in old.get("device", {}) and "venue_id" not in device:
        result.changes.append(f"device.venue_id: {old['device']['venue_id']!r} -> (unset: waits for a QR)")
    if dry_run:
        return result
    from firmware.adapters.atomic_files import write_atomic

    _install_venue_secret(cfg, venue_secret, venue_path, record, result)
    if record is not None:
        _update_state(cfg, record, broker or "", now_s if now_s is not None else time.time(), result)
    if result.changes:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, render(data).encode("utf-8"), mode=0o644)
    return result


def _install_venue_secret(cfg: Any, given: str | Path | None, venue_path: str | Path | None,
                          record: dict[str, Any] | None, result: DeviceResult) -> None:
    """Install the venue's HMAC secret on the gate: the one given, else the one beside the record."""
    from provisioning.venue_secret import install_secret, secret_path

    source = Path(given) if given else None
    if source is None and record is not None and venue_path is not None:
        beside = secret_path(record["venue_id"], Path(venue_path).parent)
        source = beside if beside.exists() else None
    if source is None:
        if record is not None and cfg.privacy.subject == "hmac":
            result.warnings.append(f"no venue secret beside {venue_path}; this gate makes its own, so its "
                                   "subjects differ from the venue's other gates (give --venue-secret)")
        return
    dest = cfg.resolve(cfg.privacy.hmac_secret_file, str(cfg.state_dir / "venue-secret"))
    if install_secret(source, dest):
        result.changes.append(f"privacy venue secret: installed {source.name} as {dest} (0600)")


def _update_state(cfg: Any, record: dict[str, Any], broker: str, now_s: float, result: DeviceResult) -> None:
    """Keep a provisioning record in the gate's state in line with the new config."""
    from firmware.adapters.process import state_dir_in_use
    from firmware.adapters.state_store import StateStore
    from firmware.core.errors import StoreError
    from firmware.features.provisioning import PROVISIONING_KEY

    state_file = cfg.state_dir / "state.json"
    if not state_file.exists():
        return
    if state_dir_in_use(cfg.state_dir):
        raise StoreError(f"the qrgate daemon is running on {cfg.state_dir}; stop it (`sudo systemctl stop "
                         "qrgate`) before changing its venue, or show it a provisioning QR instead")
    store = StateStore(state_file)
    try:
        current = store.get(PROVISIONING_KEY)
        if not current:
            return
        wanted = dict(current, venue_id=record["venue_id"], venue_name=record["name"],
                      direction=cfg.device.direction, device_id=cfg.device.id, source="provision device",
                      applied_at_s=now_s)
        if broker:
            wanted["broker"] = broker
        if {k: v for k, v in wanted.items() if k != "applied_at_s"} != \
                {k: v for k, v in current.items() if k != "applied_at_s"}:
            store.put(PROVISIONING_KEY, wanted)
            result.changes.append(f"state provisioning record: venue {current.get('venue_id')} -> "
                                  f"{record['venue_id']}, direction {current.get('direction')} -> "
                                  f"{cfg.device.direction}")
    finally:
        store.close()
