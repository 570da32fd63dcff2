"""Test helpers for field operations: a fully built GateApp on mock pins and a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from device.synthetic import write_blank_png
from firmware.adapters.config_file import load_config
from firmware.app.builder import GateApp
from provisioning import keys
from tests.daemon_support import trust_new_key, write_config


def write_site(tmp_path: Path, *, broker: Any = None, prefix: str = "qrgate", gpio: dict | None = None,
               mqtt: dict | None = None, commands: dict | None = None,
               command_key: bool = True) -> tuple[Path, Any]:
    """Write a config (and a trusted command key) under tmp_path. Returns (config path, private key).

    gpio, mqtt and commands are extra keys for those sections (mqtt only with a broker).
    """
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    write_blank_png(images / "blank.png")
    (tmp_path / "issuers").mkdir(exist_ok=True)
    (tmp_path / "commands").mkdir(exist_ok=True)
    private = None
    if command_key:
        made = trust_new_key(tmp_path, "ops", "commands", as_name="ops.pem", force=True)
        private = keys.load_private_key(made.private_path)
    mqtt_section = None
    if broker is not None:
        mqtt_section = {"host": broker.host, "port": broker.port, "prefix": prefix,
                        "discovery_prefix": f"{prefix}_ha", "keepalive_s": 10, **(mqtt or {})}
    config = write_config(tmp_path, device={"id": "gate-1", "venue_id": "v-1"},
                          camera={"max_frame_age_s": 60.0},
                          gpio={"relay_active_high": True, "relay_pulse_ms": 100, **(gpio or {})},
                          commands=commands or {}, keys={"command_dir": tmp_path / "commands"},
                          mqtt=mqtt_section)
    return config, private


def build_app(config: Path, factory: MockFactory | None = None, **options: Any) -> GateApp:
    """Build (not run) a GateApp on mock pins, and start its device monitor (READY, the thread)."""
    app = GateApp(load_config(config), pin_factory=factory or MockFactory(),
                  **{"environ": {}, "input_bounce_s": None, **options})
    app.build()
    app.monitor.start()
    return app
