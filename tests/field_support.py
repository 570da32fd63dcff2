"""Test helpers for field operations: a fully built GateApp on mock pins and a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from device.synthetic import write_blank_png
from firmware.app import GateApp
from firmware.config import load_config
from provisioning import keys


def write_site(tmp_path: Path, *, broker: Any = None, prefix: str = "qrgate", gpio: str = "", mqtt_extra: str = "",
               commands_section: str = "", command_key: bool = True) -> tuple[Path, Any]:
    """Write a config (and a trusted command key) under tmp_path. Returns (config path, private key).

    gpio, mqtt_extra and commands_section are extra TOML lines for those sections.
    """
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    write_blank_png(images / "blank.png")
    (tmp_path / "issuers").mkdir(exist_ok=True)
    commands = tmp_path / "commands"
    commands.mkdir(exist_ok=True)
    private = None
    if command_key:
        made = keys.new_keypair(tmp_path / "ops.pem", force=True)
        (commands / "ops.pem").write_bytes(made.public_path.read_bytes())
        private = keys.load_private_key(made.private_path)
    mqtt = ""
    if broker is not None:
        mqtt = f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nprefix = "{prefix}"\n' \
               f'discovery_prefix = "{prefix}_ha"\nkeepalive_s = 10\n{mqtt_extra}\n'
    config = tmp_path / "qrgate.toml"
    config.write_text(f"""
[device]
id = "gate-1"
venue_id = "v-1"
state_dir = "{tmp_path / 'state'}"
runtime_dir = "{tmp_path / 'run'}"
[camera]
source = "dir:{images}"
max_frame_age_s = 60.0
[gpio]
pin_factory = "mock"
relay_active_high = true
relay_pulse_ms = 100
{gpio}
[commands]
{commands_section}
[keys]
issuers_dir = "{tmp_path / 'issuers'}"
command_dir = "{commands}"
{mqtt}
""")
    return config, private


def build_app(config: Path, factory: MockFactory | None = None, **field_options: Any) -> GateApp:
    """Build (not run) a GateApp on mock pins, and start its field ops (READY, monitor)."""
    app = GateApp(load_config(config), pin_factory=factory or MockFactory())
    app.field_options = {"environ": {}, "input_bounce_s": None, **field_options}
    app.build()
    app.field.start()
    return app
